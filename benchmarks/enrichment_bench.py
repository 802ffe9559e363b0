"""Benchmark of enrichment with a cold and a warm number-facts cache.

Builds N synthetic CDRs (``caller_number``, ``called_number`` in E.164, ``called_country``,
``start_time``) with ``--distinct`` distinct numbers over caller and called together (half of
them callers), as Parquet and as CSV in a temporary directory (timed apart), then measures,
each scenario in a fresh subprocess so that its peak memory is its own:

* ``floor``: DuckDB reading the CSV and writing it as Parquet, the least any stage that
  touches every CDR costs;
* ``cold``: an empty ``NumberFactsCache`` and no prefix tables; the facts validation reads
  of the batch's distinct numbers, ``ingest.batch_number_facts`` as
  ``ingest.validate_batch_files`` calls it (the vectorised engine of
  ``number_tables`` builds phonenumbers' prefix tables and decides every number it can,
  phonenumbers parses the rest one by one, and the facts are appended to the cache: in the
  pipeline, validation's lookup: "look-ups s"); then the enrichment stage as
  ``ingest.enrich_batch`` runs it: the facts of the batch's numbers semi-joined from the
  cache's files and written as the enriched layer ("enrichment stage s"); then what
  deduplication adds when it writes ``cdrs``: the facts joined to every call, written to
  Parquet as the pipeline writes ("join + write s"). The same calls written without the
  join are timed after it: "in the pipeline s" is the stage plus the join's own cost
  (join + write minus that plain write). Building the prefix tables is part of the cold
  figures;
* ``warm``: the same, with the cache (and prefix tables) filled by ``cold``: nothing is
  decided again;
* ``warm-step``: the enrichment stage and the join alone, without validation's look-ups.

Numbers are synthesised from ``phonenumbers.example_number_for_type`` (mobile and fixed line)
of 44 regions, every digit after the first one drawn at random (numpy), and kept when they
match the region's general and type patterns and lengths from phonenumbers' metadata (the
test ``is_valid_number`` makes, evaluated with Arrow's regex kernels); a sample is checked
with ``is_valid_number`` itself and the cold facts give the valid count of all of them.
Callers and called numbers are disjoint pools, each number used at least once.

Peak memory per scenario: the scenario process's VmHWM, the largest process-pool worker's
(``RUSAGE_CHILDREN``), and the peak of the whole process tree's PSS (proportional set size,
so the pages workers share with their parent after ``fork`` count once), sampled every
``--sample-interval`` seconds from the parent process.

It prints a Markdown table (wall seconds, rows/s, numbers/s of the cold parse, ratio to the
floor, peak memory) with the machine and the versions and, with ``--json FILE``, writes the
figures as JSON.

    python benchmarks/enrichment_bench.py                                   # 1M CDRs, 200k numbers
    python benchmarks/enrichment_bench.py --rows 10000000 --distinct 2000000 --json enrich.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from common import SPOT_CHECK, TreeSampler, spot_check, synthesise_numbers
from machine_info import machine

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

CALLER_SHARE = 0.5  # of the distinct numbers, the rest are called numbers
START = np.datetime64("2026-10-01T00:00:00", "s")
DAYS = 30
ROW_GROUP_ROWS = 122_880  # DuckDB's own row group size, so reads run on every core

CSV_COLUMNS = {
    "caller_number": "VARCHAR",
    "called_number": "VARCHAR",
    "called_country": "VARCHAR",
    "start_time": "TIMESTAMPTZ",
}

# Targets of the issue, for 10M CDRs and about 2M distinct numbers.
TARGETS = {"cold_seconds": 60.0, "warm_seconds": 10.0, "peak_mib": 2048.0}

# ------------------------------------------------------------------ synthetic numbers


def _uses(rng: np.random.Generator, pool_size: int, rows: int) -> np.ndarray:
    """Row -> index into a pool: every number at least once, the other rows uniform."""
    index = np.concatenate(
        [np.arange(pool_size), rng.integers(0, pool_size, rows - pool_size)]
    ).astype(np.int64)
    rng.shuffle(index)
    return index


def stage_setup(work: Path, rows: int, distinct: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    callers = int(distinct * CALLER_SHARE)
    caller_pool, called_pool, called_region = synthesise_numbers(rng, callers, distinct - callers)
    invalid = spot_check(rng, pa.concat_arrays([caller_pool, called_pool]))
    if invalid:
        raise SystemExit(f"{invalid} of {SPOT_CHECK} synthesised numbers are not valid")
    numbers_done = time.perf_counter()
    called_index = pa.array(_uses(rng, len(called_pool), rows))
    seconds = rng.integers(0, DAYS * 86_400, rows, dtype=np.int64)
    table = pa.table(
        {
            "caller_number": caller_pool.take(pa.array(_uses(rng, len(caller_pool), rows))),
            "called_number": called_pool.take(called_index),
            "called_country": called_region.take(called_index),
            "start_time": pa.array(START + seconds).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, work / "calls.parquet", row_group_size=ROW_GROUP_ROWS, compression="zstd")
    pacsv.write_csv(table, work / "calls.csv")
    return {
        "numbers_seconds": numbers_done - started,
        "rows_seconds": time.perf_counter() - numbers_done,
        "distinct_numbers": len(caller_pool) + len(called_pool),
        "caller_numbers": len(caller_pool),
        "called_numbers": len(called_pool),
        "spot_checked": min(SPOT_CHECK, distinct),
        "parquet_bytes": (work / "calls.parquet").stat().st_size,
        "csv_bytes": (work / "calls.csv").stat().st_size,
    }


# ------------------------------------------------------------------ scenarios


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _rusage(who: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of this process or of its waited-for children."""
    usage = resource.getrusage(who)
    # Linux reports kilobytes, macOS bytes.
    peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return usage.ru_utime + usage.ru_stime, peak


