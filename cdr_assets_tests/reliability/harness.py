"""What the reliability tests share: a scenario with a clean run to compare against, the
headless run as a subprocess that can be watched and killed, and table comparisons.

Variants (see docs/reliability.md):

- CI (default): small batches, one kill per stage (three more for the open gaps), 1,200
  fuzzed files.
- Full (``CDR_RELIABILITY_FULL=1``): the kill campaign over a 1,000,000-row batch (at least
  20 kills at stages drawn at random), ten times the fuzzed files.

``CDR_RELIABILITY_SEED`` replays a run (every test prints the seed it used);
``CDR_RELIABILITY_ROWS`` and ``CDR_RELIABILITY_KILLS`` change the campaign's size.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from cdr_assets.lib.generate import GeneratorOptions, generate_cdrs, write_landing_files

REPO = Path(__file__).resolve().parents[2]
SHIPPED_RATES = REPO / "rates"

FULL = os.environ.get("CDR_RELIABILITY_FULL", "").strip() == "1"

CONTRACT_TABLES = (
    "cdrs",
    "rejected_cdrs",
    "duplicate_cdrs",
    "landed_files",
    "daily_summary",
    "hourly_traffic",
    "carrier_daily",
    "destination_daily",
    "route_daily",
    "monthly_summary",
)
# Columns that legitimately differ between a clean run and a killed-then-rerun one:
# - batch_id: a run killed before it recorded its batch leaves no trace, and the rerun
#   takes the files as a new batch, whose key is the time it was taken;
# - landed_at: the wall-clock time the batch was validated;
# - stored_path: landing_archive/<batch_id>/<name>, so it carries the batch key (the tests
#   check separately that every stored_path exists).
VARYING_COLUMNS: dict[str, tuple[str, ...]] = {
    "cdrs": ("batch_id",),
    "rejected_cdrs": ("batch_id",),
    "duplicate_cdrs": ("batch_id",),
    "landed_files": ("batch_id", "landed_at", "stored_path"),
}

# The stages of a batch run, in order, as the issue names them.
STAGES = (
    "reading",
    "validating",
    "rating",
    "enriching",
    "writing partitions",
    "publishing the serving file",
)
# The progress line (step name) that ends each stage.
STAGE_END_STEP = {
    "reading": "raw_cdrs:",
    "validating": "validate_cdrs:",
    "rating": "rated_cdrs:",
    "enriching": "enriched_cdrs:",
    "writing partitions": "deduplicate_cdrs: marts refreshed",
    "publishing the serving file": "serving_db:",
}
STAGE_START_STEP = {
    "reading": "rate_decks:",
    "validating": "raw_cdrs:",
    "rating": "validate_cdrs:",
    "enriching": "rated_cdrs:",
    "writing partitions": "enriched_cdrs:",
    "publishing the serving file": "deduplicate_cdrs: marts refreshed",
}


def seed_for(test: str) -> int:
    """The seed of a randomised test: CDR_RELIABILITY_SEED, else a fresh one; printed."""
    text = os.environ.get("CDR_RELIABILITY_SEED", "").strip()
    seed = int(text) if text else random.SystemRandom().randrange(2**32)
    print(f"{test}: seed {seed} (replay with CDR_RELIABILITY_SEED={seed})")
    return seed


def env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    return int(text) if text else default


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("cdr-pipeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cdr_assets.cli"]


def pipeline_env(landing: Path, warehouse: Path) -> dict[str, str]:
    """This environment without any CDR_* setting or DAGSTER_HOME, plus the test's folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_") and k != "DAGSTER_HOME"}
    env.update(
        CDR_LANDING_DIR=str(landing),
        CDR_WAREHOUSE_DIR=str(warehouse),
        CDR_RATES_DIR=str(SHIPPED_RATES),
        # Keyed hashes of caller numbers come out the same in every warehouse.
        CDR_CALLER_HASH_KEY="reliability-tests",
    )
    return env


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class _StepTimes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.times: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.times.append((time.monotonic(), record.getMessage()))


def process_in_process(env: dict[str, str]) -> tuple[int, list[tuple[float, str]]]:
    """``cdr-pipeline process`` in this interpreter (the same entry point, no start-up cost).

    Returns the exit code and the step lines with the time each was logged.
    """
    from cdr_assets.cli import main
    from cdr_assets.defs.reporting import PROGRESS_LOGGER

    handler = _StepTimes()
    logger = logging.getLogger(PROGRESS_LOGGER)
    logger.addHandler(handler)
    try:
        with environment(env), contextlib.redirect_stdout(sys.stderr):
            code = main(["process"])
    finally:
        logger.removeHandler(handler)
    return code, handler.times


