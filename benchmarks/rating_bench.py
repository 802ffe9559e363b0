"""Throughput benchmark of the rating engine (``cdr_assets.lib.rating``).

Generates N synthetic CDRs as CSV and a set of large decks (5 cost decks of 50,000 prefixes
and a retail deck by default) in a temporary directory, then measures, each stage in its own
subprocess so that its peak RSS is its own:

* ``floor``: DuckDB reading the CSV and writing it as Parquet, the least any stage that
  touches every CDR costs;
* ``rate``: loading the decks (timed apart), then rating the same CDRs (read from that
  Parquet) with ``rate_calls``, registering the decks included, and writing the result to
  Parquet;
* ``rewrite``: reading the rated Parquet and writing it again as it is, the same way: what
  the 22 output columns cost without any rating, a bound for the ``rate`` stage.

It prints a Markdown table (wall seconds, CPU seconds, CDRs/s, peak RSS, ratio to the floor)
and, with ``--json FILE``, writes the figures as JSON. The CPU seconds help to read a run on
a machine shared with other work.

    python benchmarks/rating_bench.py                      # 1,000,000 CDRs
    python benchmarks/rating_bench.py --rows 10000000 --json rating.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
from common import write_rates

REPO = Path(__file__).resolve().parent.parent

# Country calling codes the synthetic traffic and decks are drawn from (weights ~ traffic).
COUNTRY_CODES = {
    "1": 30,
    "44": 12,
    "49": 8,
    "33": 6,
    "61": 4,
    "81": 4,
    "86": 6,
    "91": 8,
    "34": 3,
    "39": 3,
    "31": 2,
    "7": 2,
    "55": 2,
    "52": 2,
    "27": 1,
    "234": 1,
    "971": 1,
    "65": 1,
    "353": 1,
    "48": 1,
}

# The CDR columns the CSV carries, with the types DuckDB reads them as.
CDR_COLUMNS = {
    "call_id": "VARCHAR",
    "caller_number": "VARCHAR",
    "called_number": "VARCHAR",
    "start_time": "TIMESTAMPTZ",
    "duration_seconds": "BIGINT",
    "carrier_id": "VARCHAR",
    "call_type": "VARCHAR",
    "disposition": "VARCHAR",
}

# CDRs generated in SQL so that 10M rows take seconds. Numbers are a country code drawn by
# weight followed by random digits, so they hit deck prefixes of every length; about 3% of
# calls go to a carrier without a deck and 20% are not answered.
GENERATE_CDRS_SQL = """
COPY (
    WITH codes AS (
        SELECT code, sum(weight) OVER (ORDER BY code) AS upper, sum(weight) OVER () AS total
        FROM (SELECT unnest(?) AS code, unnest(?) AS weight)
    ),
    draws AS (
        SELECT
            i,
            hash(i, 'cc') % 1000 / 1000.0 AS u,
            hash(i, 'num') % 10000000000 AS digits,
            hash(i, 'dur') % 100 AS dur_bucket,
            hash(i, 'sec') % 3600 AS dur_raw,
            hash(i, 'car') % 100 AS car,
            hash(i, 'typ') % 100 AS typ,
            hash(i, 'dis') % 100 AS dis,
            hash(i, 'ts') % (31 * 86400) AS ts_offset
        FROM range(?) AS t(i)
    )
    SELECT
        'call-' || i AS call_id,
        '+1415' || lpad(CAST(hash(i, 'caller') % 10000000 AS VARCHAR), 7, '0') AS caller_number,
        '+' || (
            SELECT code FROM codes WHERE u * total < upper ORDER BY upper LIMIT 1
        ) || lpad(CAST(digits AS VARCHAR), 10, '0') AS called_number,
        TIMESTAMPTZ '2024-05-01 00:00:00+00' + to_seconds(ts_offset) AS start_time,
        CASE WHEN dis < 15 THEN 0 WHEN dur_bucket < 5 THEN dur_raw % 10 ELSE dur_raw END
            AS duration_seconds,
        CASE
            WHEN car < 3 THEN 'carrier_999'
            ELSE 'carrier_00' || CAST(car % ? + 1 AS VARCHAR)
        END AS carrier_id,
        CASE
            WHEN typ < 5 THEN NULL
            WHEN typ < 25 THEN 'local'
            WHEN typ < 45 THEN 'national'
            ELSE 'international'
        END AS call_type,
        CASE
            WHEN dis < 15 THEN 'NO_ANSWER'
            WHEN dis < 18 THEN 'BUSY'
            WHEN dis < 20 THEN 'FAILED'
            WHEN dis < 30 THEN NULL
            ELSE 'ANSWERED'
        END AS disposition
    FROM draws
) TO '{path}' (FORMAT csv, HEADER true)
"""


def generate(work: Path, rows: int, carriers: int, prefixes: int, seed: int) -> None:
    # Rates change mid-period, on 15 May 12:00 UTC.
    write_rates(work / "rates", carriers, prefixes, seed, COUNTRY_CODES, "2024-05-15T12:00:00Z")

    con = duckdb.connect()
    codes = list(COUNTRY_CODES)
    path = str(work / "cdrs.csv").replace("'", "''")
    con.execute(
        GENERATE_CDRS_SQL.format(path=path),
        [codes, [COUNTRY_CODES[c] for c in codes], rows, carriers],
    ).fetchall()
    con.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_bytes() -> int:
    """Peak RSS of this process. On Linux VmHWM, because ru_maxrss also counts the memory of
    the parent this process was forked from."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


