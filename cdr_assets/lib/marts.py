"""Marts: the day and month tables BI tools and billing read, built from ``cdrs`` in SQL.

Design. A day's marts are a function of that day's ``cdrs`` files alone, and a month's
``monthly_summary`` a function of its days' ``route_daily`` (day x carrier x called
country x call type), so a run that changes some days rebuilds exactly those days and
their months, and nothing else. Each ``cdrs`` file is summed once into cells (UTC hour x
carrier x called country x call type, ``FILE_CELLS_SQL``) kept under
``_state/mart_cells/<day>/``; a day's marts are built from its files' cells, so a late file
into a large day costs the sums of its own rows. ``reconcile_day`` still checks the marts
against the ``cdrs`` rows themselves. Each table is one Parquet file per partition,
``<table>/<YYYY-MM-DD>.parquet`` (``monthly_summary/<YYYY-MM>.parquet``), written aside and
renamed into place; a day that has no calls any more has no mart files.

Definitions (the contract's): answered = disposition ``ANSWERED`` (given or derived);
``asr`` = answered / calls in percent; ``acd_seconds`` = answered duration / answered
calls (null without answered calls); ``erlangs`` = answered seconds of the calls that
started in the hour / 3600; money sums are sums of the per-call rounded amounts, nulls left
out, 0 where nothing is left, in ``DECIMAL`` (never a float). Ratios (``asr``,
``acd_seconds``, ``erlangs``, ``share_pct``) are ``DOUBLE``; ``cost_per_minute`` is money:
cost x 60 / billable seconds, computed in integer units and rounded half-up to
``RATE_DECIMALS`` places, ``DECIMAL`` as well.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb

from cdr_assets.lib.warehouse import (
    DAY_CACHE_DIRS,
    Warehouse,
    copy_to_parquet_atomic,
    day_file_aggregates,
    read_parquet_sql,
    remove_file,
)

DAY_TABLES = (
    "daily_summary",
    "hourly_traffic",
    "carrier_daily",
    "destination_daily",
    "route_daily",
)
MONTH_TABLES = ("monthly_summary",)
MART_TABLES = DAY_TABLES + MONTH_TABLES
RATE_DECIMALS = 6  # decimals of cost_per_minute
CELLS_DIR = DAY_CACHE_DIRS[0]  # under the warehouse's _state folder, one folder per day

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH_RE = re.compile(r"\d{4}-\d{2}")

# Exact money division: round_half_up(amount * 60 / seconds) at RATE_DECIMALS, in HUGEINT
# units of 1e-12 (amounts carry at most 12 decimals), so no step goes through a float.
_MACROS = f"""
CREATE OR REPLACE TEMP MACRO per_minute(amount, seconds) AS (
    CASE WHEN seconds IS NULL OR seconds = 0 OR amount IS NULL THEN NULL ELSE
    CAST(
        sign(CAST(amount * 1000000000000 AS HUGEINT))
        * ((2 * 60 * abs(CAST(amount * 1000000000000 AS HUGEINT))
            + CAST(seconds AS HUGEINT) * {10 ** (12 - RATE_DECIMALS)})
           // (2 * CAST(seconds AS HUGEINT) * {10 ** (12 - RATE_DECIMALS)}))
        AS DECIMAL(38, 0)
    ) * CAST({10**-RATE_DECIMALS:.{RATE_DECIMALS}f} AS DECIMAL(18, {RATE_DECIMALS}))
    END
);
"""
# round-half-up of n / d for d > 0 is sign(n) * ((2|n| + d) // 2d); here n = amount units *
# 60 and d = seconds * 10^(12 - RATE_DECIMALS).

# Every day mart is an aggregate of the day's calls at a grain no mart is finer than: UTC
# hour x carrier x called country x call type. Each cdrs file's calls are summed to that grain
# once (``FILE_CELLS_SQL``, kept under ``_state/mart_cells/<day>/``) and the day's marts are
# built from the cells of its files, so a late file costs the marts of its own rows only.
FILE_CELLS_SQL = """
SELECT date_trunc('hour', start_time) AS call_hour, carrier_id, called_country, call_type,
    min(called_country_name) AS called_country_name,
    count(*) AS calls,
    count(*) FILTER (WHERE disposition = 'ANSWERED') AS answered_calls,
    sum(duration_seconds)::BIGINT AS duration_seconds,
    sum(duration_seconds) FILTER (WHERE disposition = 'ANSWERED')::BIGINT AS answered_seconds,
    sum(billable_seconds)::BIGINT AS billable_seconds,
    sum(cost) AS cost, sum(revenue) AS revenue, sum(margin) AS margin,
    count(*) FILTER (WHERE rating_status IN ('unknown_carrier', 'no_rate')) AS unrated_calls
FROM file_cdrs
GROUP BY ALL
"""
CELLS_VERSION = "1"  # part of the cells' cache key: change it when FILE_CELLS_SQL changes

# The measures of a group of cells (sums of sums: exact, and typed as summing the calls was).
_MEASURES = """
    sum(calls)::BIGINT AS calls,
    sum(answered_calls)::BIGINT AS answered_calls,
    coalesce(sum(duration_seconds), 0)::BIGINT AS duration_seconds,
    coalesce(sum(answered_seconds), 0)::BIGINT AS answered_seconds,
    coalesce(sum(billable_seconds), 0)::BIGINT AS billable_seconds,
    coalesce(sum(cost), 0) AS cost,
    coalesce(sum(revenue), 0) AS revenue,
    coalesce(sum(margin), 0) AS margin
"""


def _ratios(prefix: str = "") -> str:
    return f"""
    100.0 * {prefix}answered_calls / {prefix}calls AS asr,
    CASE WHEN {prefix}answered_calls > 0
        THEN {prefix}answered_seconds / {prefix}answered_calls END AS acd_seconds"""


DAILY_SUMMARY_SQL = f"""
WITH totals AS (SELECT {_MEASURES},
        coalesce(sum(calls) FILTER (WHERE call_type = 'local'), 0)::BIGINT AS local_calls,
        coalesce(sum(calls) FILTER (WHERE call_type = 'national'), 0)::BIGINT AS national_calls,
        coalesce(sum(calls) FILTER (WHERE call_type = 'international'), 0)::BIGINT
            AS international_calls,
        sum(unrated_calls)::BIGINT AS unrated_calls
    FROM day_cells),
busy AS (
    SELECT call_hour, erlangs, calls FROM hours
    ORDER BY erlangs DESC, calls DESC, call_hour LIMIT 1
)
SELECT CAST($day AS DATE) AS call_date,
    t.calls AS total_calls, t.answered_calls,
    t.duration_seconds AS total_duration_seconds, t.billable_seconds,
    t.cost AS total_cost, t.revenue AS total_revenue, t.margin AS total_margin,
    t.local_calls, t.national_calls, t.international_calls, {_ratios("t.")},
    t.answered_seconds, t.unrated_calls,
    b.call_hour AS busy_hour, b.erlangs AS busy_hour_erlangs, b.calls AS busy_hour_calls
FROM totals AS t, busy AS b
WHERE t.calls > 0
"""

HOURS_SQL = f"""
CREATE OR REPLACE TEMP TABLE hours AS
SELECT *, answered_seconds / 3600.0 AS erlangs FROM (
    SELECT CAST($day AS DATE) AS call_date, call_hour, {_MEASURES}
    FROM day_cells GROUP BY call_hour
);
"""

HOURLY_TRAFFIC_SQL = f"""
SELECT call_date, call_hour, calls, answered_calls, duration_seconds, answered_seconds,
    billable_seconds, cost, revenue, margin, erlangs, {_ratios()}
FROM hours
ORDER BY call_hour
"""

CARRIER_DAILY_SQL = f"""
SELECT CAST($day AS DATE) AS call_date, carrier_id, calls, answered_calls, {_ratios()},
    duration_seconds, answered_seconds, billable_seconds, cost, revenue, margin,
    per_minute(cost, billable_seconds) AS cost_per_minute,
    per_minute(revenue, billable_seconds) AS revenue_per_minute
FROM (SELECT carrier_id, {_MEASURES} FROM day_cells GROUP BY carrier_id)
ORDER BY carrier_id
"""

DESTINATION_DAILY_SQL = f"""
SELECT CAST($day AS DATE) AS call_date, called_country, called_country_name, calls,
    answered_calls, {_ratios()}, duration_seconds, answered_seconds, billable_seconds,
    cost, revenue, margin, 100.0 * calls / sum(calls) OVER () AS share_pct
FROM (
    SELECT called_country, min(called_country_name) AS called_country_name, {_MEASURES}
    FROM day_cells GROUP BY called_country
)
ORDER BY calls DESC, called_country NULLS LAST
"""

ROUTE_DAILY_SQL = f"""
SELECT CAST($day AS DATE) AS call_date, carrier_id, called_country, call_type, {_MEASURES}
FROM day_cells GROUP BY carrier_id, called_country, call_type
ORDER BY carrier_id, called_country NULLS LAST, call_type NULLS LAST
"""

MONTHLY_SUMMARY_SQL = """
SELECT $month AS month, carrier_id, called_country, call_type,
    sum(calls)::BIGINT AS calls, sum(answered_calls)::BIGINT AS answered_calls,
    sum(duration_seconds)::BIGINT AS duration_seconds,
    sum(answered_seconds)::BIGINT AS answered_seconds,
    sum(billable_seconds)::BIGINT AS billable_seconds,
    sum(cost) AS cost, sum(revenue) AS revenue, sum(margin) AS margin,
    count(DISTINCT call_date)::BIGINT AS days
FROM month_routes
GROUP BY carrier_id, called_country, call_type
ORDER BY carrier_id, called_country NULLS LAST, call_type NULLS LAST
"""

DAY_SQL = {
    "daily_summary": DAILY_SUMMARY_SQL,
    "hourly_traffic": HOURLY_TRAFFIC_SQL,
    "carrier_daily": CARRIER_DAILY_SQL,
    "destination_daily": DESTINATION_DAILY_SQL,
    "route_daily": ROUTE_DAILY_SQL,
}


def check_day(day: str) -> str:
    """A call date partition key, refused unless it is a real date (it reaches file names)."""
    if not _DAY_RE.fullmatch(day):
        raise ValueError(f"not a call date (YYYY-MM-DD): {day!r}")
    date.fromisoformat(day)
    return day


def check_month(month: str) -> str:
    if not _MONTH_RE.fullmatch(month) or not 1 <= int(month[5:]) <= 12:
        raise ValueError(f"not a month (YYYY-MM): {month!r}")
    return month


def month_of(day: str) -> str:
    return check_day(day)[:7]


def mart_file(warehouse: Warehouse, table: str, key: str) -> Path:
    """``<warehouse>/<table>/<key>.parquet``: one file per day (per month for monthly)."""
    if table not in MART_TABLES:
        raise ValueError(f"not a mart table: {table}")
    return warehouse.root / table / f"{key}.parquet"


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # call hours are UTC hours, whatever the machine's
    con.execute(_MACROS)
    return con


def day_cells(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, day: str) -> list[Path]:
    """The cells of each of the day's cdrs files (summed now for files that have none)."""
    return day_file_aggregates(
        con, warehouse, CELLS_DIR, check_day(day), FILE_CELLS_SQL, CELLS_VERSION
    )


def _open_day(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, day: str) -> bool:
    cells = day_cells(con, warehouse, day)
    if not cells:
        return False
    con.execute(f"CREATE OR REPLACE TEMP VIEW day_cells AS SELECT * FROM {read_parquet_sql(cells)}")
    con.execute(HOURS_SQL, {"day": day})
    return True


def refresh_day(warehouse: Warehouse, day: str) -> dict[str, int]:
    """Rebuild every day mart of ``day`` from its ``cdrs``; returns rows written per table."""
    check_day(day)
    rows: dict[str, int] = {}
    with _connect() as con:
        if not _open_day(con, warehouse, day):
            for table in DAY_TABLES:
                remove_file(mart_file(warehouse, table, day))
                rows[table] = 0
            return rows
        for table, sql in DAY_SQL.items():
            path = mart_file(warehouse, table, day)
            copy_to_parquet_atomic(con, sql, path, {"day": day} if "$day" in sql else None)
            rows[table] = _count(con, [path])
    return rows


def refresh_month(warehouse: Warehouse, month: str) -> int:
    """Rebuild ``monthly_summary`` of ``month`` from its days' ``route_daily``; rows written."""
    check_month(month)
    path = mart_file(warehouse, "monthly_summary", month)
    days = month_route_files(warehouse, month)
    if not days:
        remove_file(path)
        return 0
    with _connect() as con:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW month_routes AS SELECT * FROM {read_parquet_sql(days)}"
        )
        copy_to_parquet_atomic(con, MONTHLY_SUMMARY_SQL, path, {"month": month})
        return _count(con, [path])