def _peak_rss_bytes() -> int:
    """Peak RSS of this process: VmHWM on Linux, since ru_maxrss after a fork also counts
    the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _rusage(resource.RUSAGE_SELF)[1]


def stage_floor(work: Path) -> dict[str, Any]:
    con = duckdb.connect()
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in CSV_COLUMNS.items()) + "}"
    started = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{_sql_path(work / 'calls.csv')}', header = true, "
        f"columns = {columns})) TO '{_sql_path(work / 'floor.parquet')}' "
        "(FORMAT parquet, COMPRESSION zstd)"
    ).fetchall()
    return {"seconds": time.perf_counter() - started}


def stage_enrich(work: Path, scenario: str) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from cdr_assets.lib.enrichment import batch_facts, join_facts, open_facts
    from cdr_assets.lib.ingest import batch_number_facts
    from cdr_assets.lib.numbers import FRESH_COUNTS, NumberFactsCache
    from cdr_assets.lib.warehouse import write_relation_atomic

    calls = work / "calls.parquet"
    facts_file = work / f"facts-{scenario}.parquet"
    out = work / f"enriched-{scenario}.parquet"
    cache = NumberFactsCache(work / "number_facts", default_region=None)
    if scenario == "cold" and (cache.files() or cache.tables_dir.exists()):
        raise SystemExit("the cold scenario needs an empty cache and no prefix tables")
    if scenario != "cold" and not cache.files():
        raise SystemExit("the warm scenarios need the cache the cold one filled")
    con = duckdb.connect(config={"preserve_insertion_order": False})  # as step_connection
    view = f"CREATE TEMP VIEW batch_calls AS SELECT * FROM read_parquet('{_sql_path(calls)}')"
    started = time.perf_counter()
    if scenario != "warm-step":
        # As ingest.validate_batch_files does: the facts of every distinct number, looked up
        # FACTS_SLICE_NUMBERS at a time (the cold run decides the misses into the cache).
        con.execute(
            "CREATE TEMP VIEW raw_batch AS SELECT called_number, caller_number "
            f"FROM read_parquet('{_sql_path(calls)}')"
        )
        batch_number_facts(con, cache)
    looked_up = time.perf_counter()
    # ingest.enrich_batch (the pipeline's enrichment stage): the facts of the batch's
    # numbers, semi-joined from the cache's files, written as the enriched layer.
    source = cache.source_sql()
    assert source is not None
    con.execute(view)
    write_relation_atomic(batch_facts(con, "batch_calls", source), facts_file)
    stepped = time.perf_counter()
    # What deduplication adds when it writes cdrs: the facts joined to every row.
    open_facts(con, f"read_parquet('{_sql_path(facts_file)}')")
    write_relation_atomic(join_facts(con, "batch_calls"), out)
    finished = time.perf_counter()
    # The same rows written without the enrichment (not part of "seconds"): what writing
    # them costs anyway, so that the join's own cost is the difference.
    write_relation_atomic(con.sql("SELECT * FROM batch_calls"), work / f"plain-{scenario}.parquet")
    plain = time.perf_counter() - finished
    cpu_self, _ = _rusage(resource.RUSAGE_SELF)
    cpu_children, worker_peak = _rusage(resource.RUSAGE_CHILDREN)
    counts = con.execute(
        "SELECT count(*), count(called_number_type), count(caller_number_type), "
        "count(called_carrier), count(caller_timezone), count(local_start_time) "
        f"FROM read_parquet('{_sql_path(out)}')"
    ).fetchone()
    assert counts is not None
    cached = con.execute(f"SELECT count(*), count(*) FILTER (valid) FROM {source}").fetchall()[0]
    return {
        "seconds": finished - started,
        "lookup_seconds": looked_up - started,
        "step_seconds": stepped - looked_up,
        "facts_seconds": stepped - started,
        "enrich_write_seconds": finished - stepped,
        "plain_write_seconds": plain,
        # the enrichment's cost in the pipeline: its stage and what the join adds to cdrs
        "pipeline_seconds": stepped - looked_up + (finished - stepped - plain),
        "cpu_seconds": cpu_self + cpu_children,
        "peak_rss": _peak_rss_bytes(),
        "worker_peak_rss": worker_peak,
        "facts_rows": cached[0],
        "decided_by_engine": FRESH_COUNTS["engine"],
        "decided_per_number": FRESH_COUNTS["per_number"],
        "facts_valid": cached[1],
        "output": dict(
            zip(
                [
                    "rows",
                    "called_number_type",
                    "caller_number_type",
                    "called_carrier",
                    "caller_timezone",
                    "local_start_time",
                ],
                [int(c) for c in counts],
                strict=True,
            )
        ),
    }


# ------------------------------------------------------------------ the process tree


def run_stage(stage: str, work: Path, interval: float, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--stage", stage, "--workdir", str(work), *extra]
    started = time.perf_counter()
    with (
        open(work / f"{stage}.out", "w+", encoding="utf-8") as out,
        open(work / f"{stage}.err", "w+", encoding="utf-8") as err,
    ):
        process = subprocess.Popen(command, stdout=out, stderr=err)
        sampler = TreeSampler(process.pid, interval)
        sampler.start()
        code = process.wait()
        sampler.done.set()
        sampler.join()
        if code != 0:
            err.seek(0)
            raise SystemExit(f"stage {stage} failed ({code}):\n{err.read()}")
        out.seek(0)
        result: dict[str, Any] = json.loads(out.read().strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    result["tree_peak_pss"] = sampler.peak
    result["most_processes"] = sampler.most_processes
    return result


# ------------------------------------------------------------------ report


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "phonenumbers": phonenumbers.__version__,
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
    }


SCENARIOS = {
    "cold": "cold: build prefix tables, decide every number, enrich, write",
    "warm": "warm: facts_for from the cache, enrich, write",
    "warm-step": "warm: enrich_batch and the join alone (no look-ups)",
}


def summarise(stage: dict[str, Any], rows: int, distinct: int, floor: float) -> dict[str, Any]:
    seconds = stage["seconds"]
    figures = {
        "seconds": round(seconds, 3),
        "process_seconds": round(stage["process_seconds"], 2),
        "rows_per_second": round(rows / seconds),
        "ratio_to_floor": round(seconds / floor, 2),
        "tree_peak_pss_mib": round(stage["tree_peak_pss"] / MIB, 1),
        "most_processes": stage["most_processes"],
    }
    if "facts_seconds" in stage:
        figures.update(
            {
                "lookup_seconds": round(stage["lookup_seconds"], 3),
                "step_seconds": round(stage["step_seconds"], 3),
                "facts_seconds": round(stage["facts_seconds"], 3),
                "plain_write_seconds": round(stage["plain_write_seconds"], 3),
                "pipeline_seconds": round(stage["pipeline_seconds"], 3),
                "numbers_per_second": round(distinct / max(stage["lookup_seconds"], 1e-9)),
                "enrich_write_seconds": round(stage["enrich_write_seconds"], 3),
                "cpu_seconds": round(stage["cpu_seconds"], 2),
                "peak_rss_mib": round(stage["peak_rss"] / MIB, 1),
                "worker_peak_rss_mib": round(stage["worker_peak_rss"] / MIB, 1),
                "facts_rows": stage["facts_rows"],
                "decided_by_engine": stage["decided_by_engine"],
                "decided_per_number": stage["decided_per_number"],
                "facts_valid": stage["facts_valid"],
                "output": stage["output"],
            }
        )
    return figures


def print_table(results: dict[str, Any]) -> None:
    m, v, s = results["machine"], results["versions"], results["setup"]
    print(
        f"{results['rows']:,} CDRs, {s['distinct_numbers']:,} distinct numbers "
        f"({s['caller_numbers']:,} callers, {s['called_numbers']:,} called); "
        f"{m['cpu_count']} CPUs, {m.get('mem_total_gib', '?')} GiB; "
        + ", ".join(f"{name} {version}" for name, version in v.items())
        + "\n"
    )
    print(
        "| scenario | wall s | look-ups s | enrichment stage s | join + write s "
        "| in the pipeline s | rows/s | numbers/s | x floor "
        "| peak RSS MiB (largest worker) | tree peak PSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    floor = results["scenarios"]["floor"]
    print(
        f"| floor: CSV -> Parquet | {floor['seconds']:.2f} | | | | | {floor['rows_per_second']:,} "
        f"| | 1.00 | | {floor['tree_peak_pss_mib']:,.0f} |"
    )
    for name, label in SCENARIOS.items():
        r = results["scenarios"][name]
        workers = f" ({r['worker_peak_rss_mib']:,.0f})" if r["worker_peak_rss_mib"] else ""
        rate = f"{r['numbers_per_second']:,}" if name == "cold" else ""
        print(
            f"| {label} | {r['seconds']:.2f} | {r['lookup_seconds']:.2f} | "
            f"{r['step_seconds']:.2f} | {r['enrich_write_seconds']:.2f} | "
            f"{r['pipeline_seconds']:.2f} | {r['rows_per_second']:,} | {rate} | "
            f"{r['ratio_to_floor']:.2f} | {r['peak_rss_mib']:,.0f}{workers} | "
            f"{r['tree_peak_pss_mib']:,.0f} |"
        )
    cold = results["scenarios"]["cold"]
    print(
        f"\nSetup (not timed above): numbers {s['numbers_seconds']:.1f} s, rows + files "
        f"{s['rows_seconds']:.1f} s. Cold facts: {cold['facts_valid']:,} of "
        f"{cold['facts_rows']:,} valid, {cold['decided_by_engine']:,} decided by the "
        f"vectorised engine and {cold['decided_per_number']:,} by phonenumbers one by one; "
        f"{cold['cpu_seconds']:.0f} CPU s over {cold['most_processes']} processes. Reading "
        "the distinct numbers (as validation does) and building the prefix tables "
        "are part of the cold 'look-ups s'."
    )
    t, scenarios = results["targets"], results["scenarios"]
    peak = max(scenarios[name]["tree_peak_pss_mib"] for name in SCENARIOS)
    measured = [
        ("cold", cold["seconds"], t["cold_seconds"], "s"),
        ("warm", scenarios["warm"]["seconds"], t["warm_seconds"], "s"),
        ("warm, stage and join", scenarios["warm-step"]["seconds"], t["warm_seconds"], "s"),
        (
            "warm, what it adds to the pipeline",
            scenarios["warm-step"]["pipeline_seconds"],
            t["warm_seconds"],
            "s",
        ),
        ("peak", peak, t["peak_mib"], "MiB"),
    ]
    if results["rows"] < 10_000_000:
        print(
            "Targets (for 10M CDRs, ~2M numbers): "
            + ", ".join(f"{name} < {target:,.0f} {unit}" for name, _, target, unit in measured)
            + "; no verdict on a smaller run."
        )
        return
    print(
        "Targets (for 10M CDRs, ~2M numbers): "
        + "; ".join(
            f"{name} < {target:,.0f} {unit}: {value:,.1f} {unit} "
            f"({'met' if value < target else f'{value / target:.1f}x over'})"
            for name, value, target, unit in measured
        )
        + "."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="CDRs to generate")
    parser.add_argument(
        "--distinct", type=int, default=200_000, help="distinct numbers, caller and called"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--sample-interval", type=float, default=0.2, help="seconds between memory samples"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--stage", choices=["setup", "floor", *SCENARIOS], default=None, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.stage == "setup":
        print(json.dumps(stage_setup(args.workdir, args.rows, args.distinct, args.seed)))
        return 0
    if args.stage == "floor":
        print(json.dumps(stage_floor(args.workdir)))
        return 0
    if args.stage:
        print(json.dumps(stage_enrich(args.workdir, args.stage)))
        return 0
    if not 2 <= args.distinct <= args.rows:
        parser.error("--distinct must be from 2 to --rows")

    with tempfile.TemporaryDirectory(prefix="enrichment-bench-") as tmp:
        work = Path(tmp)
        sizes = ["--rows", str(args.rows), "--distinct", str(args.distinct)]
        setup = run_stage("setup", work, args.sample_interval, [*sizes, "--seed", str(args.seed)])
        stages = {
            name: run_stage(name, work, args.sample_interval, []) for name in ("floor", *SCENARIOS)
        }
    outputs = {stages[name]["output"]["rows"] for name in SCENARIOS}
    if outputs != {args.rows} or len({json.dumps(stages[n]["output"]) for n in SCENARIOS}) != 1:
        raise SystemExit(f"the scenarios wrote different results: {stages}")

    rows, distinct = args.rows, setup["distinct_numbers"]
    floor = stages["floor"]["seconds"]
    results = {
        "rows": rows,
        "distinct_numbers": distinct,
        "seed": args.seed,
        "setup": {
            key: round(value, 2) if isinstance(value, float) else value
            for key, value in setup.items()
        },
        "machine": machine(),
        "versions": versions(),
        "targets": TARGETS,
        "scenarios": {
            name: summarise(stage, rows, distinct, floor) for name, stage in stages.items()
        },
    }
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