def stage_seconds(times: list[tuple[float, str]]) -> dict[str, float]:
    """How long each stage took in a run, from its step lines."""

    def at(fragment: str) -> float | None:
        return next((t for t, line in times if line.startswith(fragment)), None)

    out = {}
    for stage in STAGES:
        start, end = at(STAGE_START_STEP[stage]), at(STAGE_END_STEP[stage])
        if stage == "publishing the serving file" and end is not None:
            # serving_db starts after whatever step logged last before it.
            start = max((t for t, _ in times if t < end), default=start)
        if start is not None and end is not None:
            out[stage] = max(end - start, 0.05)
    return out


# --- the headless run as a subprocess ---------------------------------------------------


class ProcessRun:
    """``cdr-pipeline process`` (or another command) as a subprocess in its own process group,
    its output collected line by line as it comes."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None) -> None:
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            args or [*cli_command(), "process"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own group: a kill takes any worker it started too
        )
        self.err: list[str] = []
        self.out: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.err), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.out), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def saw(self, fragment: str) -> bool:
        with self._changed:
            return any(fragment in line for line in self.err)

    def wait_for_line(self, fragment: str, timeout: float) -> bool:
        """True once a progress line holds ``fragment``; False if the run ended first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if any(fragment in line for line in self.err):
                    return True
                if self.popen.poll() is not None or time.monotonic() > deadline:
                    return any(fragment in line for line in self.err)
                self._changed.wait(0.05)

    def wait_until(
        self, condition: Callable[[], bool], timeout: float, poll: float = 0.002
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.popen.poll() is not None:
                return condition()
            time.sleep(poll)
        return False

    def kill(self) -> bool:
        """SIGKILL the run's process group; True when it was still running."""
        if self.popen.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(30)
        return self.popen.returncode == -signal.SIGKILL

    def finish(self, timeout: float) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the run did not end within {timeout:.0f} s:\n" + "\n".join(self.err[-20:])
            ) from None
        for reader in self._readers:
            reader.join(10)
        return code

    def transcript(self) -> str:
        return "\n".join(["-- stderr", *self.err[-40:], "-- stdout", *self.out[-40:]])


# --- warehouse inspection ---------------------------------------------------------------


def manifests(warehouse: Path) -> dict[str, dict[str, object]]:
    folder = warehouse / "batches"
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        with contextlib.suppress(FileNotFoundError):
            data = json.loads(path.read_text(encoding="utf-8"))
            out[str(data["batch_id"])] = data
    return out


def _select(table: str) -> str:
    varying = VARYING_COLUMNS.get(table)
    return f"SELECT * EXCLUDE ({', '.join(varying)})" if varying else "SELECT *"


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def materialise(serving: Path, dest: Path) -> dict[str, int]:
    """Copy every contract table (without VARYING_COLUMNS) of a serving file into ``dest``."""
    counts = {}
    with duckdb.connect(str(dest)) as con:
        con.execute(f"ATTACH {_quoted(serving)} AS s (READ_ONLY)")
        for table in CONTRACT_TABLES:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS {_select(table)} FROM s.{table}")
            row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
        con.execute("DETACH s")
    return counts


def differences(serving: Path, clean: Path, warehouse: Path | None = None) -> dict[str, str]:
    """Per contract table, how the served table differs from the clean run's (empty: none)."""
    if not serving.exists():
        return {"cdr.duckdb": f"{serving} does not exist"}
    out = {}
    with duckdb.connect() as con:
        con.execute(f"ATTACH {_quoted(clean)} AS c (READ_ONLY)")
        con.execute(f"ATTACH {_quoted(serving)} AS s (READ_ONLY)")
        for table in CONTRACT_TABLES:
            ours = f"{_select(table)} FROM s.{table}"
            theirs = f"SELECT * FROM c.{table}"
            missing = con.execute(f"SELECT count(*) FROM ({theirs} EXCEPT ALL {ours})").fetchone()
            extra = con.execute(f"SELECT count(*) FROM ({ours} EXCEPT ALL {theirs})").fetchone()
            if (missing and missing[0]) or (extra and extra[0]):
                sample = con.execute(f"{ours} EXCEPT ALL {theirs} LIMIT 3").fetchall()
                out[table] = (
                    f"{missing[0] if missing else '?'} rows of the clean run missing, "
                    f"{extra[0] if extra else '?'} rows the clean run does not have; e.g. {sample}"
                )
        if warehouse is not None:
            stored = con.execute("SELECT stored_path FROM s.landed_files").fetchall()
            lost = [p for (p,) in stored if not (warehouse / p).exists()]
            if lost:
                out["landed_files.stored_path"] = f"files not where landed_files says: {lost}"
    return out