def stage_floor(work: Path, threads: int | None) -> dict[str, Any]:
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}").fetchall()
    csv_path = str(work / "cdrs.csv").replace("'", "''")
    out = str(work / "cdrs.parquet").replace("'", "''")
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in CDR_COLUMNS.items()) + "}"
    cpu = _cpu_seconds()
    started = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{csv_path}', header = true, columns = {columns})) "
        f"TO '{out}' (FORMAT parquet)"
    ).fetchall()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": _cpu_seconds() - cpu, "peak_rss": _peak_rss_bytes()}


def stage_rate(work: Path, threads: int | None) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from cdr_assets.lib.rating import load_decks, rate_calls

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}").fetchall()
    started = time.perf_counter()
    decks = load_decks(work / "rates")
    loaded = time.perf_counter()
    cpu = _cpu_seconds()
    source = str(work / "cdrs.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW calls AS SELECT * FROM read_parquet('{source}')").fetchall()
    relation = rate_calls(con, "calls", decks)
    relation.to_parquet(str(work / "rated.parquet"))
    finished = time.perf_counter()
    cpu = _cpu_seconds() - cpu
    statuses = con.execute(
        "SELECT rating_status, count(*) FROM read_parquet(?) GROUP BY ALL ORDER BY ALL",
        [str(work / "rated.parquet")],
    ).fetchall()
    return {
        "seconds": finished - loaded,
        "cpu": cpu,
        "load_seconds": loaded - started,
        "peak_rss": _peak_rss_bytes(),
        "deck_rows": decks.cost.num_rows + (decks.retail.num_rows if decks.retail else 0),
        "statuses": {str(status): int(count) for status, count in statuses},
    }


def stage_rewrite(work: Path, threads: int | None) -> dict[str, Any]:
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}").fetchall()
    source = str(work / "rated.parquet").replace("'", "''")
    cpu = _cpu_seconds()
    started = time.perf_counter()
    con.sql(f"SELECT * FROM read_parquet('{source}')").to_parquet(str(work / "rewritten.parquet"))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": _cpu_seconds() - cpu, "peak_rss": _peak_rss_bytes()}


STAGES = {"floor": stage_floor, "rate": stage_rate, "rewrite": stage_rewrite}


