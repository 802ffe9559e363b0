"""Warehouse helpers: the writer lock, atomic writes, reading many files without loss."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdr_assets.lib import warehouse as warehouse_module
from cdr_assets.lib.warehouse import (
    MEMORY_LIMIT_ENV,
    Warehouse,
    WarehouseBusy,
    copy_to_parquet_atomic,
    read_parquet_sql,
    remove_stale_temporaries,
    step_connection,
    temporary_sibling,
    write_rows_atomic,
    writer_lock,
)


def test_files_with_different_decimal_scales_read_without_losing_digits(tmp_path: Path) -> None:
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    with duckdb.connect() as con:
        copy_to_parquet_atomic(con, "SELECT 'old' AS k, 0.125::DECIMAL(38,3) AS rate", old)
        copy_to_parquet_atomic(con, "SELECT 'new' AS k, 0.00125::DECIMAL(38,5) AS rate", new)
        rows = con.execute(
            f"SELECT k, rate FROM {read_parquet_sql([old, new])} ORDER BY k"
        ).fetchall()
    assert rows == [("new", Decimal("0.00125")), ("old", Decimal("0.125"))]


def test_a_crashed_write_leaves_no_file_a_reader_would_glob(tmp_path: Path) -> None:
    target = tmp_path / "t" / "b1.parquet"
    with duckdb.connect() as con, pytest.raises(duckdb.Error):
        copy_to_parquet_atomic(con, "SELECT error('boom')", target)
    assert list((tmp_path / "t").glob("*.parquet")) == []
    assert list((tmp_path / "t").iterdir()) == []


def test_the_writer_lock_serialises_writers_and_times_out_clearly(tmp_path: Path) -> None:
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with writer_lock(tmp_path):
            held.set()
            release.wait(5)

    # flock locks belong to open files: a second open in another thread contends like a process.
    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    with (
        pytest.raises(WarehouseBusy, match="being written by another process"),
        writer_lock(tmp_path, timeout_seconds=0.5),
    ):
        pass
    assert time.monotonic() - started >= 0.5
    release.set()
    thread.join()
    with writer_lock(tmp_path, timeout_seconds=0.5):
        pass


def test_landing_order_is_given_once(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    warehouse.register_batch("b2", ["x.csv"])
    warehouse.register_batch("b1", ["y.csv", "a.csv"])
    assert warehouse.unfinished_batches() == ["b1", "b2"]
    assert warehouse.assign_seq("b2") == 1
    assert warehouse.assign_seq("b1") == 2
    assert warehouse.assign_seq("b2") == 1
    assert warehouse.read_manifest("b1").files == ["a.csv", "y.csv"]  # type: ignore[union-attr]


def test_a_batch_is_unfinished_until_the_serving_file_published_it(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    warehouse.register_batch("b1", ["a.csv"])
    warehouse.register_batch("b2", ["b.csv"])
    warehouse.assign_seq("b1")
    # Given its landing order (deduplication started), b1 may still have been killed.
    assert warehouse.unfinished_batches() == ["b1", "b2"]
    warehouse.mark_deduplicated("b1")
    assert warehouse.unfinished_batches() == ["b1", "b2"]
    assert warehouse.mark_published() == ["b1"]
    assert warehouse.unfinished_batches() == ["b2"]
    assert warehouse.mark_published() == []
    assert warehouse.batch_seqs() == {"b1": 1}


def test_a_manifest_from_before_batch_states_is_finished_once_it_has_a_seq(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "batches"
    folder.mkdir()
    (folder / "old.json").write_text('{"batch_id": "old", "seq": 3, "files": ["a.csv"]}')
    (folder / "cut.json").write_text('{"batch_id": "cut", "seq": null, "files": ["b.csv"]}')
    assert Warehouse(tmp_path).unfinished_batches() == ["cut"]


def test_files_another_batch_took_are_left_to_it(tmp_path: Path) -> None:
    warehouse, landing = Warehouse(tmp_path / "w"), tmp_path / "landing"
    landing.mkdir()
    for name in ("moved.csv", "pending.csv", "again.csv", "new.csv"):
        (landing / name).write_text("x")
    warehouse.register_batch("b1", ["moved.csv", "again.csv"], landing)
    (landing / "moved.csv").unlink()  # b1 read it and moved it aside
    warehouse.assign_seq("b1")
    warehouse.mark_deduplicated("b1")
    warehouse.mark_published()
    warehouse.register_batch("b2", ["pending.csv"], landing)  # unfinished: still to read it
    third = warehouse.register_batch(
        "b3", ["moved.csv", "pending.csv", "again.csv", "new.csv"], landing
    )
    # again.csv is in the folder and only a finished batch had that name: a new file.
    assert third.files == ["again.csv", "new.csv"]
    assert third.left_to == {"moved.csv": "b1", "pending.csv": "b2"}
    assert warehouse.read_manifest("b3") == third
    # A rerun keeps the first record.
    assert warehouse.register_batch("b3", ["new.csv"], landing) == third
    # A batch left with no file takes no place in landing order.
    empty = warehouse.register_batch("b4", ["moved.csv"], landing)
    assert empty.files == [] and empty.left_to == {"moved.csv": "b1"}
    assert warehouse.assign_seq("b4") == 0
    assert warehouse.assign_seq("b3") == 2


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped): no process has it now."""
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", ""])
        child.wait()
        try:
            os.kill(child.pid, 0)
        except ProcessLookupError:
            return child.pid
    raise AssertionError("every exited child's pid was taken again at once")


