"""Marts, on a small data set whose every figure is worked out by hand below."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdr_assets.lib import marts
from cdr_assets.lib import warehouse as warehouse_module
from cdr_assets.lib.warehouse import Warehouse, read_parquet_sql

D = Decimal
DAY = "2026-03-01"
NEXT = "2026-03-02"

# call_id, hour:min:sec, carrier, called country, call type, disposition, duration,
# billable, cost, revenue, margin, rating status
CALLS = {
    DAY: [
        ("c1", "10:05:00", "A", "GB", "international", "ANSWERED", 330, 360,
         "0.2400", "0.3600", "0.1200", "rated"),
        ("c2", "10:30:00", "A", "GB", "international", "NO_ANSWER", 0, 0,
         "0", "0", "0", "unanswered"),
        ("c3", "11:00:00", "B", "US", "national", "ANSWERED", 60, 60,
         "0.0100", None, None, "no_retail_rate"),
        ("c4", "11:59:59", "B", "US", "local", "ANSWERED", 120, None,
         None, None, None, "no_rate"),
        ("c5", "23:00:00", "C", "DE", "international", "ANSWERED", 30, None,
         None, None, None, "unknown_carrier"),
    ],
    NEXT: [
        ("c6", "08:00:00", "A", "GB", "international", "ANSWERED", 60, 60,
         "0.0400", "0.0600", "0.0200", "rated"),
    ],
}  # fmt: skip
NAMES = {"GB": "United Kingdom", "US": "United States", "DE": "Germany"}


def write_day(warehouse: Warehouse, day: str, rows: list[tuple], batch: str = "b1") -> Path:
    money = pa.decimal128(38, 4)
    cols = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "call_id": pa.array(cols[0]),
            "start_time": pa.array([f"{day}T{t}+00:00" for t in cols[1]], pa.string()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "call_date": pa.array([day] * len(rows)).cast(pa.date32()),
            "carrier_id": pa.array(cols[2]),
            "called_country": pa.array(cols[3]),
            "called_country_name": pa.array([NAMES[c] for c in cols[3]]),
            "call_type": pa.array(cols[4]),
            "disposition": pa.array(cols[5]),
            "duration_seconds": pa.array(cols[6], pa.int64()),
            "billable_seconds": pa.array(cols[7], pa.int64()),
            "cost": pa.array([None if v is None else D(v) for v in cols[8]], money),
            "revenue": pa.array([None if v is None else D(v) for v in cols[9]], money),
            "margin": pa.array([None if v is None else D(v) for v in cols[10]], money),
            "rating_status": pa.array(cols[11]),
        }
    )
    path = warehouse.cdrs_file(day, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    wh = Warehouse(tmp_path / "warehouse")
    for day, rows in CALLS.items():
        write_day(wh, day, rows)
    marts.refresh(wh, list(CALLS))
    return wh


def rows(warehouse: Warehouse, table: str, key: str, order: str = "1") -> list[dict]:
    path = marts.mart_file(warehouse, table, key)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        rel = con.sql(f"SELECT * FROM {read_parquet_sql([path])} ORDER BY {order}")
        names = rel.columns
        return [dict(zip(names, r, strict=True)) for r in rel.fetchall()]


def test_daily_summary_counts_money_and_ratios(warehouse: Warehouse) -> None:
    (row,) = rows(warehouse, "daily_summary", DAY)
    assert row["total_calls"] == 5
    assert row["answered_calls"] == 4
    assert row["total_duration_seconds"] == 330 + 60 + 120 + 30
    assert row["billable_seconds"] == 360 + 60
    # Sums of the per-call amounts, nulls left out.
    assert (row["total_cost"], row["total_revenue"], row["total_margin"]) == (
        D("0.2500"),
        D("0.3600"),
        D("0.1200"),
    )
    assert (row["local_calls"], row["national_calls"], row["international_calls"]) == (1, 1, 3)
    assert row["asr"] == pytest.approx(80.0)
    assert row["acd_seconds"] == pytest.approx(540 / 4)
    assert row["unrated_calls"] == 2
    assert str(row["busy_hour"])[:19] == f"{DAY} 10:00:00"
    assert row["busy_hour_erlangs"] == pytest.approx(330 / 3600)


def test_money_columns_are_decimal_in_every_mart(warehouse: Warehouse) -> None:
    for table in marts.MART_TABLES:
        key = DAY[:7] if table in marts.MONTH_TABLES else DAY
        schema = pq.read_schema(marts.mart_file(warehouse, table, key))
        for name in schema.names:
            if any(word in name for word in ("cost", "revenue", "margin", "per_minute")):
                assert pa.types.is_decimal(schema.field(name).type), (table, name)


def test_hourly_traffic_and_erlangs(warehouse: Warehouse) -> None:
    hours = rows(warehouse, "hourly_traffic", DAY, "call_hour")
    got = [(str(h["call_hour"])[11:16], h["calls"], h["answered_calls"]) for h in hours]
    assert got == [("10:00", 2, 1), ("11:00", 2, 2), ("23:00", 1, 1)]
    # Erlangs: answered seconds of the calls that started in the hour / 3600.
    assert [h["erlangs"] for h in hours] == pytest.approx([330 / 3600, 180 / 3600, 30 / 3600])
    assert [h["duration_seconds"] for h in hours] == [330, 180, 30]


def test_carrier_daily_asr_acd_and_exact_cost_per_minute(warehouse: Warehouse) -> None:
    by = {r["carrier_id"]: r for r in rows(warehouse, "carrier_daily", DAY)}
    assert (by["A"]["calls"], by["A"]["answered_calls"]) == (2, 1)
    assert by["A"]["asr"] == pytest.approx(50.0)
    assert by["A"]["acd_seconds"] == pytest.approx(330.0)
    assert by["A"]["cost_per_minute"] == D("0.040000")  # 0.24 x 60 / 360
    assert by["A"]["revenue_per_minute"] == D("0.060000")
    assert by["B"]["asr"] == pytest.approx(100.0)
    assert by["B"]["acd_seconds"] == pytest.approx(90.0)
    assert by["B"]["billable_seconds"] == 60  # the no_rate call has no billable seconds
    assert by["B"]["cost_per_minute"] == D("0.010000")
    assert by["B"]["margin"] == D("0.0000")  # nothing left: 0, not null
    assert by["C"]["cost"] == D("0") and by["C"]["cost_per_minute"] is None


@pytest.mark.parametrize(
    ("amount", "seconds", "expected"),
    [
        ("0.0100", 7, "0.085714"),  # 0.0857142857...
        ("0.0001", 2400, "0.000003"),  # 0.0000025: half-up, not half-even
        ("0.0001", 4800, "0.000001"),  # 0.00000125
        ("-0.0001", 2400, "-0.000003"),  # half away from zero
        ("12.3456", 60, "12.345600"),
    ],
)
def test_per_minute_is_exact_and_rounds_half_up(amount: str, seconds: int, expected: str) -> None:
    with marts._connect() as con:
        row = con.execute(
            "SELECT per_minute(CAST($a AS DECIMAL(38,4)), $s::BIGINT), "
            "typeof(per_minute(CAST($a AS DECIMAL(38,4)), $s::BIGINT))",
            {"a": amount, "s": seconds},
        ).fetchone()
    assert row is not None
    assert row[0] == D(expected)
    assert row[1].startswith("DECIMAL")


def test_destination_daily_shares(warehouse: Warehouse) -> None:
    by = {r["called_country"]: r for r in rows(warehouse, "destination_daily", DAY)}
    assert {c: r["calls"] for c, r in by.items()} == {"GB": 2, "US": 2, "DE": 1}
    assert {c: r["share_pct"] for c, r in by.items()} == pytest.approx(
        {"GB": 40.0, "US": 40.0, "DE": 20.0}
    )
    assert by["GB"]["called_country_name"] == "United Kingdom"
    assert by["GB"]["margin"] == D("0.1200")


def test_monthly_summary_sums_the_days(warehouse: Warehouse) -> None:
    month = rows(warehouse, "monthly_summary", "2026-03", "carrier_id, called_country, call_type")
    a_gb = next(r for r in month if r["carrier_id"] == "A")
    assert (a_gb["month"], a_gb["called_country"], a_gb["call_type"]) == (
        "2026-03",
        "GB",
        "international",
    )
    assert (a_gb["calls"], a_gb["billable_seconds"], a_gb["days"]) == (3, 420, 2)
    assert (a_gb["cost"], a_gb["revenue"], a_gb["margin"]) == (
        D("0.2800"),
        D("0.4200"),
        D("0.1400"),
    )
    assert sum(r["calls"] for r in month) == 6


def test_untouched_marts_reconcile(warehouse: Warehouse) -> None:
    assert marts.reconcile_day(warehouse, DAY) == []
    assert marts.reconcile_day(warehouse, NEXT) == []
    assert marts.reconcile_month(warehouse, "2026-03") == []


def tamper(warehouse: Warehouse, table: str, key: str, column: str) -> None:
    path = marts.mart_file(warehouse, table, key)
    with duckdb.connect() as con:
        data = con.sql(
            f"SELECT * REPLACE ({column} + 1 AS {column}) FROM {read_parquet_sql([path])}"
        ).to_arrow_table()
    pq.write_table(data.cast(pq.read_schema(path)), path)


@pytest.mark.parametrize(
    ("table", "column", "measure"),
    [
        ("daily_summary", "total_cost", "cost"),
        ("daily_summary", "total_calls", "calls"),
        ("carrier_daily", "revenue", "revenue"),
        ("destination_daily", "calls", "calls"),
        ("hourly_traffic", "answered_calls", "answered_calls"),
        ("route_daily", "margin", "margin"),
    ],
)
def test_a_tampered_day_mart_fails_reconciliation(
    warehouse: Warehouse, table: str, column: str, measure: str
) -> None:
    tamper(warehouse, table, DAY, column)
    found = marts.reconcile_day(warehouse, DAY)
    assert [(m.table, m.measure) for m in found] == [(table, measure)]
    assert marts.reconcile_day(warehouse, NEXT) == []


def test_a_tampered_month_fails_reconciliation(warehouse: Warehouse) -> None:
    tamper(warehouse, "monthly_summary", "2026-03", "billable_seconds")
    assert [(m.table, m.measure) for m in marts.reconcile_month(warehouse, "2026-03")] == [
        ("monthly_summary", "billable_seconds")
    ]


def test_a_missing_mart_file_fails_reconciliation(warehouse: Warehouse) -> None:
    marts.mart_file(warehouse, "carrier_daily", DAY).unlink()
    assert [(m.table, m.measure) for m in marts.reconcile_day(warehouse, DAY)] == [
        ("carrier_daily", "file")
    ]


def test_refresh_touches_only_the_days_given_and_their_month(warehouse: Warehouse) -> None:
    before = {p: p.stat().st_mtime_ns for p in warehouse.root.glob("*/*.parquet")}
    write_day(warehouse, NEXT, CALLS[NEXT][:1], batch="b2")  # a late batch adds a call
    refreshed = marts.refresh(warehouse, [NEXT])
    assert list(refreshed.days) == [NEXT] and list(refreshed.months) == ["2026-03"]
    changed = {p for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t}
    assert {p.name for p in changed} == {f"{NEXT}.parquet", "2026-03.parquet"}
    assert not any(p.name.startswith(DAY) for p in changed)
    (row,) = rows(warehouse, "daily_summary", NEXT)
    assert row["total_calls"] == 2


def test_a_day_without_calls_has_no_mart_files(warehouse: Warehouse) -> None:
    for path in warehouse.table_files_for_day(NEXT):
        path.unlink()
    marts.refresh(warehouse, [NEXT])
    assert not any(marts.mart_file(warehouse, t, NEXT).exists() for t in marts.DAY_TABLES)
    assert marts.reconcile_day(warehouse, NEXT) == []
    assert rows(warehouse, "monthly_summary", "2026-03", "1")[0]["days"] == 1


@pytest.mark.parametrize("bad", ["2026-3-01", "../x", "2026-02-30", "2026-13"])
def test_partition_keys_are_checked(warehouse: Warehouse, bad: str) -> None:
    with pytest.raises(ValueError):
        if len(bad) == 7:
            marts.refresh_month(warehouse, bad)
        else:
            marts.refresh_day(warehouse, bad)


# -- cells: the day's marts are sums of each cdrs file's cells --------------------------------


def day_marts(warehouse: Warehouse, day: str) -> dict[str, tuple[pa.Schema, list[tuple]]]:
    """Every day mart of ``day``: its schema and its rows in a fixed order."""
    out = {}
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        for table in marts.DAY_TABLES:
            path = marts.mart_file(warehouse, table, day)
            rel = con.sql(f"SELECT * FROM {read_parquet_sql([path])} ORDER BY ALL")
            out[table] = (pq.read_schema(path), rel.fetchall())
    return out


def test_a_day_split_over_files_has_the_marts_of_the_day_in_one_file(tmp_path: Path) -> None:
    calls = CALLS[DAY] + [
        ("c7", "10:45:00", "A", "US", "local", "BUSY", 0, 0, "0", "0", "0", "unanswered"),
        ("c8", "23:30:00", "C", "GB", "international", "ANSWERED", 45, 60,
         "0.0300", "0.0100", "-0.0200", "rated"),
    ]  # fmt: skip
    whole = Warehouse(tmp_path / "whole")
    write_day(whole, DAY, calls)
    split = Warehouse(tmp_path / "split")
    for n, part in enumerate((calls[5:], calls[:2], calls[2:5])):
        write_day(split, DAY, part, batch=f"b{n}")
    marts.refresh(whole, [DAY])
    marts.refresh(split, [DAY])
    assert len(list((split.state_dir / marts.CELLS_DIR / DAY).glob("*.parquet"))) == 3
    assert day_marts(split, DAY) == day_marts(whole, DAY)
    assert marts.reconcile_day(split, DAY) == []


def test_a_late_file_is_summed_alone_and_the_earlier_cells_are_reused(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    (earlier,) = (warehouse.state_dir / marts.CELLS_DIR / DAY).glob("*.parquet")
    summed: list[str] = []
    copy = warehouse_module.copy_to_parquet_atomic

    def spy(con: duckdb.DuckDBPyConnection, query: str, path: Path, params=None) -> None:  # type: ignore[no-untyped-def]
        if query == marts.FILE_CELLS_SQL:
            summed.append(path.name)
        copy(con, query, path, params)

    monkeypatch.setattr(warehouse_module, "copy_to_parquet_atomic", spy)
    write_day(warehouse, DAY, CALLS[NEXT], batch="late")  # c6's row, filed under DAY
    marts.refresh(warehouse, [DAY])
    assert len(summed) == 1 and summed[0].startswith("late.")
    assert earlier.exists()
    incremental = day_marts(warehouse, DAY)
    (row,) = rows(warehouse, "daily_summary", DAY)
    assert row["total_calls"] == 6

    shutil.rmtree(warehouse.state_dir / marts.CELLS_DIR)  # from scratch: the same marts
    marts.refresh(warehouse, [DAY])
    assert day_marts(warehouse, DAY) == incremental


def test_a_rewritten_or_removed_file_is_summed_again(warehouse: Warehouse) -> None:
    write_day(warehouse, DAY, CALLS[DAY][:2])  # the same file name, two calls left
    marts.refresh(warehouse, [DAY])
    (row,) = rows(warehouse, "daily_summary", DAY)
    assert row["total_calls"] == 2
    assert len(list((warehouse.state_dir / marts.CELLS_DIR / DAY).glob("*.parquet"))) == 1

    write_day(warehouse, DAY, CALLS[DAY][2:3], batch="b2")
    marts.refresh(warehouse, [DAY])
    warehouse.cdrs_file(DAY, "b1").unlink()
    marts.refresh(warehouse, [DAY])
    (row,) = rows(warehouse, "daily_summary", DAY)
    assert row["total_calls"] == 1
    (left,) = (warehouse.state_dir / marts.CELLS_DIR / DAY).glob("*.parquet")
    assert left.name.startswith("b2.")