def run_stage(stage: str, work: Path, threads: int | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--stage", stage, "--workdir", str(work)]
    if threads:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="CDRs to generate")
    parser.add_argument("--carriers", type=int, default=5, help="cost decks (at most 9)")
    parser.add_argument("--prefixes", type=int, default=50_000, help="rows per deck")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default all)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=sorted(STAGES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.stage:
        print(json.dumps(STAGES[args.stage](args.workdir, args.threads)))
        return 0
    if not 1 <= args.carriers <= 9:
        parser.error("--carriers must be from 1 to 9")

    with tempfile.TemporaryDirectory(prefix="rating-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        generate(work, args.rows, args.carriers, args.prefixes, args.seed)
        generated = time.perf_counter() - started
        floor = run_stage("floor", work, args.threads)
        rate = run_stage("rate", work, args.threads)
        rewrite = run_stage("rewrite", work, args.threads)
        csv_bytes = (work / "cdrs.csv").stat().st_size

    rows = args.rows
    mib = 1024 * 1024
    results = {
        "rows": rows,
        "carriers": args.carriers,
        "prefixes_per_deck": args.prefixes,
        "deck_rows": rate["deck_rows"],
        "csv_bytes": csv_bytes,
        "generate_seconds": round(generated, 2),
        "threads": args.threads or os.cpu_count(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "stages": {
            "floor": {
                "seconds": round(floor["seconds"], 3),
                "cpu_seconds": round(floor["cpu"], 2),
                "cdrs_per_second": round(rows / floor["seconds"]),
                "peak_rss_mib": round(floor["peak_rss"] / mib, 1),
            },
            "rate": {
                "seconds": round(rate["seconds"], 3),
                "cpu_seconds": round(rate["cpu"], 2),
                "load_decks_seconds": round(rate["load_seconds"], 3),
                "cdrs_per_second": round(rows / rate["seconds"]),
                "peak_rss_mib": round(rate["peak_rss"] / mib, 1),
                "ratio_to_floor": round(rate["seconds"] / floor["seconds"], 2),
            },
            "rewrite": {
                "seconds": round(rewrite["seconds"], 3),
                "cpu_seconds": round(rewrite["cpu"], 2),
                "cdrs_per_second": round(rows / rewrite["seconds"]),
                "peak_rss_mib": round(rewrite["peak_rss"] / mib, 1),
                "ratio_to_floor": round(rewrite["seconds"] / floor["seconds"], 2),
            },
        },
        "statuses": rate["statuses"],
    }
    f, r, w = (results["stages"][name] for name in ("floor", "rate", "rewrite"))
    print(
        f"{rows:,} CDRs, {args.carriers} cost decks + retail of {args.prefixes:,} prefixes, "
        f"{results['threads']} threads, DuckDB {duckdb.__version__}\n"
    )
    print("| stage | wall s | CPU s | CDRs/s | peak RSS MiB | x floor |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| floor: CSV -> Parquet | {f['seconds']:.2f} | {f['cpu_seconds']:.1f} | "
        f"{f['cdrs_per_second']:,} | {f['peak_rss_mib']:.0f} | 1.00 |"
    )
    print(
        f"| rate: Parquet -> rate_calls -> Parquet | {r['seconds']:.2f} | "
        f"{r['cpu_seconds']:.1f} | {r['cdrs_per_second']:,} | {r['peak_rss_mib']:.0f} | "
        f"{r['ratio_to_floor']:.2f} |"
    )
    print(
        f"| rewrite: rated Parquet -> Parquet (no rating) | {w['seconds']:.2f} | "
        f"{w['cpu_seconds']:.1f} | {w['cdrs_per_second']:,} | {w['peak_rss_mib']:.0f} | "
        f"{w['ratio_to_floor']:.2f} |"
    )
    print(f"\nload_decks: {r['load_decks_seconds']:.2f} s; statuses: {results['statuses']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