def test_temporaries_of_dead_writers_are_removed_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead, live = _dead_pid(), os.getpid()
    root, outside = tmp_path / "warehouse", tmp_path / "outside.parquet"
    day = root / "cdrs" / "call_date=2026-11-20"

    def sibling(pid: int, path: Path) -> Path:  # the name temporary_sibling gives in ``pid``
        with monkeypatch.context() as m:
            m.setattr(os, "getpid", lambda: pid)
            return temporary_sibling(path)

    stale = [
        sibling(dead, day / "b1.parquet"),
        sibling(dead, root / "landing_rejected" / "b1" / "x.csv.error.txt"),
        root / "raw" / f".b1.parquet.{dead}.tmp",  # ingest._write_arrow_atomic
        root / f".cdr.duckdb.{dead}.tmp",  # serving.publish_serving_file, and its WAL
        root / f".cdr.duckdb.{dead}.tmp.wal",
        root / "number_facts" / "r" / f".part-000003-{dead}.parquet.tmp",
    ]
    kept = [
        day / "b1.parquet",
        sibling(live, day / "b2.parquet"),  # a live writer's
        root / f".cdr.duckdb.{live}.tmp",
        root / "cdr.duckdb",
        root / "_state" / "lock",
        root / "raw" / f"b1.parquet.{dead}.tmp",  # not hidden: no writer's temporary name
        root / "raw" / ".b1.parquet.tmp",  # no pid
        root / "landing_archive" / "b1" / "calls.csv",
        root / f".b9.parquet.{dead}.1.tmp" / "inside.parquet",  # a folder of that name
        outside,
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1")
    link = root / "raw" / f".b3.parquet.{dead}.1.tmp"  # a link of that name: not followed
    link.symlink_to(outside)

    assert sorted(remove_stale_temporaries(root)) == sorted(stale)
    assert [p for p in stale if os.path.lexists(p)] == []
    assert [p for p in kept if not p.is_file()] == []
    assert link.is_symlink() and link.resolve() == outside
    assert remove_stale_temporaries(root) == []


def test_the_writer_lock_clears_stale_temporaries_once_per_process(tmp_path: Path) -> None:
    dead = _dead_pid()
    first = tmp_path / f".b1.parquet.{dead}.tmp"
    first.write_bytes(b"PAR1")
    with writer_lock(tmp_path):
        assert not first.exists()
    second = tmp_path / f".b2.parquet.{dead}.tmp"
    second.write_bytes(b"PAR1")
    with writer_lock(tmp_path):
        pass
    assert second.exists()  # left to the next process's first lock: a walk is not free


def test_a_step_connection_has_a_memory_budget_and_removes_its_spill_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = Warehouse(tmp_path)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "300MB")
    with step_connection(warehouse) as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()
        spill = con.execute("SELECT current_setting('temp_directory')").fetchone()
        assert spill is not None and Path(spill[0]).is_dir()
        assert Path(spill[0]).parent == warehouse.state_dir / "spill"
    assert limit is not None and limit[0] in ("286.1 MiB", "300.0 MB")
    assert not Path(spill[0]).exists()
    monkeypatch.delenv(MEMORY_LIMIT_ENV)
    with step_connection(warehouse) as con:
        row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    assert row is not None and row[0] in ("1.3 GiB", "1.5 GB")