@dataclass
class Visibility:
    """What a reader could see in a warehouse at one moment."""

    published_files: int
    temporary_files: list[str]
    problems: list[str] = field(default_factory=list)
    served_counts: dict[str, int] = field(default_factory=dict)


def inspect_visible(warehouse: Path) -> Visibility:
    """Open everything a reader would open: every published Parquet file (name not starting
    with '.'), the batch manifests and the serving file; list the temporary files."""
    problems: list[str] = []
    published = 0
    temporary = []
    for path in sorted(warehouse.rglob("*")):
        if not path.is_file():
            continue
        relative = str(path.relative_to(warehouse))
        if any(part.startswith(".") for part in path.relative_to(warehouse).parts):
            temporary.append(relative)
            if path.name.endswith((".parquet", ".duckdb", ".json")):
                problems.append(f"a temporary file has a published name: {relative}")
            continue
        if path.suffix == ".parquet":
            published += 1
            try:
                pq.ParquetFile(path).metadata  # noqa: B018 - the footer is what a torn file lacks
            except Exception as exc:
                problems.append(f"{relative}: not a complete Parquet file ({exc})")
        elif path.parent.name == "batches" and path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                problems.append(f"{relative}: not complete JSON ({exc})")
    counts: dict[str, int] = {}
    serving = warehouse / "cdr.duckdb"
    if serving.exists():
        try:
            with duckdb.connect(str(serving), read_only=True) as con:
                for table in CONTRACT_TABLES:
                    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
                    counts[table] = int(row[0]) if row else 0
        except duckdb.Error as exc:
            problems.append(f"cdr.duckdb cannot be read: {exc}")
    return Visibility(published, temporary, problems, counts)


# --- the scenario -------------------------------------------------------------------------


@dataclass
class Scenario:
    """A warehouse that already holds one batch (so a serving file exists), a second batch of
    files, and the tables a clean run of that batch gives.

    The warehouse and landing folders keep their paths from trial to trial (the serving
    file's views hold absolute paths): ``restore`` puts back the state before the batch.
    """

    root: Path
    rows: int
    landing: Path
    warehouse: Path
    pristine: Path
    batch_files: Path
    clean: Path
    base_counts: dict[str, int]
    clean_counts: dict[str, int]
    stage_seconds: dict[str, float]
    clean_seconds: float

    @property
    def env(self) -> dict[str, str]:
        return pipeline_env(self.landing, self.warehouse)

    @property
    def serving(self) -> Path:
        return self.warehouse / "cdr.duckdb"

    def restore(self) -> None:
        shutil.rmtree(self.warehouse, ignore_errors=True)
        shutil.copytree(self.pristine, self.warehouse, symlinks=True)
        shutil.rmtree(self.landing, ignore_errors=True)
        shutil.copytree(self.batch_files, self.landing, symlinks=True)

    def new_batches(self) -> dict[str, dict[str, object]]:
        base = set(manifests(self.pristine))
        return {k: v for k, v in manifests(self.warehouse).items() if k not in base}

    def landing_untouched(self) -> bool:
        return all((self.landing / p.name).exists() for p in self.batch_files.iterdir())

    def differences(self) -> dict[str, str]:
        return differences(self.serving, self.clean, self.warehouse)


HOSTILE_NAME = "it's $(touch pwned); `touch pwned` & x.csv"
HOSTILE_CSV = (
    "call_id,caller_number,called_number,start_time,duration_seconds,carrier_id\n"
    '"q\'); DROP TABLE cdrs; --",+12025550123,+442079460958,{day}T10:00:00Z,60,carrier_001\n'
    '"=HYPERLINK(""http://x"")",+12025550123,+442079460958,{day}T11:00:00Z,30,carrier_002\n'
    '"$(touch pwned)",+12025550123,+442079460958,{day}T12:00:00Z,x,carrier_001\n'
)


