"""Concurrent use: two headless runs at once, a run beside a sensor-launched run, a run
while another writer holds the warehouse, and BI readers holding files open during a run.

Races are made deterministic with the warehouse writer lock (``_state/lock``, the lock every
writing step takes): the test holds it until every contender has listed the landing folder,
then lets them go.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdr_assets.lib.warehouse import writer_lock
from cdr_assets_tests.reliability.harness import (
    CONTRACT_TABLES,
    ProcessRun,
    Scenario,
    process_in_process,
)

RUN_TIMEOUT = 900
# What the daemon does for one sensor tick: the landing sensor's two looks, then the run it
# requests, executed like the run worker executes it.
SENSOR_RUN = """
import sys
import dagster as dg
from cdr_assets.definitions import defs
from cdr_assets.defs.ingest.sensors import INGEST_JOB_NAME, landing_sensor
from cdr_assets.defs.partitions import landing_batches
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib.settings import Settings

resource = CdrPipeline.from_settings(Settings.from_env())
with dg.DagsterInstance.ephemeral() as instance:
    cursor = None
    for _ in range(2):
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"cdr": resource}
        )
        result = landing_sensor(context)
        cursor = result.cursor
    request = result.run_requests[0]
    files = request.run_config["ops"]["raw_cdrs"]["config"]["files"]
    print(f"sensor took {len(files)} files", file=sys.stderr, flush=True)
    instance.add_dynamic_partitions(landing_batches.name, [request.partition_key])
    run = defs.resolve_job_def(INGEST_JOB_NAME).execute_in_process(
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources={"cdr": resource},
        raise_on_error=False,
    )
    sys.exit(0 if run.success else 1)
"""


def _started_together(runs: list[tuple[ProcessRun, str]]) -> None:
    """Hold the writer lock until every run has listed the landing folder."""
    for run, listed in runs:
        assert run.wait_for_line(listed, 300), run.transcript()


def test_two_process_runs_at_once_give_the_tables_of_one_run(scenario: Scenario) -> None:
    scenario.restore()
    with writer_lock(scenario.warehouse):
        first, second = ProcessRun(scenario.env), ProcessRun(scenario.env)
        _started_together([(first, "files in"), (second, "files in")])
    codes = [first.finish(RUN_TIMEOUT), second.finish(RUN_TIMEOUT)]
    assert codes == [0, 0], first.transcript() + second.transcript()
    assert scenario.differences() == {}, first.transcript() + second.transcript()


def test_a_process_run_beside_a_sensor_run_gives_the_tables_of_one_run(
    scenario: Scenario,
) -> None:
    scenario.restore()
    with writer_lock(scenario.warehouse):
        sensor = ProcessRun(scenario.env, [sys.executable, "-c", SENSOR_RUN])
        process = ProcessRun(scenario.env)
        _started_together([(sensor, "sensor took"), (process, "files in")])
    codes = [sensor.finish(RUN_TIMEOUT), process.finish(RUN_TIMEOUT)]
    assert codes == [0, 0], sensor.transcript() + process.transcript()
    assert scenario.differences() == {}, sensor.transcript() + process.transcript()


# --- one run beside another writer and two readers ---------------------------------------


@dataclass
class Observed:
    waited_for_the_lock: bool
    code: int
    transcript: str
    differences: dict[str, str]
    held_counts_before: dict[str, int]
    held_counts_after: dict[str, int] = field(default_factory=dict)
    held_errors: list[str] = field(default_factory=list)
    parquet_before: pa.Table | None = None
    parquet_after: pa.Table | None = None
    parquet_replaced: bool = False


def _counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    out = {}
    for table in CONTRACT_TABLES:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        out[table] = int(row[0]) if row else 0
    return out


def _totals(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    summed = con.execute("SELECT coalesce(sum(total_calls), 0) FROM daily_summary").fetchone()
    calls = con.execute("SELECT count(*) FROM cdrs").fetchone()
    return int(summed[0]) if summed else -1, int(calls[0]) if calls else -1


@pytest.fixture(scope="module")
def observed(scenario: Scenario) -> Observed:
    """Readers open, another writer holding the lock: start a run, let the writer go."""
    scenario.restore()
    reader = duckdb.connect(str(scenario.serving), read_only=True)
    marts_file = sorted((scenario.warehouse / "daily_summary").glob("*.parquet"))[-1]
    handle: IO[bytes] = open(marts_file, "rb")  # noqa: SIM115 - held open across the run
    try:
        before = Observed(
            waited_for_the_lock=False,
            code=-1,
            transcript="",
            differences={},
            held_counts_before=_counts(reader),
            parquet_before=pq.ParquetFile(handle).read(),
        )
        inode = marts_file.stat().st_ino
        with writer_lock(scenario.warehouse):  # a sensor run's step is writing
            run = ProcessRun(scenario.env)
            assert run.wait_for_line("rate_decks:", 300), run.transcript()
            time.sleep(3)
            before.waited_for_the_lock = run.alive() and not run.saw("raw_cdrs:")
        before.code = run.finish(RUN_TIMEOUT)
        before.transcript = run.transcript()
        before.parquet_replaced = marts_file.stat().st_ino != inode
        before.parquet_after = pq.ParquetFile(handle).read()
        try:
            before.held_counts_after = _counts(reader)
        except duckdb.Error as exc:
            before.held_errors.append(str(exc))
        before.differences = scenario.differences()
        return before
    finally:
        handle.close()
        reader.close()


def test_a_run_waits_for_another_writer_and_readers_holding_files_block_nothing(
    observed: Observed,
) -> None:
    # Another writer held the lock: the run waited, then finished as one clean run.
    assert observed.waited_for_the_lock, observed.transcript
    assert observed.code == 0, observed.transcript
    assert observed.differences == {}
    # The run replaced the Parquet file the reader holds (a day it touched): the reader
    # still reads the complete old file.
    assert observed.parquet_replaced
    assert observed.parquet_after is not None and observed.parquet_before is not None
    assert observed.parquet_after.equals(observed.parquet_before)
    # The reader holding the old cdr.duckdb can still query every table...
    assert observed.held_errors == []
    assert set(observed.held_counts_after) == set(CONTRACT_TABLES)
    # ... and its batch-level tables are its snapshot, not the new run's.
    for table in ("cdrs", "rejected_cdrs", "duplicate_cdrs", "landed_files"):
        assert observed.held_counts_after[table] == observed.held_counts_before[table]


def test_a_reader_holding_the_serving_file_keeps_a_consistent_snapshot(
    scenario: Scenario,
) -> None:
    scenario.restore()
    with duckdb.connect(str(scenario.serving), read_only=True) as reader:
        before = _counts(reader), _totals(reader)
        code, _ = process_in_process(scenario.env)
        after = _counts(reader), _totals(reader)
    assert code == 0
    # The held file's marts count the calls its cdrs hold, before and after the run.
    assert before[1][0] == before[1][1]
    assert after == before
    # A new connection sees the run's batch, consistent again.
    with duckdb.connect(str(scenario.serving), read_only=True) as fresh:
        summed, calls = _totals(fresh)
    assert summed == calls > before[1][1]