def test_spill_folders_of_dead_steps_are_removed(tmp_path: Path) -> None:
    spill = tmp_path / "_state" / "spill"
    dead = spill / f"{_dead_pid()}.123"
    live = spill / f"{os.getpid()}.456"
    other = spill / "notes"
    for folder in (dead, live, other):
        folder.mkdir(parents=True)
        (folder / "duckdb_temp_block-1.block").write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


# Every type the row-level layers hold, nulls included, and more rows than one streamed batch.
_LAYER_ROWS_SQL = """
SELECT
    'c' || i AS call_id,
    CASE WHEN i % 7 = 0 THEN NULL ELSE ['busy', 'answered'][i % 2 + 1] END AS disposition,
    ['a', 'b', 'c'][i % 3 + 1]::ENUM('a', 'b', 'c') AS region,
    (i / 8)::DECIMAL(38, 4) AS cost,
    TIMESTAMPTZ '2026-11-20 00:00:00+00' + i * INTERVAL 1 SECOND AS start_time,
    TIMESTAMP '2026-11-20 01:00:00' + i * INTERVAL 1 SECOND AS local_start_time,
    DATE '2026-11-20' + (i % 3)::INTEGER AS call_date,
    CASE WHEN i % 5 = 0 THEN [] ELSE ['f' || (i % 4), 'g'] END AS flags,
    [['x', 'y'][i % 2 + 1]::ENUM('x', 'y')] AS zones,
    i AS source_row
FROM range(2500) AS t(i)
"""


def test_streamed_rows_read_back_as_duckdb_would_have_written_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warehouse_module, "STREAM_BATCH_ROWS", 1000)
    streamed, copied = tmp_path / "l" / "streamed.parquet", tmp_path / "copied.parquet"
    with duckdb.connect() as con:
        assert write_rows_atomic(con.sql(_LAYER_ROWS_SQL), streamed) == 2500
        copy_to_parquet_atomic(con, _LAYER_ROWS_SQL, copied)
        types = [con.sql(f"DESCRIBE SELECT * FROM '{p}'").fetchall() for p in (streamed, copied)]
        assert types[0] == types[1]
        for a, b in ((streamed, copied), (copied, streamed)):
            assert con.execute(
                f"SELECT count(*) FROM (FROM '{a}' EXCEPT ALL FROM '{b}')"
            ).fetchall() == [(0,)]
    assert pq.ParquetFile(streamed).metadata.num_row_groups == 3
    # pyarrow reads it with plain types too: no ENUM comes back as a dictionary.
    assert [f.type for f in pq.read_schema(streamed)] == [f.type for f in pq.read_schema(copied)]
    assert [p.name for p in (tmp_path / "l").iterdir()] == ["streamed.parquet"]


def test_a_streamed_write_of_no_rows_still_gives_the_columns(tmp_path: Path) -> None:
    target = tmp_path / "empty.parquet"
    with duckdb.connect() as con:
        assert write_rows_atomic(con.sql(_LAYER_ROWS_SQL + " WHERE false"), target) == 0
        assert [r[0] for r in con.sql(f"DESCRIBE FROM '{target}'").fetchall()][:2] == [
            "call_id",
            "disposition",
        ]
        assert con.execute(f"SELECT count(*) FROM '{target}'").fetchall() == [(0,)]


def test_a_streamed_write_that_fails_midway_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warehouse_module, "STREAM_BATCH_ROWS", 1000)
    folder = tmp_path / "t"
    with duckdb.connect() as con, pytest.raises(duckdb.Error, match="boom"):
        write_rows_atomic(
            con.sql(
                "SELECT CASE WHEN i < 5000 THEN i ELSE error('boom') END AS i FROM range(9000) t(i)"
            ),
            folder / "b1.parquet",
        )
    assert list(folder.iterdir()) == []

    # The writer's failure, on its own thread, stops the write the same way.
    real = warehouse_module.layer_writer
    calls = []

    def failing_writer(path: Path, schema: pa.Schema, **kwargs: bool) -> object:
        writer = real(path, schema, **kwargs)

        class Failing:
            def write_batch(self, batch: pa.RecordBatch) -> None:
                calls.append(batch.num_rows)
                if len(calls) == 2:
                    raise OSError("disk full")
                writer.write_batch(batch)

            def close(self) -> None:
                writer.close()

        return Failing()

    monkeypatch.setattr(warehouse_module, "layer_writer", failing_writer)
    with duckdb.connect() as con, pytest.raises(OSError, match="disk full"):
        write_rows_atomic(con.sql(_LAYER_ROWS_SQL), folder / "b2.parquet")
    assert calls[:2] == [1000, 1000]
    assert list(folder.iterdir()) == []