def month_route_files(warehouse: Warehouse, month: str) -> list[Path]:
    folder = warehouse.root / "route_daily"
    return sorted(folder.glob(f"{check_month(month)}-??.parquet")) if folder.exists() else []


@dataclass(frozen=True)
class Refreshed:
    days: dict[str, dict[str, int]]  # day -> table -> rows
    months: dict[str, int]  # month -> monthly_summary rows
    kept: list[str] = field(default_factory=list)  # days older than keep_before, left alone


def refresh(warehouse: Warehouse, days: list[str], keep_before: date | None = None) -> Refreshed:
    """Rebuild the marts of ``days`` and of the months they fall in.

    Days before ``keep_before`` (the ``cdrs`` retention cut) are left as they are: their
    ``cdrs`` may be gone, and marts rebuilt from a late call alone would lose the day.
    """
    wanted = sorted(set(days))
    kept = [d for d in wanted if keep_before and date.fromisoformat(check_day(d)) < keep_before]
    done = {day: refresh_day(warehouse, day) for day in wanted if day not in kept}
    months = {month: refresh_month(warehouse, month) for month in sorted({d[:7] for d in done})}
    return Refreshed(done, months, kept)


def mart_days(warehouse: Warehouse, table: str = "daily_summary") -> list[str]:
    folder = warehouse.root / table
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.exists() else []


