"""Speed and memory of the fraud rules (``cdr_assets.lib.fraud``) on a large generated day.

Setup (timed apart) writes ``--trailing-days`` days of clean traffic plus the judged day,
``--rows`` calls each, with ``cdr_assets.lib.fraud_scenarios`` into a warehouse under
``--workdir`` (kept between invocations when the parameters match; the judged day carries
one injected case of every rule). Then, each in a fresh subprocess so that its peak RSS
(VmHWM) is its own:

* ``floor``: DuckDB reading the columns the rules use from the judged day and the trailing
  days (what any detection over these files costs at least);
* ``cold``: ``fraud.refresh_day`` for the judged day (every rule, the snooze, the alert file
  written) with nothing the rules keep per day (``warehouse.DAY_CACHE_DIRS``) yet, so every
  baseline day is aggregated;
* ``warm``: the same again, the trailing days' traffic cells now kept but not the judged
  day's own (nor its candidates, which would spare judging its callers again): what a new
  day costs in daily operation;
* ``clean``: the same, warm, for the last trailing day, which is clean traffic (so no
  caller-hour reaches the spend floor and ``spend_velocity`` reads no history);
* ``rules``: each rule alone (``fraud.detect_day`` with one rule, warm), to see where time
  goes.

It prints a Markdown table and, with ``--json FILE``, writes every figure; it fails unless
the judged day's injected cases are all found.

    python benchmarks/fraud_bench.py                           # 10M rows a day, 7 trailing days
    python benchmarks/fraud_bench.py --rows 1000000 --workdir /some/dir --keep
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine_info import machine  # noqa: E402

# The columns the rules read (for the floor).
RULE_COLUMNS = (
    "call_id, caller_number, called_number, start_time, end_time, duration_seconds, "
    "carrier_id, call_type, disposition, call_date, called_country, called_number_type, "
    "flags, cost, margin, rate_prefix, local_start_time"
)


def peak_rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def options(args: argparse.Namespace) -> Any:
    from cdr_assets.lib.fraud_scenarios import ScenarioOptions

    return ScenarioOptions(
        start_date=date(2026, 11, 2),
        days=args.trailing_days + 1,
        rows_per_day=args.rows,
        seed=args.seed,
        inject_days=(args.trailing_days,),
    )


def stage_setup(args: argparse.Namespace) -> dict[str, Any]:
    from cdr_assets.lib.fraud_scenarios import generate_scenario
    from cdr_assets.lib.warehouse import Warehouse

    workdir = Path(args.workdir)
    manifest = workdir / "manifest.json"
    wanted = {"rows": args.rows, "trailing_days": args.trailing_days, "seed": args.seed}
    if manifest.exists() and json.loads(manifest.read_text())["params"] == wanted:
        return json.loads(manifest.read_text())
    shutil.rmtree(workdir / "warehouse", ignore_errors=True)
    started = time.perf_counter()
    cases = generate_scenario(Warehouse(workdir / "warehouse"), options(args))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (workdir / "warehouse").rglob("*.parquet"))
    out = {
        "params": wanted,
        "setup_seconds": round(seconds, 1),
        "parquet_mib": round(size / 2**20),
        "cases": [[c.rule, c.subject_type, c.subject] for c in cases],
    }
    manifest.write_text(json.dumps(out))
    return out


def stage_floor(args: argparse.Namespace) -> dict[str, Any]:
    import duckdb

    from cdr_assets.lib.warehouse import Warehouse, read_parquet_sql

    warehouse = Warehouse(Path(args.workdir) / "warehouse")
    files = warehouse.table_files("cdrs")
    started, cpu = time.perf_counter(), time.process_time()
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        rows = con.execute(
            f"SELECT count(*), sum(hash({RULE_COLUMNS})) FROM {read_parquet_sql(files)}"
        ).fetchone()
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "rows": int(rows[0]) if rows else 0,
        "peak_rss_mib": peak_rss_mib(),
    }


def stage_detect(
    args: argparse.Namespace, cold: bool = False, clean: bool = False
) -> dict[str, Any]:
    from cdr_assets.lib import fraud
    from cdr_assets.lib.fraud_config import FraudConfig
    from cdr_assets.lib.warehouse import DAY_CACHE_DIRS, Warehouse

    warehouse = Warehouse(Path(args.workdir) / "warehouse")
    # The clean day is the last trailing day (one baseline day fewer).
    day = options(args).day(args.trailing_days - 1 if clean else args.trailing_days)
    # What the rules keep per day (traffic cells, negative-margin parts, the candidates a
    # late file reuses): cold, none is kept yet, so every baseline day is aggregated; warm,
    # the day's own are not (it is a new day), the trailing days' are.
    for cache in DAY_CACHE_DIRS:
        folder = warehouse.state_dir / cache
        shutil.rmtree(folder if cold else folder / day, ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    result = fraud.refresh_day(warehouse, day, FraudConfig())
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mib": peak_rss_mib(),
        "alerts": [[a.rule, a.subject_type, a.subject, a.severity] for a in result.raised],
    }


def stage_rules(args: argparse.Namespace) -> dict[str, Any]:
    from cdr_assets.lib import fraud
    from cdr_assets.lib.fraud_config import FraudConfig
    from cdr_assets.lib.warehouse import Warehouse

    warehouse = Warehouse(Path(args.workdir) / "warehouse")
    day = options(args).day(args.trailing_days)
    out = {}
    for rule in fraud.RULES:
        started = time.perf_counter()
        fraud.detect_day(warehouse, day, FraudConfig(), [rule])
        out[rule] = time.perf_counter() - started
    return {"rule_seconds": out, "peak_rss_mib": peak_rss_mib()}


STAGES = {
    "setup": stage_setup,
    "floor": stage_floor,
    "cold": lambda args: stage_detect(args, cold=True),
    "warm": stage_detect,
    "clean": lambda args: stage_detect(args, clean=True),
    "rules": stage_rules,
}


def run_stage(args: argparse.Namespace, stage: str) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--stage",
        stage,
        "--workdir",
        str(args.workdir),
        "--rows",
        str(args.rows),
        "--trailing-days",
        str(args.trailing_days),
        "--seed",
        str(args.seed),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="calls per day")
    parser.add_argument("--trailing-days", type=int, default=7, help="baseline days before")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", help="keep the generated warehouse here")
    parser.add_argument("--keep", action="store_true", help="keep a temporary workdir")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](args)))
        return 0

    temporary = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="fraud-bench-")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    try:
        setup = run_stage(args, "setup")
        floor = run_stage(args, "floor")
        cold = run_stage(args, "cold")
        detect = run_stage(args, "warm")
        clean = run_stage(args, "clean")
        rules = run_stage(args, "rules")
    finally:
        if temporary and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    assert cold["alerts"] == detect["alerts"]
    assert clean["alerts"] == []
    raised = {tuple(a[:3]) for a in detect["alerts"]}
    missed = [c for c in setup["cases"] if tuple(c) not in raised]
    import duckdb

    report = {
        "machine": machine(),
        "python": sys.version.split()[0],
        "duckdb": duckdb.__version__,
        "rows_per_day": args.rows,
        "trailing_days": args.trailing_days,
        "setup": setup,
        "floor": floor,
        "cold": cold,
        "detect": detect,
        "clean": clean,
        "rules": rules,
        "missed_cases": missed,
    }
    total_rows = floor["rows"]
    print(
        f"{args.rows:,} calls on the judged day, {args.trailing_days} trailing days "
        f"({total_rows:,} calls in all, {setup['parquet_mib']:,} MiB of Parquet; setup "
        f"{setup['setup_seconds']} s)\n"
    )
    print("| step | wall s | CPU s | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    steps = (
        ("floor: read the rules' columns, all days", floor),
        ("refresh_day, cold (every day's traffic cells aggregated)", cold),
        ("refresh_day, warm (trailing days' cells kept, as day to day)", detect),
        ("refresh_day, warm, a clean day (the last trailing day)", clean),
    )
    for name, figures in steps:
        print(
            f"| {name} | {figures['seconds']:.2f} | {figures['cpu_seconds']:.2f} | "
            f"{figures['peak_rss_mib']:,.0f} |"
        )
    print()
    print("| rule alone | wall s |")
    print("|---|---:|")
    for rule, seconds in rules["rule_seconds"].items():
        print(f"| {rule} | {seconds:.2f} |")
    print(
        f"\n{len(detect['alerts'])} alerts raised; "
        f"{len(setup['cases']) - len(missed)} of {len(setup['cases'])} injected cases found"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
