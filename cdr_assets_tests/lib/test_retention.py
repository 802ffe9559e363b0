"""Retention: exactly the expired items go, nothing inside a window is touched, twice is safe."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdr_assets.lib import ingest
from cdr_assets.lib.retention import (
    RetentionPlan,
    RetentionPolicy,
    apply_retention,
    plan_retention,
)
from cdr_assets.lib.serving import publish_serving_file
from cdr_assets.lib.settings import Settings
from cdr_assets.lib.warehouse import DAY_CACHE_DIRS, Warehouse, sql_file_list, writer_lock
from cdr_assets_tests.lib.test_ingest import HEADER, SHIPPED_RATES, drop, line, run_batch

# With the defaults on this day: batch layers before 2026-10-26 go, refused data and cdrs
# call dates before 2025-10-21 go, marts stay.
TODAY = date(2026, 11, 25)
BATCH_CUT = date(2026, 10, 26)
LONG_CUT = date(2025, 10, 21)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def put(path: Path, rows: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"n": list(range(rows))}), path)


def put_text(path: Path, text: str = "x\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def add_batch(
    warehouse: Warehouse,
    batch_id: str,
    landed_at: list[datetime] | None,
    *,
    finished: bool = True,
    manifest_mtime: datetime | None = None,
) -> None:
    """A batch with a file in every per-batch place, landed at ``landed_at`` (latest counts)."""
    warehouse.register_batch(batch_id, ["calls.csv", "broken.csv"])
    if finished:
        warehouse.assign_seq(batch_id)
        warehouse.mark_deduplicated(batch_id)
        warehouse.mark_published()
    for table in ("raw", "validated", "rated", "enriched", "rejected_cdrs", "duplicate_cdrs"):
        put(warehouse.batch_file(table, batch_id))
    put(warehouse.root / "raw" / f"{batch_id}.files.parquet")
    put_text(warehouse.archive_dir(batch_id) / "calls.csv", "call_id\nc1\n")
    put_text(warehouse.archive_dir(batch_id) / "sub" / "nested.csv")
    put_text(warehouse.rejected_files_dir(batch_id) / "broken.csv", "\x00\x01")
    put_text(warehouse.rejected_files_dir(batch_id) / "broken.csv.error.txt", "unreadable\n")
    if landed_at is not None:
        path = warehouse.batch_file("landed_files", batch_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "source_file": [f"f{i}.csv" for i in range(len(landed_at))],
                    "batch_id": [batch_id] * len(landed_at),
                    "landed_at": pa.array(landed_at, pa.timestamp("us", tz="UTC")),
                }
            ),
            path,
        )
    if manifest_mtime is not None:
        stamp = manifest_mtime.timestamp()
        os.utime(warehouse.manifest_path(batch_id), (stamp, stamp))


def batch_layer_files(batch_id: str) -> set[str]:
    return {
        f"raw/{batch_id}.parquet",
        f"raw/{batch_id}.files.parquet",
        f"validated/{batch_id}.parquet",
        f"rated/{batch_id}.parquet",
        f"enriched/{batch_id}.parquet",
        f"landing_archive/{batch_id}/calls.csv",
        f"landing_archive/{batch_id}/sub/nested.csv",
    }


def refused_files(batch_id: str) -> set[str]:
    return {
        f"rejected_cdrs/{batch_id}.parquet",
        f"duplicate_cdrs/{batch_id}.parquet",
        f"landing_rejected/{batch_id}/broken.csv",
        f"landing_rejected/{batch_id}/broken.csv.error.txt",
    }


def build_warehouse(root: Path) -> Warehouse:
    """Files on both sides of every cut."""
    warehouse = Warehouse(root)
    # batch layers: one day past the cut goes, the boundary day and later stay.
    add_batch(warehouse, "20261025T120000000000Z", [utc("2026-10-25T23:59:59+00:00")])
    add_batch(warehouse, "20261026T000000000000Z", [utc("2026-10-26T00:00:00+00:00")])
    # the latest landed_at counts, in UTC: 23:30 at -02:00 is the next day, inside.
    add_batch(
        warehouse,
        "late-file",
        [utc("2026-09-01T10:00:00+00:00"), utc("2026-10-25T23:30:00-02:00")],
    )
    add_batch(warehouse, "20261124T080000000000Z", [utc("2026-11-24T08:00:00+00:00")])
    # refused data: past the long cut goes; exactly on it stays (its layers go).
    add_batch(warehouse, "ancient", [utc("2025-10-20T12:00:00+00:00")])
    add_batch(warehouse, "ancient-edge", [utc("2025-10-21T00:00:00+00:00")])
    # never deduplicated: kept whatever its age.
    add_batch(warehouse, "unfinished", [utc("2025-01-01T00:00:00+00:00")], finished=False)
    # no landed_files: the manifest's modification time tells the age.
    add_batch(warehouse, "manual-old", None, manifest_mtime=utc("2026-10-01T00:00:00+00:00"))
    add_batch(warehouse, "manual-new", None, manifest_mtime=utc("2026-11-20T00:00:00+00:00"))
    # cdrs by call date.
    for day in ("2025-10-20", "2025-10-21", "2026-11-20"):
        put(warehouse.cdrs_file(day, "20261124T080000000000Z"))
        put(warehouse.cdrs_file(day, "ancient"))
    put(warehouse.cdrs_dir / "call_date=not-a-day" / "x.parquet")
    # the caches of per-file aggregates of a day's cdrs go with the day's cdrs.
    for day in ("2025-10-20", "2026-11-20"):
        for cache in DAY_CACHE_DIRS:
            put(root / "_state" / cache / day / "20261124T080000000000Z.0123456789abcdef.parquet")
    # marts, exports and the rest: kept by default.
    for table, key in [
        ("daily_summary", "2020-01-01"),
        ("daily_summary", "2026-10-25"),
        ("daily_summary", "2026-10-26"),
        ("route_daily", "2026-10-25"),
        ("carrier_daily", "2026-10-25"),
        ("hourly_traffic", "2026-11-24"),
        ("fraud_alerts", "2026-10-25"),
        ("fraud_alerts", "2026-10-26"),
        ("daily_summary", "summary-notes"),
        ("monthly_summary", "2020-01"),
        ("monthly_summary", "2026-09"),
        ("monthly_summary", "2026-10"),
        ("monthly_summary", "2026-11"),
    ]:
        put(root / table / f"{key}.parquet")
    put_text(root / "exports" / "billing" / "2020-01" / "carrier_001.csv")
    put(root / "number_facts" / "v1" / "facts.parquet")
    put_text(root / "rate_decks" / "v1" / "carriers.csv")
    put_text(root / "cdr.duckdb", "not really a database")
    return warehouse


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (size, mtime), but the writer lock's."""
    out = {}
    for path in root.rglob("*"):
        if (path.is_file() or path.is_symlink()) and path != root / "_state" / "lock":
            stat = path.lstat()
            out[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return out


EXPIRED_BATCHES = ("20261025T120000000000Z", "ancient", "ancient-edge", "manual-old")


def expected_default_deletions() -> set[str]:
    expected: set[str] = set()
    for batch_id in EXPIRED_BATCHES:
        expected |= batch_layer_files(batch_id)
    expected |= refused_files("ancient")
    expected |= {
        "cdrs/call_date=2025-10-20/20261124T080000000000Z.parquet",
        "cdrs/call_date=2025-10-20/ancient.parquet",
    } | {
        f"_state/{cache}/2025-10-20/20261124T080000000000Z.0123456789abcdef.parquet"
        for cache in DAY_CACHE_DIRS
    }
    return expected


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return build_warehouse(tmp_path / "warehouse")


def test_the_dry_run_lists_exactly_the_expired_items_and_deletes_nothing(
    warehouse: Warehouse,
) -> None:
    before = listing(warehouse.root)
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    assert listing(warehouse.root) == before

    assert sorted(plan.batch_ids) == sorted(EXPIRED_BATCHES)
    assert sorted(plan.expired_batches) == sorted(EXPIRED_BATCHES)
    assert plan.rejected_batch_ids == ("ancient",)
    assert plan.call_dates == ("2025-10-20",)
    assert plan.mart_partitions == ()
    planned_files = set()
    for planned in plan.paths:
        if planned.is_dir:
            planned_files |= {
                p.relative_to(warehouse.root).as_posix()
                for p in planned.path.rglob("*")
                if p.is_file()
            }
        else:
            planned_files.add(planned.path.relative_to(warehouse.root).as_posix())
    assert planned_files == expected_default_deletions()
    assert plan.total_bytes == sum(before[f][0] for f in expected_default_deletions())
    assert any("unfinished" in s and "not finished yet" in s for s in plan.skipped)


def test_apply_deletes_exactly_the_plan_and_nothing_inside_a_window(
    warehouse: Warehouse,
) -> None:
    before = listing(warehouse.root)
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    with writer_lock(warehouse.root):
        report = apply_retention(warehouse, plan)

    after = listing(warehouse.root)
    expected = expected_default_deletions()
    # Every file that stays is untouched (same size, same modification time).
    assert after == {k: v for k, v in before.items() if k not in expected}
    assert report.errors == ()
    assert report.already_gone == 0
    assert report.total_bytes == sum(before[f][0] for f in expected)
    assert report.counts["batch"] == 4 * 6  # five layer files and the archive folder
    assert report.counts["rejected"] == 3
    assert report.counts["cdrs"] == 2 + len(DAY_CACHE_DIRS)  # the two files, the caches
    assert report.counts["marts"] == 0
    assert sorted(report.batch_ids) == sorted(EXPIRED_BATCHES)
    assert sorted(report.batch_partitions) == sorted(EXPIRED_BATCHES)
    assert report.call_dates == ("2025-10-20",)
    assert report.serving_stale
    for batch_id in EXPIRED_BATCHES:
        assert not warehouse.archive_dir(batch_id).exists()
    assert not (warehouse.cdrs_dir / "call_date=2025-10-20").exists()
    assert warehouse.cdrs_days() == ["2025-10-21", "2026-11-20", "not-a-day"]


def test_boundary_days_unfinished_batches_and_the_audit_trail_are_kept(
    warehouse: Warehouse,
) -> None:
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    with writer_lock(warehouse.root):
        apply_retention(warehouse, plan)
    remaining = set(listing(warehouse.root))
    # A day exactly N days old is inside its window.
    assert batch_layer_files("20261026T000000000000Z") <= remaining
    assert batch_layer_files("late-file") <= remaining
    assert refused_files("ancient-edge") <= remaining
    assert "cdrs/call_date=2025-10-21/ancient.parquet" in remaining
    # Never deduplicated: every file kept although it landed long ago.
    assert batch_layer_files("unfinished") | refused_files("unfinished") <= remaining
    # The audit trail of every batch stays.
    for batch_id in (*EXPIRED_BATCHES, "unfinished"):
        assert f"batches/{batch_id}.json" in remaining
    for batch_id in ("ancient", "ancient-edge", "20261025T120000000000Z"):
        assert f"landed_files/{batch_id}.parquet" in remaining
    assert Warehouse(warehouse.root).batch_seqs().keys() >= set(EXPIRED_BATCHES)


def test_marts_are_kept_by_default_and_go_by_day_or_whole_month_when_configured(
    warehouse: Warehouse,
) -> None:
    assert plan_retention(warehouse, RetentionPolicy(), TODAY).mart_partitions == ()

    policy = RetentionPolicy(batch_days=None, rejected_days=None, cdrs_days=None, marts_days=30)
    plan = plan_retention(warehouse, policy, TODAY)
    assert sorted(plan.mart_partitions) == [
        "carrier_daily/2026-10-25",
        "daily_summary/2020-01-01",
        "daily_summary/2026-10-25",
        "fraud_alerts/2026-10-25",
        "monthly_summary/2020-01",
        "monthly_summary/2026-09",
        "route_daily/2026-10-25",
    ]
    assert plan.batch_ids == plan.rejected_batch_ids == plan.call_dates == ()
    before = listing(warehouse.root)
    with writer_lock(warehouse.root):
        report = apply_retention(warehouse, plan)
    gone = set(before) - set(listing(warehouse.root))
    assert gone == {f"{key}.parquet" for key in plan.mart_partitions}
    assert report.counts["marts"] == 7
    # Inside the window (2026-10-26 on, and October: part of it is inside) or no date: kept.
    assert {
        "daily_summary/2026-10-26.parquet",
        "monthly_summary/2026-10.parquet",
        "monthly_summary/2026-11.parquet",
        "daily_summary/summary-notes.parquet",
        "exports/billing/2020-01/carrier_001.csv",
    } <= set(listing(warehouse.root))


def test_keeping_everything_plans_nothing(warehouse: Warehouse) -> None:
    policy = RetentionPolicy(batch_days=None, rejected_days=None, cdrs_days=None)
    plan = plan_retention(warehouse, policy, TODAY)
    assert plan.paths == () and plan.expired_batches == ()
    assert "0 paths" in plan.summary()


def test_running_twice_is_harmless(warehouse: Warehouse) -> None:
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    with writer_lock(warehouse.root):
        first = apply_retention(warehouse, plan)
        after_first = listing(warehouse.root)
        again = apply_retention(warehouse, plan)
    assert listing(warehouse.root) == after_first
    assert again.deleted == () and again.errors == ()
    assert again.already_gone == len(plan.paths)
    assert again.call_dates == first.call_dates  # gone either way: partitions can go
    assert again.total_bytes == 0

    replan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    assert replan.paths == ()
    assert replan.batch_ids == replan.call_dates == ()
    # The partitions of batches cleaned before are still named, for a Dagster side that
    # failed to delete them the first time.
    assert sorted(replan.expired_batches) == sorted(EXPIRED_BATCHES)
    with writer_lock(warehouse.root):
        third = apply_retention(warehouse, replan)
    assert third.deleted == () and listing(warehouse.root) == after_first


def test_files_vanishing_between_plan_and_apply_are_no_error(warehouse: Warehouse) -> None:
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    (warehouse.root / "validated" / "ancient.parquet").unlink()
    for path in warehouse.archive_dir("ancient").rglob("*"):
        if path.is_file():
            path.unlink()
    with writer_lock(warehouse.root):
        report = apply_retention(warehouse, plan)
    assert report.errors == ()
    assert report.already_gone == 1
    assert "ancient" in report.batch_ids
    assert not warehouse.archive_dir("ancient").exists()


def test_symbolic_links_are_never_followed(warehouse: Warehouse, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    put_text(outside / "precious.csv")
    # A batch folder that is a link is not planned ...
    archive = warehouse.archive_dir("manual-old")
    shutil.rmtree(archive)
    archive.symlink_to(outside, target_is_directory=True)
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    assert archive not in {p.path for p in plan.paths}
    assert any("landing_archive/manual-old" in s for s in plan.skipped)
    # ... and one that became a link after planning is refused.
    folder = warehouse.rejected_files_dir("ancient")
    assert folder in {p.path for p in plan.paths}
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    with writer_lock(warehouse.root):
        report = apply_retention(warehouse, plan)
    assert (outside / "precious.csv").exists()
    assert folder.is_symlink()
    assert any("landing_rejected/ancient" in e and "symbolic link" in e for e in report.errors)
    assert "ancient" not in report.rejected_batch_ids
    assert "ancient" in report.batch_ids  # its other kind went as planned


def test_a_plan_for_another_warehouse_is_refused(warehouse: Warehouse, tmp_path: Path) -> None:
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    with pytest.raises(ValueError, match="was made for the warehouse"):
        apply_retention(Warehouse(tmp_path / "other"), plan)


def test_summary_and_metadata(warehouse: Warehouse) -> None:
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    text = plan.summary()
    assert "dry run" in text and "before 2026-10-26, 30 days" in text
    assert "marts (kept forever)" in text
    meta = plan.as_metadata()
    assert meta["dry_run"] == "yes"
    assert meta["batch_cut"] == "2026-10-26" and meta["marts_cut"] == "kept forever"
    assert meta["cdrs_days"] == 1 and meta["paths"] == len(plan.paths)
    assert all(isinstance(v, int | str) for v in meta.values())

    with writer_lock(warehouse.root):
        report = apply_retention(warehouse, plan)
    assert "deleted" in report.summary() and "2025-10-20" in report.summary()
    meta = report.as_metadata()
    assert meta["dry_run"] == "no" and meta["cdrs_paths"] == 2 + len(DAY_CACHE_DIRS)
    assert meta["bytes_deleted"] == report.total_bytes
    assert all(isinstance(v, int | str) for v in meta.values())


# -- configuration -------------------------------------------------------------------------


def test_policy_defaults_and_environment() -> None:
    assert RetentionPolicy.from_env({}) == RetentionPolicy(30, 400, 400, None)
    policy = RetentionPolicy.from_env(
        {
            "CDR_RETENTION_BATCH_DAYS": " 7 ",
            "CDR_RETENTION_REJECTED_DAYS": "",
            "CDR_RETENTION_CDRS_DAYS": "Forever",
            "CDR_RETENTION_MARTS_DAYS": "0",
        }
    )
    assert policy == RetentionPolicy(7, 400, None, 0)
    assert RetentionPolicy.from_env({"CDR_RETENTION_BATCH_DAYS": "keep"}).batch_days is None
    assert RetentionPolicy().cut("batch", TODAY) == BATCH_CUT
    assert RetentionPolicy().cut("cdrs", TODAY) == LONG_CUT
    assert RetentionPolicy().cut("marts", TODAY) is None


@pytest.mark.parametrize(
    "variable",
    [
        "CDR_RETENTION_BATCH_DAYS",
        "CDR_RETENTION_REJECTED_DAYS",
        "CDR_RETENTION_CDRS_DAYS",
        "CDR_RETENTION_MARTS_DAYS",
    ],
)
@pytest.mark.parametrize("value", ["-1", "thirty", "1.5", "30d", "never"])
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        RetentionPolicy.from_env({variable: value})


def test_a_negative_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="CDR_RETENTION_CDRS_DAYS"):
        RetentionPolicy(cdrs_days=-1)


# -- the rest of the pipeline after a retention run ----------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "landing").mkdir()
    return Settings(
        landing_dir=tmp_path / "landing",
        rates_dir=SHIPPED_RATES,
        warehouse_dir=tmp_path / "warehouse",
    )


def age_batch(warehouse: Warehouse, batch_id: str, landed_at: datetime) -> None:
    path = warehouse.batch_file("landed_files", batch_id)
    table = pq.read_table(path)
    column = table.schema.get_field_index("landed_at")
    stamps = pa.array([landed_at] * table.num_rows, table.schema.field("landed_at").type)
    pq.write_table(table.set_column(column, "landed_at", stamps), path)


def day_rows(warehouse: Warehouse, day: str) -> list[tuple[object, ...]]:
    files = warehouse.table_files_for_day(day)
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT * EXCLUDE (batch_seq) FROM read_parquet({sql_file_list(files)}) "
            "ORDER BY call_id"
        ).fetchall()


