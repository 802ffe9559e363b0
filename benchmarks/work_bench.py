"""What the product's required work costs alone, against the floor, in one sitting.

``layer_bench.py`` measures what the layers the pipeline keeps cost to write. This script
measures the parts of a run that no layout of the pipeline can drop while it keeps the
contract and the product's libraries, each part alone, with the product's own code, on a
warehouse that ``pipeline_bench.py --keep`` left (or any warehouse holding the batches of
the landing CSV files given):

* ``floor``: DuckDB reading the CSV files and writing one Parquet file (the same query as
  the pipeline bench's floor);
* ``read``: DuckDB reading every column of the same CSV files as text (``min()`` of each, so
  every value is parsed and nothing is written): the files have to be read once;
* ``number facts``: every distinct number string of the batches decided into an empty cache
  as validation decides them (``NumberFactsCache.facts_for_slices``: the vectorised engine a
  slice a core, phonenumbers itself for the numbers it leaves); a cold run has to do this,
  a warm run does not;
* ``pandera rules``: the row rules schema checking every row (``validation.find_row_failures``
  on the parsed rule columns, chunk by chunk as validation runs it); parsing the rows into
  those columns is not counted;
* ``rating``: every accepted call priced (``rating.rate_calls`` over the ``validated`` rows,
  its money columns summed so that every call is priced, nothing written);
* ``cdrs written once``: the day's ``cdrs`` rows written as the pipeline writes them
  (``warehouse.write_rows_atomic``); the output table has to be written.

Their sum is a lower bound of a run of any design that does this work with these libraries on
this machine. It leaves out deduplication, enrichment's join, the marts, the fraud alerts,
publishing, Dagster, and every intermediate layer. The script prints a Markdown table and,
with ``--json FILE``, writes the figures.

    python benchmarks/pipeline_bench.py --rows 10000000 --scenarios cold --keep \\
        --workdir /path/to/work
    python benchmarks/work_bench.py --warehouse /path/to/work/day_10000000/cold/warehouse \\
        --csv /path/to/work/day_10000000/source/day --rates /path/to/work/day_10000000/source/rates
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from layer_bench import bench_arguments, landing_csvs, layer_files
from machine_info import machine
from pipeline_bench import FLOOR_SOURCE, stage_floor, versions

from cdr_assets.lib import ingest, rating, validation
from cdr_assets.lib.numbers import NumberFactsCache, fresh_number_facts
from cdr_assets.lib.settings import Settings
from cdr_assets.lib.warehouse import Warehouse, sql_file_list, step_connection, write_rows_atomic

# The parts a warm run cannot drop, and the one a cold run adds.
WARM_PARTS = ("read", "pandera rules", "rating", "cdrs written once")
COLD_PARTS = ("number facts", *WARM_PARTS)
# Targets of issue 6, as multiples of the floor.
TARGETS = {"warm": 4.0, "cold": 8.0}


def _timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def read_csv_seconds(inputs: list[Path]) -> dict[str, Any]:
    """Every column of the CSV files parsed as text by DuckDB, nothing written."""
    source = FLOOR_SOURCE.format(files=sql_file_list(inputs))
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        names = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        aggregates = ", ".join('min("' + name.replace('"', '""') + '")' for name in names)
        query = f"SELECT count(*), {aggregates} FROM {source}"
        seconds, rows = _timed(lambda: con.execute(query).fetchall())
    return {"seconds": round(seconds, 3), "rows": int(rows[0][0])}


def number_facts_seconds(warehouse: Warehouse, settings: Settings, work: Path) -> dict[str, Any]:
    """Every distinct number string of the raw rows decided afresh into an empty cache in
    ``work``, as validation decides them (``facts_for_slices``: a slice a core), the
    engine's prefix tables built there first (a cold warehouse has them before its first
    batch)."""
    with duckdb.connect() as con:
        numbers = con.sql(
            "SELECT DISTINCT n FROM (SELECT unnest([called_number, caller_number]) AS n "
            f"FROM read_parquet({sql_file_list(layer_files(warehouse, 'raw'))})) "
            "WHERE n IS NOT NULL"
        ).to_arrow_table()["n"]
    cache = NumberFactsCache(work / "number_facts", settings.default_region)
    fresh_number_facts(numbers.slice(0, 1), settings.default_region, cache.tables_dir)
    seconds, facts = _timed(
        lambda: cache.facts_for_slices(numbers, ingest.FACTS_SLICE_NUMBERS, validation.FACT_COLUMNS)
    )
    return {"seconds": round(seconds, 3), "numbers": len(numbers), "facts": facts.num_rows}


def pandera_seconds(warehouse: Warehouse, settings: Settings) -> dict[str, Any]:
    """The rules schema over every raw row, in validation's chunks; only its check is timed."""
    cache = NumberFactsCache(warehouse.number_facts_dir, settings.default_region)
    seconds, rows, refused = 0.0, 0, 0
    for path in layer_files(warehouse, "raw"):
        with step_connection(warehouse, keep_order=False) as con:
            con.execute(f"SET TimeZone = '{settings.source_timezone}'")
            ingest.open_raw_batch(con, path)
            con.register("number_facts", ingest.batch_number_facts(con, cache))
            reader = con.sql(
                f"SELECT {validation.RULES_SELECT} FROM ({validation.RULES_PARSE_SQL})"
            ).to_arrow_reader(validation.RULE_CHUNK_ROWS)
            for batch in reader:
                parsed = pl.DataFrame(pl.from_arrow(batch))
                spent, failures = _timed(
                    lambda parsed=parsed: validation.find_row_failures(
                        parsed, settings.max_duration_seconds
                    )
                )
                seconds += spent
                rows += parsed.height
                refused += failures.height
    return {"seconds": round(seconds, 3), "rows": rows, "refused": refused}


