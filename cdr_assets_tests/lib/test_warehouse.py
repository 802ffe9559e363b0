"""Warehouse helpers: the writer lock, atomic writes, reading many files without loss."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from cdr_assets.lib.warehouse import (
    Warehouse,
    WarehouseBusy,
    copy_to_parquet_atomic,
    read_parquet_sql,
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
    assert warehouse.unfinished_batches() == []
