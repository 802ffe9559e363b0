"""End-to-end benchmark of ``cdr-pipeline process`` against a floor, in one sitting.

For each ``--rows`` size it generates a realistic day (``generate_day.py``: landing CSV files,
five cost decks and a retail deck of 50,000 prefixes) and measures, each in its own process:

* ``floor``: DuckDB reading the day's landing CSV files (every column as text, short lines
  padded) and writing one Parquet file; run before the cold run and again after the warm
  run, the floor is the mean of the two;
* ``cold``: ``cdr-pipeline process`` on the day's files into an empty warehouse (nothing in
  the number-facts cache);
* ``warm``: the same files into another empty warehouse that holds the cold run's number-facts
  cache (its ``number_facts/`` folder copied in);
* ``incremental``: one more file of ``--incremental-rows`` calls of the same day into the cold
  run's warehouse (deduplication against the whole day, its marts refreshed, publication).
  When the cold run did not finish, the day is first landed in batches of about
  ``--part-rows`` rows (consecutive files, one run each) into a new warehouse, reported as
  ``day_in_parts``, and the file goes into that one.

Then, once:

* ``batching``: ``--batching-rows`` calls as one file, and the same rows as
  ``--batching-files`` files landed together, each into an empty warehouse given the same
  number facts (the first day's cold run's, or those of a first run of the one file);
  ``cdr-pipeline process`` must take the files in one run (one batch);
* ``freshness``: ``cdr-pipeline dev`` (the Dagster webserver and daemon, landing sensor on,
  runs launched by the daemon) on a small warehouse; after a warm-up file has gone through, a
  file of ``--freshness-rows`` calls of a new day is renamed into the landing folder, and the
  serving file is polled (read-only) until ``daily_summary`` has that day with all its calls.
  Repeated ``--freshness-repeats`` times, the renames spread over the sensor's 10 s interval.

Each run of ``cdr-pipeline process`` has ``CDR_LANDING_DIR``, ``CDR_RATES_DIR`` and
``CDR_WAREHOUSE_DIR`` set to folders of its own and no ``DAGSTER_HOME`` (an in-memory Dagster
instance). Measured per run: wall seconds from spawn to exit, CPU seconds, the peak RSS of the
largest process (``wait4``), and the peaks of the summed PSS and RSS of the process tree
sampled every ``--sample-interval`` seconds. Its progress lines give each step's share: the
time from one line to the next is the step that printed the second one (lines are stamped on
arrival). ``raw_cdrs`` is read, ``validate_cdrs`` validate, ``rate_decks`` and ``rated_cdrs``
rate, ``enriched_cdrs`` enrich, ``deduplicate_cdrs`` up to its line ``marts refreshed`` dedup
and from there marts, ``serving_db`` publish (with the checks of the dedup step that come
before it); ``overhead`` is start-up (interpreter, imports, listing) to the first line plus
the end (summary, shut-down) after the last. The first step of the job (``rate_decks``)
includes the start of the Dagster run.

Every run's counts are read back from the serving file and reconciled: rows read = accepted
+ rejected, accepted = kept + duplicate, ``daily_summary.total_calls`` = the day's ``cdrs``,
and each equals what the generator wrote. A run whose process tree passes
``--max-memory-gib`` (default 60% of the machine's memory) is killed, so that a shared
machine keeps working; its time and memory are then lower bounds. The script exits 1 when a
run fails or a count does not reconcile. ``--from-json FILE`` prints the report of an
earlier run again (the figures so far are kept in ``FILE.partial`` while the suite runs).

    python benchmarks/pipeline_bench.py --rows 1000000 --json bench.json --markdown bench.md
    python benchmarks/pipeline_bench.py --rows 1000000 10000000 --scenarios cold,warm,incremental
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import duckdb
from common import TreeSampler, process_tree
from machine_info import machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MIB = 1024 * 1024
SCENARIOS = ("cold", "warm", "incremental", "batching", "freshness")
STAGES = (
    "read",
    "validate",
    "rate",
    "enrich",
    "dedup",
    "marts",
    "alerts",
    "publish",
    "overhead",
)
STEP_STAGES = {
    "raw_cdrs": "read",
    "validate_cdrs": "validate",
    "rate_decks": "rate",
    "rated_cdrs": "rate",
    "enriched_cdrs": "enrich",
    "deduplicate_cdrs": "dedup",
    "serving_db": "publish",
}
MARTS_LINE = "marts refreshed"
# The stage of the step that runs after each step (the job's order), for a run cut short.
NEXT_STAGE = {
    "": "rate",  # rate_decks comes first
    "rate_decks": "read",
    "raw_cdrs": "validate",
    "validate_cdrs": "rate",
    "rated_cdrs": "enrich",
    "enriched_cdrs": "dedup",
    "deduplicate_cdrs": "marts",
    "marts": "alerts",
    "alerts": "publish",
    "serving_db": "overhead",
}
PROGRESS_LINE = re.compile(r"^\[\s*(\d+(?:\.\d+)?)s\] (.*)$")
STEP_LINE = re.compile(r"^([a-z_]+): (.*)$")
SUMMARY_LINE = re.compile(r"^batch (\S+): (\d+) files \((\d+) rejected\)")

# The targets. Sizes are the rows of the day they are stated for.
TARGET_ROWS = 10_000_000
BASE_ROWS = 1_000_000
TARGETS = {
    "cold_ratio": 8.0,  # x floor, 10M-row day, cold cache
    "cold_peak_bytes": 3_000_000_000,  # 3 GB
    "warm_ratio": 4.0,  # x floor, 10M-row day, warm cache
    "incremental_seconds": 15.0,  # 10,000 rows into the 10M-row day
    "batching_ratio": 2.0,  # 100 files of 1,000 rows vs one file of 100,000, in one run
    "freshness_seconds": 45.0,  # rename -> rows in daily_summary, under the daemon
    "memory_growth": 3.0,  # peak at 10M rows / peak at 1M rows
}
VERSION_PACKAGES = (
    "dagster",
    "duckdb",
    "pyarrow",
    "polars",
    "pandera",
    "pandas",
    "numpy",
    "phonenumbers",
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ running a process


@dataclass
class ProcessRun:
    wall_seconds: float
    exit_code: int
    cpu_seconds: float
    max_rss_bytes: int  # the largest single process of the tree (wait4)
    tree_pss_bytes: int  # largest sampled sum over the tree
    tree_rss_bytes: int
    most_processes: int
    samples: int
    killed_for_memory: bool
    stdout: str
    stderr: list[tuple[float, str]] = field(default_factory=list)  # (seconds after spawn, line)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds, summed PSS)

    @property
    def peak_bytes(self) -> int:
        return max(self.max_rss_bytes, self.tree_pss_bytes)


def _collect(stream: TextIO, started: float, into: list[tuple[float, str]]) -> None:
    for line in stream:
        into.append((time.perf_counter() - started, line.rstrip("\n")))


def run_measured(
    command: list[str],
    env: dict[str, str],
    interval: float,
    limit_bytes: int | None = None,
) -> ProcessRun:
    """Run ``command`` to its end, sampling its tree's memory (killed above ``limit_bytes``),
    its lines stamped on arrival."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert process.stdout is not None and process.stderr is not None
    sampler = TreeSampler(process.pid, interval, limit_bytes)
    sampler.start()
    out_lines: list[tuple[float, str]] = []
    err_lines: list[tuple[float, str]] = []
    readers = [
        threading.Thread(target=_collect, args=(process.stdout, started, out_lines), daemon=True),
        threading.Thread(target=_collect, args=(process.stderr, started, err_lines), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        # wait4 gives this child's own resource use, its waited-for descendants included.
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): take the run down with this process.
        for pid in reversed(process_tree(process.pid)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        raise
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    sampler.join()
    for reader in readers:
        reader.join(timeout=30)
    process.stdout.close()
    process.stderr.close()
    max_rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return ProcessRun(
        wall_seconds=wall,
        exit_code=process.returncode,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        max_rss_bytes=max_rss,
        tree_pss_bytes=sampler.peak,
        tree_rss_bytes=sampler.peak_rss,
        most_processes=sampler.most_processes,
        samples=sampler.samples,
        killed_for_memory=sampler.killed,
        stdout="\n".join(line for _, line in out_lines),
        stderr=err_lines,
        timeline=[(at - started, pss) for at, pss in sampler.timeline],
    )


def cdr_pipeline_command() -> list[str]:
    """The console script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("cdr-pipeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cdr_assets.cli"]


def pipeline_env(landing: Path, rates: Path, warehouse: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_") and k != "DAGSTER_HOME"}
    env.update(
        CDR_LANDING_DIR=str(landing),
        CDR_RATES_DIR=str(rates),
        CDR_WAREHOUSE_DIR=str(warehouse),
        PYTHONUNBUFFERED="1",
    )
    return env


def land(sources: list[Path], landing: Path) -> None:
    """The files into a landing folder, as hard links when the file system allows (the
    pipeline moves them into its archive), else as copies; each renamed into place."""
    landing.mkdir(parents=True, exist_ok=True)
    for source in sources:
        temporary = landing / f".{source.name}.part"
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, landing / source.name)


# ------------------------------------------------------------------ the floor


# The landing CSV files as the floor reads them: every value text.
FLOOR_SOURCE = "read_csv({files}, header = true, all_varchar = true, null_padding = true)"
FLOOR_SQL = "COPY (SELECT * FROM " + FLOOR_SOURCE + ") TO '{out}' (FORMAT parquet)"


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def stage_floor(inputs: list[Path], output: Path) -> dict[str, Any]:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    started = time.perf_counter()
    con.execute(
        FLOOR_SQL.format(files=_sql_list(inputs), out=str(output).replace("'", "''"))
    ).fetchall()
    seconds = time.perf_counter() - started
    row = con.execute(
        "SELECT count(*) FROM read_parquet(?)", [str(output).replace("'", "''")]
    ).fetchone()
    return {"copy_seconds": seconds, "rows": int(row[0]) if row else 0}


def measure_floor(inputs: list[Path], work: Path, interval: float) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    output = work / "floor.parquet"
    command = [sys.executable, str(HERE / "pipeline_bench.py"), "--stage", "floor"]
    command += ["--output", str(output), *map(str, inputs)]
    run = run_measured(command, dict(os.environ), interval)
    if run.exit_code != 0:
        tail = "\n".join(line for _, line in run.stderr[-20:])
        raise SystemExit(f"the floor failed ({run.exit_code}):\n{tail}")
    inner = json.loads(run.stdout.strip().splitlines()[-1])
    output.unlink(missing_ok=True)
    return {
        "wall_seconds": round(run.wall_seconds, 3),
        "copy_seconds": round(inner["copy_seconds"], 3),
        "cpu_seconds": round(run.cpu_seconds, 2),
        "rows": inner["rows"],
        "peak_rss_mib": round(run.peak_bytes / MIB, 1),
    }


def floor_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The floor of several runs: their mean wall seconds."""
    wall = sum(r["wall_seconds"] for r in runs) / len(runs)
    return {
        "wall_seconds": round(wall, 3),
        "copy_seconds": round(sum(r["copy_seconds"] for r in runs) / len(runs), 3),
        "rows": runs[0]["rows"],
        "runs": runs,
    }


# ------------------------------------------------------------------ one pipeline run


def stage_times(
    lines: list[tuple[float, str]],
    wall: float,
    timeline: list[tuple[float, int]],
    finished: bool = True,
) -> dict[str, Any]:
    """Seconds per stage from the progress lines (see the module docstring), and the largest
    memory sample (summed PSS) taken during each stage. In a run that did not finish, the
    time after the last line belongs to the step that was running."""
    stages = dict.fromkeys(STAGES, 0.0)
    peaks = dict.fromkeys(STAGES, 0)
    steps: list[dict[str, Any]] = []

    def peak(lo: float, hi: float) -> int:
        return max((pss for at, pss in timeline if lo <= at <= hi), default=0)

    progress = [(at, m.group(2)) for at, text in lines if (m := PROGRESS_LINE.match(text))]
    first = progress[0][0] if progress else wall
    stages["overhead"] += first
    peaks["overhead"] = peak(0.0, first)
    previous = first
    last_step = ""
    marts_done = False
    for at, text in progress[1:]:
        step = STEP_LINE.match(text)
        name = step.group(1) if step else text.split(" ", 1)[0]
        stage = STEP_STAGES.get(name, "overhead" if not step else f"other:{name}")
        if name == "deduplicate_cdrs" and step:
            # Its lines: kept ... (dedup), marts refreshed ... (marts), then the fraud
            # alerts of each day it changed (alerts).
            if step.group(2).startswith(MARTS_LINE):
                stage, marts_done = "marts", True
            elif marts_done:
                stage = "alerts"
        if step:
            last_step = stage if stage in ("marts", "alerts") else name
        stages[stage] = stages.get(stage, 0.0) + at - previous
        peaks[stage] = max(peaks.get(stage, 0), peak(previous, at))
        steps.append({"step": name, "stage": stage, "seconds": round(at - previous, 3)})
        previous = at
    tail = "overhead" if finished else NEXT_STAGE.get(last_step, "overhead")
    stages[tail] += max(wall - previous, 0.0)
    peaks[tail] = max(peaks[tail], peak(previous, wall))
    return {"stages": stages, "peaks": peaks, "steps": steps}


EXPECTED_KEYS = ("rows_read", "rows_accepted", "rows_rejected", "rows_duplicate", "rows_kept")
COUNT_NAMES = (
    "files",
    "batches",
    "files_rejected",
    "rows_read",
    "rows_accepted",
    "rows_rejected",
    "rows_duplicate",
)
COUNTS_SQL = """
SELECT
    count(*) AS files,
    count(DISTINCT batch_id) AS batches,
    count(*) FILTER (WHERE status = 'rejected') AS files_rejected,
    sum(rows_read) AS rows_read,
    sum(rows_accepted) AS rows_accepted,
    sum(rows_rejected) AS rows_rejected,
    sum(rows_duplicate) AS rows_duplicate
FROM landed_files WHERE source_file IN (SELECT unnest($files))
"""


def read_counts(warehouse: Path, files: list[str], day: str) -> dict[str, Any]:
    """The run's figures as a BI tool sees them in the serving file."""
    with duckdb.connect(str(warehouse / "cdr.duckdb"), read_only=True) as con:
        row = con.execute(COUNTS_SQL, {"files": files}).fetchone()
        assert row is not None
        counts: dict[str, Any] = dict(zip(COUNT_NAMES, (int(v or 0) for v in row), strict=True))
        kept = con.execute(
            "SELECT count(*) FROM cdrs WHERE source_file IN (SELECT unnest($files))",
            {"files": files},
        ).fetchone()
        counts["rows_kept"] = int(kept[0]) if kept else 0
        counts["reasons"] = {
            str(reason): int(n)
            for reason, n in con.execute(
                "SELECT reason, count(*) FROM (SELECT unnest(reasons) AS reason FROM "
                "rejected_cdrs WHERE source_file IN (SELECT unnest($files))) GROUP BY 1 "
                "ORDER BY 1",
                {"files": files},
            ).fetchall()
        }
        counts["rating_status"] = {
            str(status): int(n)
            for status, n in con.execute(
                "SELECT rating_status, count(*) FROM cdrs WHERE source_file IN "
                "(SELECT unnest($files)) GROUP BY 1 ORDER BY 1",
                {"files": files},
            ).fetchall()
        }
        day_row = con.execute(
            "SELECT (SELECT count(*) FROM cdrs WHERE call_date = $day::DATE), "
            "(SELECT sum(total_calls) FROM daily_summary WHERE call_date = $day::DATE)",
            {"day": day},
        ).fetchone()
        assert day_row is not None
        counts["day_cdrs"] = int(day_row[0] or 0)
        counts["day_summary_calls"] = int(day_row[1] or 0)
    return counts


def reconcile(counts: dict[str, Any], expected: dict[str, Any] | None) -> dict[str, bool]:
    checks = {
        "read_is_accepted_plus_rejected": counts["rows_read"]
        == counts["rows_accepted"] + counts["rows_rejected"],
        "accepted_is_kept_plus_duplicate": counts["rows_accepted"]
        == counts["rows_kept"] + counts["rows_duplicate"],
        "daily_summary_is_day_cdrs": counts["day_summary_calls"] == counts["day_cdrs"],
        "one_batch": counts["batches"] == 1,
        "no_file_rejected": counts["files_rejected"] == 0,
    }
    if expected is not None:
        checks["as_generated"] = all(counts[key] == expected[key] for key in EXPECTED_KEYS)
    return checks


def run_pipeline(
    label: str,
    sources: list[Path],
    rates: Path,
    landing: Path,
    warehouse: Path,
    expected: dict[str, Any] | None,
    day: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``cdr-pipeline process`` on ``sources`` landed in ``landing``, into ``warehouse``;
    ``expected`` holds the counts the generator wrote for exactly these files."""
    land(sources, landing)
    env = pipeline_env(landing, rates, warehouse)
    log(f"{label}: cdr-pipeline process, {len(sources)} files")
    load = os.getloadavg()[0]
    limit = int(args.max_memory_gib * 2**30) if args.max_memory_gib else None
    run = run_measured(
        [*cdr_pipeline_command(), "process"], env, args.sample_interval, limit_bytes=limit
    )
    timing = stage_times(
        run.stderr, run.wall_seconds, run.timeline, finished=not run.killed_for_memory
    )
    failures = [text for _, text in run.stderr if "FAILED" in text]
    if run.killed_for_memory:
        last = [text for _, text in run.stderr if PROGRESS_LINE.match(text)][-1:]
        failures.insert(
            0,
            f"killed by the benchmark: the process tree passed {args.max_memory_gib:g} GiB "
            f"(--max-memory-gib) {run.wall_seconds:.0f} s in, in the step after: {last}",
        )
    result: dict[str, Any] = {
        "scenario": label,
        "files": len(sources),
        "exit_code": run.exit_code,
        "wall_seconds": round(run.wall_seconds, 3),
        "cpu_seconds": round(run.cpu_seconds, 2),
        "peak_rss_mib": round(run.max_rss_bytes / MIB, 1),
        "tree_peak_pss_mib": round(run.tree_pss_bytes / MIB, 1),
        "tree_peak_rss_mib": round(run.tree_rss_bytes / MIB, 1),
        "peak_mib": round(run.peak_bytes / MIB, 1),
        "most_processes": run.most_processes,
        "memory_samples": run.samples,
        "load_average_before": round(load, 2),
        "stages": {k: round(v, 3) for k, v in timing["stages"].items()},
        "shares": {k: round(100 * v / run.wall_seconds, 1) for k, v in timing["stages"].items()},
        "stage_peak_mib": {k: round(v / MIB) for k, v in timing["peaks"].items()},
        "killed_for_memory": run.killed_for_memory,
        "steps": timing["steps"],
        "progress": [f"{at:8.2f}s {text}" for at, text in run.stderr],
        "summary": run.stdout.strip().splitlines(),
        "expected": expected,
    }
    if run.exit_code != 0 or failures:
        result["failures"] = failures or [text for _, text in run.stderr[-15:]]
        log(f"{label}: FAILED (exit {run.exit_code}): {result['failures'][:3]}")
        return result
    counts = read_counts(warehouse, [s.name for s in sources], day)
    checks = reconcile(counts, expected)
    rows = counts["rows_read"]
    result.update(
        rows=rows,
        rows_per_second=round(rows / run.wall_seconds),
        counts=counts,
        checks=checks,
    )
    log(
        f"{label}: {run.wall_seconds:.1f} s, peak {run.peak_bytes / MIB:,.0f} MiB, "
        f"checks {'ok' if all(checks.values()) else checks}"
    )
    return result


def with_floor(result: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    result["floor"] = floor
    if "rows" in result:
        result["ratio_to_floor"] = round(result["wall_seconds"] / floor["wall_seconds"], 2)
    return result


def fill_day_in_parts(
    files: list[Path],
    rates: Path,
    work: Path,
    expected: dict[str, Any],
    day: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The day landed in batches of about ``--part-rows`` rows (consecutive files), one
    ``cdr-pipeline process`` each, into one warehouse: the base of the incremental scenario
    when the day does not go through in one run. Their counts must add up to the day's."""
    rows = expected["rows_read"]
    parts = max(1, min(len(files), -(-rows // args.part_rows)))
    bounds = [round(i * len(files) / parts) for i in range(parts + 1)]
    runs = []
    for i in range(parts):
        chunk = files[bounds[i] : bounds[i + 1]]
        runs.append(
            run_pipeline(
                f"day in parts {i + 1}/{parts}",
                chunk,
                rates,
                work / "landing",
                work / "warehouse",
                None,
                day,
                args,
            )
        )
        if not _complete(runs[-1]):
            break
    done = [run for run in runs if _complete(run)]
    totals = {key: sum(run["counts"][key] for run in done) for key in EXPECTED_KEYS}
    summary: dict[str, Any] = {
        "scenario": f"day in {parts} parts",
        "parts": parts,
        "files": len(files),
        "exit_code": 0 if len(done) == parts else 1,
        "wall_seconds": round(sum(r["wall_seconds"] for r in runs), 3),
        "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 2),
        "peak_mib": max(r["peak_mib"] for r in runs),
        "stages": {k: round(sum(r["stages"].get(k, 0.0) for r in runs), 3) for k in STAGES},
        "stage_peak_mib": {k: max(r["stage_peak_mib"].get(k, 0) for r in runs) for k in STAGES},
        "counts": totals,
        "runs": runs,
    }
    summary["shares"] = {
        k: round(100 * v / summary["wall_seconds"], 1) for k, v in summary["stages"].items()
    }
    if summary["exit_code"] == 0:
        summary["rows"] = totals["rows_read"]
        summary["rows_per_second"] = round(totals["rows_read"] / summary["wall_seconds"])
        summary["checks"] = {
            "each_part": all(all(r["checks"].values()) for r in runs),
            "as_generated": all(totals[key] == expected[key] for key in EXPECTED_KEYS),
        }
    return summary


# ------------------------------------------------------------------ scenarios


def generate(out: Path, args: argparse.Namespace, rows: int, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, str(HERE / "generate_day.py"), "--out", str(out)]
    command += ["--rows", str(rows), "--seed", str(args.seed), "--carriers", str(args.carriers)]
    command += ["--prefixes", str(args.prefixes), "--malformed-per-file"]
    command += [str(args.malformed_per_file), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"generate_day.py failed:\n{done.stderr}")
    manifest: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    manifest["wall_seconds"] = round(time.perf_counter() - started, 2)
    return manifest


def files_of(source: Path, manifest: dict[str, Any], name: str) -> list[Path]:
    entry = manifest["sets"][name]
    return [source / entry["folder"] / f for f in entry["files"]]


def day_scenarios(
    work: Path, rows: int, scenarios: list[str], args: argparse.Namespace, with_batching: bool
) -> dict[str, Any]:
    """Generation, floor, cold, warm and incremental for one size of day; with
    ``with_batching``, also the batching files (same number pools) and a copy of the cold
    run's number facts for them."""
    source = work / "source"
    extra = ["--files", str(args.files)]
    if "incremental" in scenarios:
        extra += ["--incremental-rows", str(args.incremental_rows)]
    if with_batching:
        extra += ["--batching-rows", str(args.batching_rows)]
        extra += ["--batching-files", str(args.batching_files)]
    log(f"generating a day of {rows:,} rows")
    manifest = generate(source, args, rows, extra)
    log(f"generated in {manifest['wall_seconds']:.1f} s")
    rates = source / "rates"
    day = manifest["options"]["day"]
    day_files = files_of(source, manifest, "day")
    expected = manifest["sets"]["day"]["expected"]
    interval = args.sample_interval
    out: dict[str, Any] = {"rows": rows, "generated": manifest, "scenarios": {}}

    floor_runs = [measure_floor(day_files, work, interval)]
    log(f"floor: {floor_runs[0]['wall_seconds']:.2f} s")
    cold_wh = work / "cold" / "warehouse"
    cold = run_pipeline(
        "cold", day_files, rates, work / "cold" / "landing", cold_wh, expected, day, args
    )
    out["scenarios"]["cold"] = cold
    facts = cold_wh / "number_facts"
    if with_batching and facts.is_dir():
        shutil.copytree(facts, work / "batching_facts")
        out["batching"] = {"source": source, "manifest": manifest, "facts": work / "batching_facts"}
    if "warm" in scenarios:
        warm_wh = work / "warm" / "warehouse"
        warm_wh.mkdir(parents=True)
        if facts.is_dir():
            shutil.copytree(facts, warm_wh / "number_facts")
        out["scenarios"]["warm"] = run_pipeline(
            "warm", day_files, rates, work / "warm" / "landing", warm_wh, expected, day, args
        )
        if not args.keep:
            shutil.rmtree(work / "warm", ignore_errors=True)
    floor_runs.append(measure_floor(day_files, work, interval))
    log(f"floor: {floor_runs[1]['wall_seconds']:.2f} s")
    floor = floor_of(floor_runs)
    for name in ("cold", "warm"):
        if name in out["scenarios"]:
            with_floor(out["scenarios"][name], floor)
    if "incremental" in scenarios:
        base = cold_wh
        if not (_complete(cold) and all(cold["checks"].values())):
            # The day did not go through in one run: land it in parts instead.
            if not args.keep:
                shutil.rmtree(work / "cold", ignore_errors=True)
            parts = fill_day_in_parts(day_files, rates, work / "parts", expected, day, args)
            out["scenarios"]["day_in_parts"] = with_floor(parts, floor)
            base = work / "parts" / "warehouse"
        late = files_of(source, manifest, "incremental")
        late_floor = floor_of([measure_floor(late, work, interval)])
        out["scenarios"]["incremental"] = with_floor(
            run_pipeline(
                "incremental",
                late,
                rates,
                work / "incremental" / "landing",
                base,
                manifest["sets"]["incremental"]["expected"],
                day,
                args,
            ),
            late_floor,
        )
    if not args.keep:
        for name in ("cold", "parts"):
            shutil.rmtree(work / name, ignore_errors=True)
    return out


def batching_scenario(
    work: Path, args: argparse.Namespace, prepared: dict[str, Any] | None
) -> dict[str, Any]:
    """One file vs the same rows in many files, each into an empty warehouse holding the
    same number facts: those of a day's cold run (``prepared``), else of a first, cold run
    of the one file."""
    interval = args.sample_interval
    runs: dict[str, Any] = {}
    if prepared is not None:
        source, manifest, facts = prepared["source"], prepared["manifest"], prepared["facts"]
        facts_from = f"the cold run of the {manifest['options']['rows']:,}-row day"
    else:
        source = work / "source"
        log(f"generating {args.batching_rows:,} rows as 1 and as {args.batching_files} files")
        extra = ["--files", "1", "--batching-rows", str(args.batching_rows)]
        extra += ["--batching-files", str(args.batching_files)]
        # The day itself is not used: keep it small.
        manifest = generate(source, args, 1_000, extra)
        facts = work / "primer" / "warehouse" / "number_facts"
        facts_from = "a cold run of the one file"
    rates = source / "rates"
    day = manifest["options"]["day"]
    one = files_of(source, manifest, "batching_one")
    many = files_of(source, manifest, "batching_many")
    expected = manifest["sets"]["batching_one"]["expected"]
    floors = {
        "one": floor_of([measure_floor(one, work, interval)]),
        "many": floor_of([measure_floor(many, work, interval)]),
    }
    if prepared is None:
        primer = run_pipeline(
            "batching: one file, cold (fills the number facts)",
            one,
            rates,
            work / "primer" / "landing",
            work / "primer" / "warehouse",
            expected,
            day,
            args,
        )
        runs["one_cold"] = with_floor(primer, floors["one"])
    for name, files in (("one", one), ("many", many)):
        warehouse = work / name / "warehouse"
        warehouse.mkdir(parents=True)
        if facts.is_dir():
            shutil.copytree(facts, warehouse / "number_facts")
        label = f"batching: {len(files)} file{'s' if len(files) > 1 else ''}, warm"
        runs[name] = with_floor(
            run_pipeline(
                label, files, rates, work / name / "landing", warehouse, expected, day, args
            ),
            floors[name],
        )
    ratio = None
    if runs["one"].get("rows") and runs["many"].get("rows"):
        ratio = round(runs["many"]["wall_seconds"] / runs["one"]["wall_seconds"], 2)
    if not args.keep:
        for name in ("primer", "one", "many"):
            shutil.rmtree(work / name, ignore_errors=True)
    return {
        "rows": args.batching_rows,
        "files": args.batching_files,
        "number_facts_from": facts_from,
        "runs": runs,
        "ratio_many_to_one": ratio,
        "one_run": runs["many"].get("counts", {}).get("batches") == 1,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _day_calls(serving: Path, day: str) -> int | None:
    """``daily_summary.total_calls`` of ``day`` in the serving file, None while absent."""
    if not serving.exists():
        return None
    try:
        with duckdb.connect(str(serving), read_only=True) as con:
            row = con.execute(
                "SELECT sum(total_calls) FROM daily_summary WHERE call_date = $day::DATE",
                {"day": day},
            ).fetchone()
    except duckdb.Error:
        return None  # being replaced, or its Parquet files are
    return int(row[0]) if row and row[0] is not None else None


def _wait_for_day(
    serving: Path, day: str, calls: int, timeout: float, watch: Path | None = None
) -> tuple[float | None, float | None]:
    """Seconds until the day shows ``calls`` calls (None on time-out), and until ``watch``
    left the landing folder (taken by a run)."""
    started = time.perf_counter()
    taken = None
    while time.perf_counter() - started < timeout:
        if watch is not None and taken is None and not watch.exists():
            taken = time.perf_counter() - started
        if _day_calls(serving, day) == calls:
            return time.perf_counter() - started, taken
        time.sleep(0.2)
    return None, taken


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``dagster dev`` and everything it started (its own process group)."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)  # anyone left in the group?
            except ProcessLookupError:
                break
            process.poll()
            time.sleep(0.2)
        else:
            continue
        break
    process.poll()


def _run_records(home: Path) -> list[Any]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_run_records(filters=dg.RunsFilter(job_name="ingest_batch")))


def _wait_for_runs(home: Path, timeout: float) -> None:
    """Until every ingest run has ended, so that stopping interrupts none of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(record.end_time is not None for record in _run_records(home)):
            return
        time.sleep(1.0)


def _add_run_times(home: Path, repeats: list[dict[str, Any]]) -> None:
    """Where each file's seconds went, from its run in the Dagster instance: waiting for the
    sensor to take it (two looks with the same size and time), for the run to start (queue,
    run worker start-up), the run itself, and the serving file being seen after the run."""
    try:
        records = _run_records(home)
    except Exception as exc:  # the breakdown is extra: never fail the scenario for it
        log(f"freshness: no run times from the instance: {exc}")
        return
    for repeat in repeats:
        for record in records:
            config = record.dagster_run.run_config.get("ops", {}).get("raw_cdrs", {})
            if repeat["file"] not in config.get("config", {}).get("files", []):
                continue
            created = record.create_timestamp.timestamp()
            repeat["sensor_seconds"] = round(created - repeat["renamed_at"], 2)
            if record.start_time is not None:
                repeat["launch_seconds"] = round(record.start_time - created, 2)
                if record.end_time is not None:
                    repeat["run_seconds"] = round(record.end_time - record.start_time, 2)
            repeat["run_status"] = str(record.dagster_run.status.value)


def freshness_scenario(work: Path, args: argparse.Namespace, rates: Path) -> dict[str, Any]:
    """Seconds from a file's rename into the landing folder to its day in daily_summary,
    with ``cdr-pipeline dev`` (webserver and daemon) running the landing sensor."""
    base = datetime.date(2026, 11, 24)
    files: list[tuple[Path, str, int]] = []
    log(f"generating {args.freshness_repeats + 1} freshness files")
    for k in range(args.freshness_repeats + 1):
        day = (base + datetime.timedelta(days=k + 1)).isoformat()
        rows = 1_000 if k == 0 else args.freshness_rows
        extra = ["--files", "1", "--day", day, "--seed", str(args.seed + k + 1)]
        manifest = generate(work / f"source_{k}", args, rows, [*extra, "--prefixes", "10"])
        (path,) = files_of(work / f"source_{k}", manifest, "day")
        files.append((path, day, manifest["sets"]["day"]["expected"]["rows_kept"]))
    home, landing, warehouse = work / "dagster_home", work / "landing", work / "warehouse"
    for folder in (home, landing, warehouse):
        folder.mkdir(parents=True, exist_ok=True)
    env = pipeline_env(landing, rates, warehouse)
    env["DAGSTER_HOME"] = str(home)
    port = _free_port()
    command = [*cdr_pipeline_command(), "dev", "--no-sample", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    serving = warehouse / "cdr.duckdb"
    result: dict[str, Any] = {"rows": args.freshness_rows, "repeats": []}
    log_path = work / "dagster_dev.log"
    with open(log_path, "wb") as dev_log:
        log(f"freshness: starting cdr-pipeline dev on port {port}")
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=dev_log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            land([files[0][0]], landing)
            seconds, _ = _wait_for_day(serving, files[0][1], files[0][2], args.freshness_timeout)
            result["warmup_seconds"] = None if seconds is None else round(seconds, 2)
            result["startup_to_first_rows_seconds"] = round(time.perf_counter() - started, 2)
            if seconds is None:
                raise TimeoutError("the warm-up file never reached daily_summary")
            log(f"freshness: warm-up file in daily_summary after {seconds:.1f} s")
            for k, (path, day, calls) in enumerate(files[1:]):
                # Spread the renames over the sensor's 10 s interval.
                time.sleep(2.0 + 10.0 * k / max(args.freshness_repeats, 1))
                renamed_at = time.time()
                land([path], landing)
                seconds, taken = _wait_for_day(
                    serving, day, calls, args.freshness_timeout, landing / path.name
                )
                result["repeats"].append(
                    {
                        "file": path.name,
                        "day": day,
                        "calls": calls,
                        "renamed_at": renamed_at,
                        "seconds": None if seconds is None else round(seconds, 2),
                        "taken_seconds": None if taken is None else round(taken, 2),
                    }
                )
                log(f"freshness: {path.name}: {_fmt(seconds, 1)} s")
            _wait_for_runs(home, timeout=60.0)
        except TimeoutError as exc:
            result["error"] = str(exc)
        finally:
            _stop_group(process)
    _add_run_times(home, result["repeats"])
    if "error" in result or any(r["seconds"] is None for r in result["repeats"]):
        result["log_tail"] = log_path.read_text(errors="replace").splitlines()[-40:]
    measured = [r["seconds"] for r in result["repeats"] if r["seconds"] is not None]
    result["worst_seconds"] = max(measured) if measured else None
    result["median_seconds"] = sorted(measured)[len(measured) // 2] if measured else None
    return result


# ------------------------------------------------------------------ report


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSION_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def checkout() -> dict[str, Any]:
    """The commit measured and whether the working tree differed from it (read-only git)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
            )
        except OSError:  # no git: a copy of the sources
            return ""
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "changed_paths": [p for p in changed if not p.startswith("benchmarks/")],
    }


def _complete(run: dict[str, Any]) -> bool:
    return run.get("exit_code") == 0 and "rows" in run


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with what was measured (sizes as the issue states them). A
    run that did not finish gives lower bounds: its wall time so far and its memory when it
    was stopped; a bound that already breaks the target is a miss, else no verdict."""
    rows: list[dict[str, Any]] = []
    by_size = {day["rows"]: day["scenarios"] for day in results["days"]}

    def add(
        target: str, measured: float | None, limit: float, unit: str, below: bool, bound: bool
    ) -> None:
        met = None
        if measured is not None:
            met = measured < limit if below else measured <= limit
            if bound and met:
                met = None  # the run stopped before its figure was known
        rows.append(
            {
                "target": target,
                "measured": measured,
                "lower_bound": bound and measured is not None,
                "limit": limit,
                "unit": unit,
                "met": met,
            }
        )

    def ratio(run: dict[str, Any]) -> float | None:
        if "floor" not in run:
            return None
        return round(run["wall_seconds"] / run["floor"]["wall_seconds"], 2)

    big = by_size.get(TARGET_ROWS, {})
    small = by_size.get(BASE_ROWS, {})
    if "cold" in big:
        cold, done = big["cold"], _complete(big["cold"])
        add("10M cold cache: wall <= 8x floor", ratio(cold), 8.0, "x", False, not done)
        peak = round(cold["peak_mib"] * MIB / 1e9, 2)
        add("10M cold cache: peak RSS < 3 GB", peak, 3.0, "GB", True, not done)
    if "warm" in big:
        warm = big["warm"]
        add("10M warm cache: wall <= 4x floor", ratio(warm), 4.0, "x", False, not _complete(warm))
    if "incremental" in big:
        late = big["incremental"]
        add(
            "10,000 rows into the 10M day: wall < 15 s",
            late["wall_seconds"],
            15.0,
            "s",
            True,
            not _complete(late),
        )
    batching = results.get("batching")
    if batching:
        one, many = batching["runs"]["one"], batching["runs"]["many"]
        add(
            f"{batching['files']} files at once: one run, < 2x one file",
            batching.get("ratio_many_to_one") if batching["one_run"] else None,
            2.0,
            "x",
            True,
            not (_complete(one) and _complete(many)),
        )
    freshness = results.get("freshness")
    if freshness:
        add(
            "freshness under the daemon < 45 s",
            freshness.get("worst_seconds"),
            45.0,
            "s",
            True,
            False,
        )
    if "cold" in big and "cold" in small and _complete(small["cold"]):
        add(
            "peak memory 10M / 1M < 3x",
            round(big["cold"]["peak_mib"] / small["cold"]["peak_mib"], 2),
            3.0,
            "x",
            True,
            not _complete(big["cold"]),
        )
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def scenario_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], str, str]]:
    """(label, run, target, met) for every pipeline run, in report order."""
    verdict = {row["target"]: row for row in results["targets"]}

    def met(*names: str) -> tuple[str, str]:
        found = [verdict[n] for n in names if n in verdict]
        if not found:
            return "", ""
        text = "; ".join(
            f"{'<=' if r['unit'] == 'x' and 'floor' in r['target'] else '<'} "
            f"{r['limit']:g} {r['unit']}"
            for r in found
        )
        return text, "; ".join({True: "yes", False: "**no**", None: "n/a"}[r["met"]] for r in found)

    out = []
    for day in results["days"]:
        size = day["rows"]
        ten = size == TARGET_ROWS
        for name, run in day["scenarios"].items():
            target, ok = "", ""
            if ten and name == "cold":
                target, ok = met(
                    "10M cold cache: wall <= 8x floor", "10M cold cache: peak RSS < 3 GB"
                )
            elif ten and name == "warm":
                target, ok = met("10M warm cache: wall <= 4x floor")
            elif ten and name == "incremental":
                target, ok = met("10,000 rows into the 10M day: wall < 15 s")
            if name == "cold":
                label = f"cold cache, {size:,}-row day"
            elif name == "warm":
                label = f"warm cache, {size:,}-row day"
            elif name == "day_in_parts":
                label = (
                    f"the {size:,}-row day in {run.get('parts')} batches, one after the other "
                    "(the base of the next row)"
                )
            elif name == "incremental":
                late = (run.get("expected") or {}).get("rows_read", 0)
                label = f"{late:,} rows into the {size:,}-row day"
            else:
                label = name
            out.append((label, run, target, ok))
    batching = results.get("batching")
    if batching:
        runs = batching["runs"]
        target, ok = met(f"{batching['files']} files at once: one run, < 2x one file")
        if "one_cold" in runs:
            out.append(("batching: 1 file, cold", runs["one_cold"], "", ""))
        out.append(("batching: 1 file, warm", runs["one"], "", ""))
        out.append((f"batching: {batching['files']} files, warm", runs["many"], target, ok))
    return out


def cpu_ratio(run: dict[str, Any]) -> float | None:
    """CPU seconds of the run over the floor's (mean of its runs): less sensitive than wall
    time to other work competing for the cores."""
    floors = run.get("floor", {}).get("runs", [])
    cpu = sum(f["cpu_seconds"] for f in floors) / len(floors) if floors else 0.0
    return round(run["cpu_seconds"] / cpu, 2) if cpu else None


def markdown(results: dict[str, Any]) -> str:
    m, v = results["machine"], results["versions"]
    shares = " | ".join(f"{stage} %" for stage in STAGES)
    lines = [
        f"Measured {results['date']} on {m['cpu_count']} CPUs ({m.get('cpu_model', '?')}), "
        f"{m.get('mem_total_gib', '?')} GiB; "
        + ", ".join(f"{name} {version}" for name, version in v.items())
        + ".",
        "",
        f"    {results['command']}",
        "",
        "| scenario | rows | files | wall s | CPU s | rows/s | floor s | x floor | x floor CPU "
        "| peak RSS MiB | " + shares + " | target | met? |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(STAGES) + "---|---|",
    ]
    runs = scenario_rows(results)
    for label, run, target, ok in runs:
        if "rows" not in run:
            killed = run.get("killed_for_memory")
            floor = run.get("floor", {}).get("wall_seconds")
            cells = [
                label,
                "",
                str(run["files"]),
                f"{'killed' if killed else 'failed'} after {run['wall_seconds']:.0f}",
                f"{run['cpu_seconds']:.0f}",
                "",
                _fmt(floor),
                f">= {run['wall_seconds'] / floor:.1f}" if floor else "",
                "",
                f"{'>= ' if killed else ''}{run['peak_mib']:,.0f}",
                *(f"{run['shares'].get(stage, 0.0):.0f}" for stage in STAGES),
            ]
            lines.append("| " + " | ".join([*cells, target, ok or "**no**"]) + " |")
            continue
        cells = [
            label,
            f"{run['rows']:,}",
            str(run["files"]),
            f"{run['wall_seconds']:.1f}",
            f"{run['cpu_seconds']:.0f}",
            f"{run['rows_per_second']:,}",
            f"{run['floor']['wall_seconds']:.2f}",
            f"{run['ratio_to_floor']:.1f}",
            _fmt(cpu_ratio(run), 1),
            f"{run['peak_mib']:,.0f}",
            *(f"{run['shares'].get(stage, 0.0):.0f}" for stage in STAGES),
        ]
        lines.append("| " + " | ".join([*cells, target, ok]) + " |")
    freshness = results.get("freshness")
    if freshness:
        seconds = ", ".join(_fmt(r["seconds"], 1) or "timed out" for r in freshness["repeats"])
        verdict = [t for t in results["targets"] if t["target"].startswith("freshness")]
        ok = {True: "yes", False: "**no**", None: "n/a"}[verdict[0]["met"]] if verdict else ""
        cells = [
            f"freshness under the daemon: rename -> daily_summary (worst of {seconds} s)",
            f"{freshness['rows']:,}",
            "1",
            _fmt(freshness.get("worst_seconds"), 1),
            *[""] * (6 + len(STAGES)),
        ]
        lines.append("| " + " | ".join([*cells, "< 45 s", ok]) + " |")
    lines += [
        "",
        "Largest memory sample (summed PSS of the process tree, MiB) during each stage:",
        "",
        "| scenario | " + " | ".join(STAGES) + " |",
        "|---|" + "---:|" * len(STAGES),
    ]
    for label, run, _, _ in runs:
        peaks = run.get("stage_peak_mib", {})
        lines.append(
            f"| {label} | " + " | ".join(f"{peaks.get(stage, 0):,}" for stage in STAGES) + " |"
        )
    if freshness and freshness["repeats"]:
        lines += [
            "",
            "Freshness, each file: seconds from rename to rows in daily_summary (of which: until "
            "the sensor's run was created / until the run started / the run):",
            "",
        ]
        for repeat in freshness["repeats"]:
            lines.append(
                f"- {repeat['file']}: {_fmt(repeat['seconds'], 1) or 'timed out'} s "
                f"({_fmt(repeat.get('sensor_seconds'), 1)} / "
                f"{_fmt(repeat.get('launch_seconds'), 1)} / {_fmt(repeat.get('run_seconds'), 1)})"
            )
    lines += ["", "| target (issue) | measured | met? |", "|---|---:|---|"]
    for row in results["targets"]:
        ok = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        bound = ">= " if row.get("lower_bound") else ""
        measured = f"{bound}{_fmt(row['measured'])} {row['unit']}" if row["measured"] else ""
        lines.append(f"| {row['target']} | {measured} | {ok} |")
    return "\n".join(lines) + "\n"


def save_partial(results: dict[str, Any], args: argparse.Namespace) -> None:
    """The figures so far, so that a suite stopped half-way keeps them."""
    if args.json:
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000], help="day sizes")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS)} (warm and incremental run cold)",
    )
    parser.add_argument("--files", type=int, default=24, help="files the day is split into")
    parser.add_argument("--incremental-rows", type=int, default=10_000)
    parser.add_argument(
        "--part-rows",
        type=int,
        default=1_250_000,
        help="when the day fails in one run, land it in batches of about this many rows "
        "before the incremental file",
    )
    parser.add_argument("--batching-rows", type=int, default=100_000)
    parser.add_argument("--batching-files", type=int, default=100)
    parser.add_argument("--freshness-rows", type=int, default=10_000)
    parser.add_argument("--freshness-repeats", type=int, default=3)
    parser.add_argument("--freshness-timeout", type=float, default=240.0, help="seconds")
    parser.add_argument("--carriers", type=int, default=5)
    parser.add_argument("--prefixes", type=int, default=50_000, help="rows per deck")
    parser.add_argument("--malformed-per-file", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample-interval", type=float, default=0.2, help="seconds")
    parser.add_argument(
        "--max-memory-gib",
        type=float,
        default=round(0.6 * machine().get("mem_total_gib", 0), 1) or None,
        help="kill a run whose process tree passes this (default: 60%% of the memory; 0: never)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the warehouses and files")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="only report the results of an earlier run"
    )
    parser.add_argument("--stage", choices=["floor"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("inputs", type=Path, nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that the run in progress is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.stage == "floor":
        print(json.dumps(stage_floor(args.inputs, args.output)))
        return 0
    if args.from_json:
        earlier = json.loads(args.from_json.read_text(encoding="utf-8"))
        for day in earlier["days"]:
            for run in day["scenarios"].values():
                restage(run)
        for run in earlier.get("batching", {}).get("runs", {}).values():
            restage(run)
        return report(earlier, args)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if {"warm", "incremental"} & set(scenarios) and "cold" not in scenarios:
        scenarios.insert(0, "cold")

    command = "python benchmarks/pipeline_bench.py " + " ".join(
        a if "/" not in a else Path(a).name for a in (argv if argv is not None else sys.argv[1:])
    )
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": command.strip(),
        "machine": machine(),
        "versions": versions(),
        "checkout": checkout(),
        "scenarios": scenarios,
        "targets_of_issue": TARGETS,
        "days": [],
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        first_rates = None
        day_sizes = sorted(set(args.rows)) if "cold" in scenarios else []
        prepared = None
        for rows in day_sizes:
            day = day_scenarios(
                work / f"day_{rows}",
                rows,
                scenarios,
                args,
                "batching" in scenarios and not prepared,
            )
            prepared = prepared or day.pop("batching", None)
            results["days"].append(day)
            save_partial(results, args)
            first_rates = first_rates or work / f"day_{rows}" / "source" / "rates"
        if "batching" in scenarios:
            results["batching"] = batching_scenario(work / "batching", args, prepared)
            save_partial(results, args)
            first_rates = first_rates or work / "batching" / "source" / "rates"
        if "freshness" in scenarios:
            if first_rates is None:
                generate(work / "rates_only", args, 1_000, ["--files", "1"])
                first_rates = work / "rates_only" / "rates"
            results["freshness"] = freshness_scenario(work / "freshness", args, first_rates)
        if not args.keep and args.workdir is not None:
            for rows in day_sizes:
                shutil.rmtree(work / f"day_{rows}", ignore_errors=True)
            for name in ("batching", "freshness", "rates_only"):
                shutil.rmtree(work / name, ignore_errors=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        args.json.with_name(args.json.name + ".partial").unlink(missing_ok=True)
    return report(results, args)


RECORDED_LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s (.*)$")


def restage(run: dict[str, Any]) -> None:
    """Stage seconds and shares of a recorded run again, from its recorded lines (so that a
    change in how lines map to stages applies to earlier results; the memory peaks by stage
    stay as recorded)."""
    if "runs" in run:  # the day in parts: the sum of its runs
        for part in run["runs"]:
            restage(part)
        run["stages"] = {
            k: round(sum(r["stages"].get(k, 0.0) for r in run["runs"]), 3) for k in STAGES
        }
    elif "progress" in run:
        lines = [
            (float(m.group(1)), m.group(2))
            for line in run["progress"]
            if (m := RECORDED_LINE.match(line))
        ]
        timing = stage_times(
            lines, run["wall_seconds"], [], finished=not run.get("killed_for_memory")
        )
        run["stages"] = {k: round(v, 3) for k, v in timing["stages"].items()}
        run["steps"] = timing["steps"]
    else:
        return
    run["shares"] = {k: round(100 * v / run["wall_seconds"], 1) for k, v in run["stages"].items()}


def report(results: dict[str, Any], args: argparse.Namespace) -> int:
    """Targets, problems, the JSON and the Markdown of a finished (or re-read) suite."""
    results["targets"] = evaluate(results)
    runs = [run for day in results["days"] for run in day["scenarios"].values()]
    if "batching" in results:
        runs += list(results["batching"]["runs"].values())
    problems = [
        run["scenario"]
        for run in runs
        if run.get("exit_code") != 0 or not all(run.get("checks", {"ran": False}).values())
    ]
    freshness = results.get("freshness")
    if freshness and (freshness.get("error") or freshness.get("worst_seconds") is None):
        problems.append("freshness")
    results["problems"] = problems
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    print(table)
    if problems:
        print(f"problems: {', '.join(problems)}", file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