def rating_seconds(warehouse: Warehouse, rates: Path) -> dict[str, Any]:
    """Every validated row priced by the decks of ``rates``, the money summed."""
    decks = rating.load_decks(rates, warehouse.rate_decks_dir)
    with step_connection(warehouse, keep_order=False) as con:
        con.execute(
            "CREATE TEMP VIEW calls AS SELECT * FROM "
            f"read_parquet({sql_file_list(layer_files(warehouse, 'validated'))})"
        )

        def price() -> list[Any]:
            rated = rating.rate_calls(con, "calls", decks, warehouse.rate_decks_dir / decks.version)
            return rated.aggregate(
                "count(*), count(rate_prefix), sum(cost), sum(revenue), sum(margin)"
            ).fetchall()

        seconds, totals = _timed(price)
    return {"seconds": round(seconds, 3), "rows": int(totals[0][0]), "priced": int(totals[0][1])}


def cdrs_write_seconds(warehouse: Warehouse, out: Path) -> dict[str, Any]:
    """The day's cdrs rows written once, as deduplication writes them."""
    query = f"SELECT * FROM read_parquet({sql_file_list(layer_files(warehouse, 'cdrs'))})"
    with step_connection(warehouse, keep_order=False) as con:
        seconds, rows = _timed(lambda: write_rows_atomic(con.sql(query), out))
    out.unlink()
    return {"seconds": round(seconds, 3), "rows": rows}


def report(results: dict[str, Any]) -> str:
    base = results["floor"]["seconds"]
    parts = results["parts"]
    lines = [
        "| part | rows | seconds | x floor |",
        "|---|---:|---:|---:|",
        f"| floor: the CSV files to Parquet | {results['floor']['rows']:,} | {base:.2f} | 1.0 |",
    ]
    for name, part in parts.items():
        rows = part["numbers"] if "numbers" in part else part["rows"]
        lines.append(
            f"| {name} | {rows:,} | {part['seconds']:.2f} | {part['seconds'] / base:.1f} |"
        )
    for run, total in results["sums"].items():
        target = TARGETS[run]
        lines.append(
            f"| **sum, {run} run** (target {target:g}x) | | {total:.2f} | **{total / base:.1f}** |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__.splitlines()[0])
    parser.add_argument("--rates", type=Path, required=True, help="the rates folder of the run")
    args = parser.parse_args(argv)
    warehouse = Warehouse(args.warehouse)
    inputs = landing_csvs(parser, args.csv)
    for layer in ("raw", "validated", "cdrs"):
        if not layer_files(warehouse, layer):
            parser.error(f"no {layer} files in {args.warehouse}")
    settings = Settings.from_env({"CDR_WAREHOUSE_DIR": str(args.warehouse)})
    results: dict[str, Any] = {"machine": machine(), "versions": versions(), "parts": {}}
    parts = results["parts"]
    with tempfile.TemporaryDirectory(prefix="work-bench-") as scratch:
        work = Path(scratch)
        floor = stage_floor(inputs, work / "floor.parquet")
        results["floor"] = {"seconds": round(floor["copy_seconds"], 3), "rows": floor["rows"]}
        parts["read"] = read_csv_seconds(inputs)
        parts["number facts"] = number_facts_seconds(warehouse, settings, work)
        parts["pandera rules"] = pandera_seconds(warehouse, settings)
        parts["rating"] = rating_seconds(warehouse, args.rates)
        parts["cdrs written once"] = cdrs_write_seconds(warehouse, work / "cdrs.parquet")
    results["sums"] = {
        "warm": round(sum(parts[name]["seconds"] for name in WARM_PARTS), 3),
        "cold": round(sum(parts[name]["seconds"] for name in COLD_PARTS), 3),
    }
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