def build_scenario(root: Path, rows: int, seed: int = 202) -> Scenario:
    """Generate the files, run the first batch, then the second batch once, cleanly."""
    start = datetime.now(UTC).date() - timedelta(days=5)
    landing, warehouse = root / "work" / "landing", root / "work" / "warehouse"
    batch_files = root / "batch"
    # The earlier batch: a few hundred calls whose call ids the batch repeats (duplicates
    # across batches) and one file the batch replays under another name.
    base_table = generate_cdrs(GeneratorOptions(rows=600, seed=101, start_date=start, days=3))
    write_landing_files(base_table, landing, prefix="base", formats=("csv", "ndjson"), files=2)
    table = generate_cdrs(GeneratorOptions(rows=rows, seed=seed, start_date=start, days=3))
    write_landing_files(
        table,
        batch_files,
        prefix="calls",
        formats=("csv", "ndjson.gz", "parquet", "json", "csv.gz"),
        files=5,
    )
    shutil.copy2(landing / "base_0000.csv", batch_files / "calls_replay.csv")
    packed = gzip.compress((landing / "base_0001.ndjson").read_bytes())
    (batch_files / "zz_truncated.csv.gz").write_bytes(packed[: len(packed) // 2])
    (batch_files / HOSTILE_NAME).write_text(HOSTILE_CSV.format(day=start.isoformat()))
    env = pipeline_env(landing, warehouse)
    code, _ = process_in_process(env)
    assert code == 0, "the first batch failed"
    pristine = root / "pristine"
    shutil.copytree(warehouse, pristine, symlinks=True)
    scenario = Scenario(
        root=root,
        rows=rows,
        landing=landing,
        warehouse=warehouse,
        pristine=pristine,
        batch_files=batch_files,
        clean=root / "clean.duckdb",
        base_counts=inspect_visible(warehouse).served_counts,
        clean_counts={},
        stage_seconds={},
        clean_seconds=0.0,
    )
    scenario.restore()
    started = time.monotonic()
    code, times = process_in_process(env)
    scenario.clean_seconds = time.monotonic() - started
    assert code == 0, "the clean run failed"
    scenario.stage_seconds = stage_seconds(times)
    scenario.clean_counts = materialise(scenario.serving, scenario.clean)
    assert not list(landing.iterdir()), "the clean run left files in the landing folder"
    return scenario


# --- kills -------------------------------------------------------------------------------


@dataclass
class Kill:
    """One SIGKILL of a run: where it was aimed, what the run had done, what a reader saw."""

    stage: str
    delay: float  # seconds after the stage was seen to start
    killed: bool  # the process was running when the signal was sent
    overshot: bool = False  # the stage had ended before the signal: not a kill in that stage
    last_line: str = ""
    files_moved: bool = False
    landing_order_assigned: bool = False
    visibility: Visibility | None = None


def _stage_started(run: ProcessRun, scenario: Scenario, stage: str, timeout: float) -> bool:
    if stage == "reading":
        return run.wait_until(lambda: bool(scenario.new_batches()), timeout)
    if stage == "writing partitions":
        return run.wait_until(
            lambda: any(b.get("seq") is not None for b in scenario.new_batches().values()),
            timeout,
        )
    if stage == "publishing the serving file":
        return run.wait_until(lambda: any(scenario.warehouse.glob(".cdr.duckdb.*.tmp")), timeout)
    return run.wait_for_line(STAGE_START_STEP[stage], timeout)


def kill_in_stage(scenario: Scenario, stage: str, delay: float, timeout: float = 600) -> Kill:
    """Start ``cdr-pipeline process``, SIGKILL it ``delay`` seconds into ``stage``, and look
    at the warehouse as a reader would. The scenario must have been restored (or left by an
    earlier kill)."""
    run = ProcessRun(scenario.env)
    try:
        if not _stage_started(run, scenario, stage, timeout):
            run.finish(60)
            raise AssertionError(f"the run never reached {stage}:\n{run.transcript()}")
        if delay:
            time.sleep(delay)
        overshot = run.saw(STAGE_END_STEP[stage])
        if stage == "publishing the serving file":
            overshot = overshot or not any(scenario.warehouse.glob(".cdr.duckdb.*.tmp"))
        if stage in ("validating", "rating", "enriching"):
            # Past this point the batch is being deduplicated: another stage.
            overshot = overshot or any(
                b.get("seq") is not None for b in scenario.new_batches().values()
            )
        killed = False if overshot else run.kill()
    finally:
        if run.alive():
            run.kill()
    with run._changed:
        last = run.err[-1] if run.err else ""
    return Kill(
        stage=stage,
        delay=delay,
        killed=killed,
        overshot=overshot or not killed,
        last_line=last[:160],
        files_moved=not scenario.landing_untouched(),
        landing_order_assigned=any(
            b.get("seq") is not None for b in scenario.new_batches().values()
        ),
        visibility=inspect_visible(scenario.warehouse),
    )