def test_the_pipeline_keeps_working_after_a_retention_run(settings: Settings) -> None:
    warehouse = Warehouse(settings.warehouse_dir)
    today = datetime.now(UTC).date()
    day = (today - timedelta(days=2)).isoformat()
    start = f"{day}T10:00:00Z"
    drop(settings, "first.csv", HEADER + line("c1", start=start) + line("c2", start=start))
    run_batch(settings, "b1")
    drop(
        settings,
        "second.csv",
        HEADER + line("c1", start=start, duration="61") + line("c3", start=start),
    )
    run_batch(settings, "b2")
    age_batch(warehouse, "b1", datetime.combine(today, datetime.min.time(), UTC) - timedelta(40))
    kept_before = day_rows(warehouse, day)
    assert [r[0] for r in kept_before] == ["c1", "c2", "c3"]  # b2's c1 is a duplicate
    assert [p.stem for p in warehouse.table_files_for_day(day)] == ["b1", "b2"]

    plan = plan_retention(warehouse, RetentionPolicy(), today)
    assert plan.batch_ids == ("b1",) and plan.call_dates == ()
    with writer_lock(warehouse.root):
        report = apply_retention(warehouse, plan)
    assert report.batch_partitions == ("b1",)
    assert not warehouse.batch_file("enriched", "b1").exists()
    assert not warehouse.archive_dir("b1").exists()
    assert warehouse.batch_file("enriched", "b2").exists()
    assert warehouse.cdrs_file(day, "b1").exists()

    # The serving file is rebuilt from what is left, and every table still reads.
    counts = publish_serving_file(warehouse)
    assert counts["cdrs"] == 3 and counts["landed_files"] == 2

    # Rebuilding the day leaves the calls of a batch whose enriched file went.
    assert ingest.rebuild_cdrs_day(warehouse, day) == 1  # b2's c3 is the only one rebuilt
    assert warehouse.cdrs_file(day, "b1").exists()
    assert day_rows(warehouse, day) == kept_before

    # A later batch is still deduplicated against the calls the old batch kept.
    drop(settings, "third.csv", HEADER + line("c2", start=start))
    run_batch(settings, "b3")
    with duckdb.connect(str(warehouse.serving_path), read_only=True) as con:
        dup = con.execute(
            "SELECT call_id, first_source_file FROM duplicate_cdrs WHERE batch_id = 'b3'"
        ).fetchall()
        total = con.execute("SELECT count(*) FROM cdrs").fetchone()
    assert dup == [("c2", "first.csv")]
    assert total == (3,)


def test_a_plan_is_a_frozen_value(warehouse: Warehouse) -> None:
    plan = plan_retention(warehouse, RetentionPolicy(), TODAY)
    assert isinstance(plan, RetentionPlan)
    with pytest.raises(AttributeError):
        plan.today = TODAY  # type: ignore[misc]