def _count(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> int:
    row = con.execute(f"SELECT count(*) FROM {read_parquet_sql(paths)}").fetchone()
    return int(row[0]) if row else 0


# -- reconciliation ----------------------------------------------------------------------

_SUMS = ("calls", "answered_calls", "duration_seconds", "billable_seconds", "cost", "revenue")
_SUMS_WITH_MARGIN = (*_SUMS, "margin")
_DAILY_NAMES = {
    "calls": "total_calls",
    "duration_seconds": "total_duration_seconds",
    "cost": "total_cost",
    "revenue": "total_revenue",
    "margin": "total_margin",
}


@dataclass(frozen=True)
class Mismatch:
    table: str
    measure: str
    expected: object
    found: object

    def __str__(self) -> str:
        return f"{self.table}.{self.measure}: {self.found} (expected {self.expected})"


def _sums(
    con: duckdb.DuckDBPyConnection, source: str, measures: tuple[str, ...], names: dict[str, str]
) -> dict[str, object]:
    cols = ", ".join(f"coalesce(sum({names.get(m, m)}), 0)" for m in measures)
    row = con.execute(f"SELECT {cols} FROM {source}").fetchone()
    assert row is not None
    return dict(zip(measures, row, strict=True))


def _compare(
    table: str, expected: Mapping[str, object], found: Mapping[str, object]
) -> list[Mismatch]:
    return [Mismatch(table, m, expected[m], found[m]) for m in expected if expected[m] != found[m]]


def reconcile_day(warehouse: Warehouse, day: str) -> list[Mismatch]:
    """Every day mart's totals against the day's ``cdrs`` (and ``daily_summary``)."""
    check_day(day)
    files = warehouse.table_files_for_day(day)
    with _connect() as con:
        if files:
            con.execute(
                "CREATE OR REPLACE TEMP VIEW day_cdrs AS SELECT *, "
                "CASE WHEN disposition = 'ANSWERED' THEN 1 ELSE 0 END AS answered_calls, "
                "1 AS calls "
                f"FROM {read_parquet_sql(files)}"
            )
            truth: Mapping[str, object] = _sums(con, "day_cdrs", _SUMS_WITH_MARGIN, {})
        else:
            truth = dict.fromkeys(_SUMS_WITH_MARGIN, 0)
        found: list[Mismatch] = []
        for table in DAY_TABLES:
            path = mart_file(warehouse, table, day)
            if not path.exists():
                if truth["calls"]:
                    found.append(Mismatch(table, "file", "present", "missing"))
                continue
            names = _DAILY_NAMES if table == "daily_summary" else {}
            sums = _sums(con, read_parquet_sql([path]), _SUMS_WITH_MARGIN, names)
            found += _compare(table, truth, sums)
    return found


def reconcile_month(warehouse: Warehouse, month: str) -> list[Mismatch]:
    """``monthly_summary`` of ``month`` against the sum of its days' ``daily_summary``."""
    check_month(month)
    folder = warehouse.root / "daily_summary"
    days = sorted(folder.glob(f"{month}-??.parquet")) if folder.exists() else []
    path = mart_file(warehouse, "monthly_summary", month)
    with _connect() as con:
        truth: Mapping[str, object] = (
            _sums(con, read_parquet_sql(days), _SUMS_WITH_MARGIN, _DAILY_NAMES)
            if days
            else dict.fromkeys(_SUMS_WITH_MARGIN, 0)
        )
        if not path.exists():
            return [Mismatch("monthly_summary", "file", "present", "missing")] if days else []
        sums = _sums(con, read_parquet_sql([path]), _SUMS_WITH_MARGIN, {})
    return _compare("monthly_summary", truth, sums)


def carrier_month_totals(warehouse: Warehouse, month: str) -> dict[str, dict[str, object]]:
    """Per carrier, the month's sums in ``monthly_summary`` (what billing exports must equal)."""
    path = mart_file(warehouse, "monthly_summary", check_month(month))
    if not path.exists():
        return {}
    with _connect() as con:
        rel = con.sql(
            "SELECT carrier_id, sum(calls)::BIGINT AS calls, "
            "sum(billable_seconds)::BIGINT AS billable_seconds, sum(cost) AS cost, "
            "sum(revenue) AS revenue, sum(margin) AS margin "
            f"FROM {read_parquet_sql([path])} GROUP BY carrier_id ORDER BY carrier_id"
        )
        names = rel.columns
        return {str(r[0]): dict(zip(names[1:], r[1:], strict=True)) for r in rel.fetchall()}


__all__ = [
    "DAY_TABLES",
    "MART_TABLES",
    "MONTH_TABLES",
    "Mismatch",
    "Refreshed",
    "carrier_month_totals",
    "check_day",
    "check_month",
    "mart_days",
    "mart_file",
    "month_of",
    "reconcile_day",
    "reconcile_month",
    "refresh",
    "refresh_day",
    "refresh_month",
]
