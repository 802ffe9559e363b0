"""What rewriting each wide layer costs alone, against the floor, in one sitting.

The pipeline persists four row-level layers of a batch as Parquet: ``raw`` (strings as
read), ``validated``, ``rated`` and the day's ``cdrs``; every one of them is read and written
whole by some step. This script takes a warehouse that ``pipeline_bench.py --keep`` left
(or any warehouse holding one batch) and the landing CSV files of that batch, and measures,
one after the other in this process:

* ``floor``: DuckDB reading the CSV files and writing one Parquet file (the same query as
  the pipeline bench's floor);
* for each layer: DuckDB reading the layer's files of the batch on a
  ``step_connection(keep_order=False)`` (the steps' memory limit and unordered rows), and
  the same rows and columns written again twice: as the pipeline writes its layers
  (pyarrow's layer writer, fed by DuckDB's Arrow stream: ``warehouse.write_rows_atomic``)
  and by DuckDB's own ``COPY`` with the warehouse's Parquet options
  (``warehouse.copy_to_parquet_atomic``), for comparison.

Each layer is written once and read at least once by a run of the pipeline, so the sum of
the copies is roughly a lower bound for a run as the pipeline is designed (each step also
computes something); its ratio to the floor says how much of the gap to a target the layers
themselves take. It prints a Markdown table and, with ``--json FILE``,
writes the figures.

    python benchmarks/pipeline_bench.py --rows 10000000 --scenarios cold --keep \\
        --workdir /path/to/work
    python benchmarks/layer_bench.py --warehouse /path/to/work/day_10000000/cold/warehouse \\
        --csv /path/to/work/day_10000000/source/day
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from machine_info import machine
from pipeline_bench import stage_floor, versions

from cdr_assets.lib.warehouse import (
    Warehouse,
    copy_to_parquet_atomic,
    sql_file_list,
    step_connection,
    write_rows_atomic,
)

LAYERS = ("raw", "validated", "rated", "cdrs")


def layer_files(warehouse: Warehouse, layer: str) -> list[Path]:
    """The layer's row files (the raw layer's per-file outcomes are not rows)."""
    return [p for p in warehouse.table_files(layer) if not p.name.endswith(".files.parquet")]


def copy_layer(warehouse: Warehouse, files: list[Path], out: Path) -> dict[str, Any]:
    """Rewrite the files as the pipeline writes a layer, then with DuckDB's COPY."""
    query = f"SELECT * FROM read_parquet({sql_file_list(files)})"
    with step_connection(warehouse, keep_order=False) as con:
        started = time.perf_counter()
        write_rows_atomic(con.sql(query), out)
        seconds = time.perf_counter() - started
    meta = pq.ParquetFile(out).metadata
    result = {
        "seconds": round(seconds, 3),
        "rows": meta.num_rows,
        "columns": meta.num_columns,
        "mib": round(out.stat().st_size / 2**20, 1),
    }
    out.unlink()
    with step_connection(warehouse, keep_order=False) as con:
        started = time.perf_counter()
        copy_to_parquet_atomic(con, query, out)
        result["duckdb_copy_seconds"] = round(time.perf_counter() - started, 3)
    out.unlink()
    return result


def bench_arguments(description: str) -> argparse.ArgumentParser:
    """The options of a script measuring a kept warehouse against its landing CSV files."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--csv", type=Path, required=True, help="folder of the batch's CSVs")
    parser.add_argument("--json", type=Path)
    return parser


def landing_csvs(parser: argparse.ArgumentParser, folder: Path) -> list[Path]:
    inputs = sorted(folder.glob("*.csv"))
    if not inputs:
        parser.error(f"no CSV file in {folder}")
    return inputs


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    warehouse = Warehouse(args.warehouse)
    inputs = landing_csvs(parser, args.csv)
    results: dict[str, Any] = {"machine": machine(), "versions": versions(), "layers": {}}
    with tempfile.TemporaryDirectory(prefix="layer-bench-") as work:
        floor = stage_floor(inputs, Path(work) / "floor.parquet")
        results["floor"] = {"seconds": round(floor["copy_seconds"], 3), "rows": floor["rows"]}
        for layer in LAYERS:
            files = layer_files(warehouse, layer)
            if not files:
                print(f"no {layer} files in {args.warehouse}", file=sys.stderr)
                return 1
            results["layers"][layer] = copy_layer(warehouse, files, Path(work) / "copy.parquet")
    base = results["floor"]["seconds"]
    total = sum(r["seconds"] for r in results["layers"].values())
    copies = sum(r["duckdb_copy_seconds"] for r in results["layers"].values())
    results["layers_total_seconds"] = round(total, 3)
    results["layers_total_duckdb_copy_seconds"] = round(copies, 3)
    lines = [
        "| copy | rows | columns | Parquet MiB | seconds | x floor | DuckDB COPY s | x floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| floor: the CSV files to Parquet | {floor['rows']:,} | | | {base:.2f} | 1.0 | | |",
    ]
    for layer, r in results["layers"].items():
        copy = r["duckdb_copy_seconds"]
        lines.append(
            f"| `{layer}` read and written again | {r['rows']:,} | {r['columns']} | "
            f"{r['mib']:,.0f} | {r['seconds']:.2f} | {r['seconds'] / base:.1f} | "
            f"{copy:.2f} | {copy / base:.1f} |"
        )
    lines.append(
        f"| the four layers together | | | | {total:.2f} | {total / base:.1f} | "
        f"{copies:.2f} | {copies / base:.1f} |"
    )
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
