"""Exports of the calls in ``cdrs``: ad hoc files for a date range, and monthly billing files.

Both are written by DuckDB ``COPY`` straight from the Parquet files of the days asked for,
so a month of hundreds of millions of calls streams through bounded memory: DuckDB runs with
``MEMORY_LIMIT`` and sorts what does not fit in memory on disk, in a folder of its own under
the warehouse's ``_state/spill/`` (removed when the export ends). Insertion order is
preserved (DuckDB's default), which the ordered output relies on. Every value reaches SQL as
a parameter; the only text formatted into a statement is this module's own SQL and the
warehouse's Parquet file list (``read_parquet_sql``).

Ad hoc export (``export_calls``)
--------------------------------
The calls of ``start_date <= call_date <= end_date`` (both inclusive), optionally of one
``carrier_id`` and one ``country_code`` (as stored in ``cdrs``, compared in upper case),
ordered by ``call_date, start_time, call_id``, with the columns ``EXPORT_COLUMNS`` in that
order. The file is written under a temporary name beside ``output`` and renamed into place
when complete.

- ``csv``: a header line, then one line a call (RFC 4180 quoting; an empty cell is null,
  ``""`` an empty text).
- ``json``: newline-delimited JSON, one object a call (an empty range: an empty file).
- ``parquet``: zstd-compressed, the types of ``cdrs`` (an empty range: the schema, no rows).

Timestamps are written in UTC (text formats: ``2026-11-20 10:00:00+00``), dates as
``YYYY-MM-DD``. Money columns (``MONEY_COLUMNS``) are exact decimals throughout, never binary
floats: the decimal text with its scale in CSV (``0.2400``), a JSON *string* of that text
(``"0.2400"``, so that no JSON reader turns it into a float), ``DECIMAL`` in Parquet.

**Spreadsheet formulas.** In CSV files only, a text cell (``TEXT_COLUMNS``) that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading single quote, so that a
spreadsheet shows it as text instead of running it as a formula (the OWASP rule for CSV
injection). E.164 numbers therefore read ``'+442079460958`` in CSV; JSON and Parquet keep
every value as it is.

Monthly billing export (``write_billing_month``)
------------------------------------------------
For a month ``YYYY-MM``, one CSV and one JSON file per carrier with calls that month::

    <warehouse>/exports/billing/<YYYY-MM>/<carrier>.csv
    <warehouse>/exports/billing/<YYYY-MM>/<carrier>.json

``<carrier>`` is the carrier id where it is a safe file name; any other character (and a
leading ``.``, ``-`` or ``~``) is percent-encoded (``carrier_file_stem``), so no carrier id
can name a path outside the folder. An id whose encoded form passes 200 bytes gets its first
200 bytes followed by ``~`` and 16 hex digits of the id's SHA-256 (the id itself is in the
files): distinct ids give distinct names, and no stem passes 217 bytes.

CSV layout: the header is ``EXPORT_COLUMNS`` followed by one more column, ``calls``. The call
lines come first, ordered by ``call_date, start_time, call_id``, with ``calls`` empty. The
last line is the totals row, the only line with a ``calls`` value:

- ``call_id`` = ``TOTAL``, ``carrier_id`` = the carrier, ``calls`` = the number of calls;
- ``billable_seconds``, ``retail_billable_seconds``: sums of the calls' values;
- ``cost``, ``revenue``, ``margin``: sums of the calls' rounded amounts, at their scale;
- every other cell empty.

Sums leave null amounts out and are 0 where nothing is left, as the marts define them, so
the totals row of a carrier equals its month in the marts. Text cells are neutralised as in
every CSV export.

JSON layout: one object, money as strings of the exact decimal (never a JSON number)::

    {"carrier_id": "carrier_001", "month": "2026-11",
     "totals": {"calls": 562, "billable_seconds": 106920, "retail_billable_seconds": 106920,
                "cost": "56.3500", "revenue": "84.5250", "margin": "28.1750"},
     "calls": [{...one object a call, as in the ad hoc JSON export...}, ...]}

The month's calls are first copied, sorted by carrier, into one temporary Parquet file: the
totals and every carrier's lines come from that one snapshot, so they always agree, even if
a run rewrites ``cdrs`` meanwhile. Each JSON file is assembled from its head and a DuckDB
JSON array file, copied in blocks. All files of the month are written into a temporary
folder that then replaces ``<YYYY-MM>/`` by two renames (the old folder aside, the new one
in), so a reader never sees a mix of two runs: a carrier without calls in the month has no
files, and a re-run with the same calls writes identical bytes. Between the two renames
(microseconds) the month's folder is absent. Billing writers take ``exports/billing/.lock``
and clear what a killed writer left (hidden ``.tmp``/``.old`` folders).

``read_billing_totals`` reads the totals rows back from the CSV files, for reconciling the
exports with the marts. The carrier id comes from the file name; for a shortened name, from
the totals row (whose lines, holding that long id, are read with Python's csv module, as
they can pass DuckDB's limit on a line).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from cdr_assets.lib.privacy import private_cdrs
from cdr_assets.lib.serving import EMPTY_TABLES
from cdr_assets.lib.warehouse import (
    Warehouse,
    read_parquet_sql,
    step_connection,
    temporary_sibling,
)

EXPORT_COLUMNS: tuple[str, ...] = (
    "call_id",
    "call_date",
    "start_time",
    "end_time",
    "caller_number",
    "called_number",
    "carrier_id",
    "call_type",
    "country_code",
    "called_country",
    "disposition",
    "duration_seconds",
    "billable_seconds",
    "rate_prefix",
    "destination",
    "rate_per_minute",
    "cost",
    "retail_billable_seconds",
    "retail_prefix",
    "retail_rate_per_minute",
    "revenue",
    "margin",
    "rating_status",
    "deck_version",
    "source_file",
    "source_row",
)
# Exact decimals: strings in JSON, decimal text in CSV.
MONEY_COLUMNS = frozenset(
    {"rate_per_minute", "cost", "retail_rate_per_minute", "revenue", "margin"}
)
# Text cells that CSV exports neutralise when they start like a spreadsheet formula.
TEXT_COLUMNS = frozenset(
    {
        "call_id",
        "caller_number",
        "called_number",
        "carrier_id",
        "call_type",
        "country_code",
        "called_country",
        "disposition",
        "rate_prefix",
        "destination",
        "retail_prefix",
        "rating_status",
        "deck_version",
        "source_file",
    }
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FORMATS = ("csv", "json", "parquet")
MEMORY_LIMIT = "1GB"  # DuckDB's budget per export; what does not fit is sorted on disk

BILLING_TOTAL_COLUMNS = ("billable_seconds", "retail_billable_seconds", "cost", "revenue", "margin")
TOTAL_CALL_ID = "TOTAL"

_FORMULA_START_SQL = "('=', '+', '-', '@', chr(9), chr(13))"
_COPY_OPTIONS = {
    "csv": "FORMAT csv, HEADER true, COMPRESSION none",
    "json": "FORMAT json, COMPRESSION none",
    "parquet": "FORMAT parquet, COMPRESSION zstd",
}
_ORDER = "c.call_date, c.start_time, c.call_id"
_MONTH = re.compile(r"\d{4}-\d{2}")
_MAX_STEM_BYTES = 200  # a quoted carrier id up to this length is the stem, whole
_HASH_DIGITS = 16  # a longer one: its first _MAX_STEM_BYTES, then "~" and this many hex digits
_CSV_FIELD_LIMIT = 2**31 - 1  # a text cell holds what the warehouse holds, tens of MB and more


@dataclass(frozen=True)
class BillingTotals:
    calls: int
    billable_seconds: int
    retail_billable_seconds: int
    cost: Decimal
    revenue: Decimal
    margin: Decimal


# -- SQL pieces (all of them this module's own text) ---------------------------------------


def _neutralised(expression: str) -> str:
    return (
        f"CASE WHEN left({expression}, 1) IN {_FORMULA_START_SQL} "
        f"THEN '''' || {expression} ELSE {expression} END"
    )


def _select_list(fmt: str) -> str:
    """The export columns of source ``c``, as the format writes them."""
    items = []
    for name in EXPORT_COLUMNS:
        column = f'c."{name}"'
        if fmt == "csv" and name in TEXT_COLUMNS:
            items.append(f'{_neutralised(column)} AS "{name}"')
        elif fmt == "json" and name in MONEY_COLUMNS:
            items.append(f'CAST({column} AS VARCHAR) AS "{name}"')
        else:
            items.append(f'{column} AS "{name}"')
    return ", ".join(items)


def _totals_row_select() -> str:
    """The CSV totals row, from parameters (the amounts come as their exact decimal text)."""
    items = []
    for name in EXPORT_COLUMNS:
        if name == "call_id":
            items.append(f"'{TOTAL_CALL_ID}' AS call_id")
        elif name == "carrier_id":
            items.append(f"{_neutralised('CAST($carrier_id AS VARCHAR)')} AS carrier_id")
        elif name in BILLING_TOTAL_COLUMNS:
            kind = "VARCHAR" if name in MONEY_COLUMNS else "BIGINT"
            items.append(f'CAST(${name} AS {kind}) AS "{name}"')
        else:
            items.append(f'CAST(NULL AS VARCHAR) AS "{name}"')
    items.append("CAST($calls AS BIGINT) AS calls")
    return "SELECT " + ", ".join(items)


# -- connections and files ------------------------------------------------------------------


@contextlib.contextmanager
def _connection(warehouse: Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with the export's memory budget and a spill folder, in UTC."""
    with step_connection(warehouse, MEMORY_LIMIT) as con:
        con.execute("SET TimeZone = 'UTC'")
        yield con


def _files_between(warehouse: Warehouse, first: date, last: date) -> list[Path]:
    """The ``cdrs`` files of the days from ``first`` to ``last``, both included."""
    files: list[Path] = []
    for day in warehouse.cdrs_days():
        if first.isoformat() <= day <= last.isoformat():
            files.extend(warehouse.table_files_for_day(day))
    return files


def _calls_source(con: duckdb.DuckDBPyConnection, files: list[Path], caller_numbers: str) -> str:
    """The ``cdrs`` rows of ``files``, caller numbers shown as ``caller_numbers`` says."""
    if files:
        return private_cdrs(read_parquet_sql(files), caller_numbers)
    # No file: an empty table with the columns and types of ``cdrs``.
    con.execute(f"CREATE OR REPLACE TEMP TABLE no_cdrs ({EMPTY_TABLES['cdrs']})")
    return private_cdrs("no_cdrs", caller_numbers)


def _copy(
    con: duckdb.DuckDBPyConnection, query: str, options: str, path: Path, params: dict[str, Any]
) -> int:
    row = con.execute(
        f"COPY ({query}) TO $copy_path ({options})", {**params, "copy_path": str(path)}
    ).fetchone()
    return int(row[0]) if row else 0


# -- ad hoc export ----------------------------------------------------------------------------


def export_calls(
    warehouse: Warehouse,
    output: Path,
    fmt: str,
    start_date: date,
    end_date: date,
    carrier_id: str | None = None,
    country_code: str | None = None,
    caller_numbers: str = "clear",
) -> int:
    """Write the calls of ``start_date``..``end_date`` (inclusive) to ``output``; the row count."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if start_date > end_date:
        raise ValueError(f"start date {start_date} is after end date {end_date}")
    output = Path(output)
    files = _files_between(warehouse, start_date, end_date)
    conditions = ["c.call_date BETWEEN $start_date AND $end_date"]
    params: dict[str, Any] = {"start_date": start_date, "end_date": end_date}
    if carrier_id is not None:
        conditions.append("c.carrier_id = $carrier_id")
        params["carrier_id"] = carrier_id
    if country_code is not None:
        conditions.append("c.country_code = $country_code")
        params["country_code"] = country_code.strip().upper()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(output)
    try:
        with _connection(warehouse) as con:
            query = (
                f"SELECT {_select_list(fmt)} FROM {_calls_source(con, files, caller_numbers)} AS c "
                f"WHERE {' AND '.join(conditions)} ORDER BY {_ORDER}"
            )
            rows = _copy(con, query, _COPY_OPTIONS[fmt], tmp, params)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


# -- monthly billing export -------------------------------------------------------------------


def billing_dir(warehouse: Warehouse, month: str) -> Path:
    _month_days(month)
    return warehouse.root / "exports" / "billing" / month


def carrier_file_stem(carrier_id: str) -> str:
    """The file name (without suffix) of a carrier's billing files: safe, and distinct per id.

    The stem is the percent-encoded id (reversible with ``urllib.parse.unquote``) when that
    is at most ``_MAX_STEM_BYTES`` long. A longer one is cut to ``_MAX_STEM_BYTES`` (never
    inside a ``%XX``) and followed by ``~`` and the first ``_HASH_DIGITS`` hex digits of the
    id's SHA-256: such a stem is longer than any whole one, so the two kinds never meet, and
    at most ``_MAX_STEM_BYTES + 1 + _HASH_DIGITS`` (217) bytes, so that every name made from
    it (the longest is ``.<stem>.totals.part``) stays under the 255 bytes of a file name.
    """
    if not carrier_id:
        raise ValueError("a carrier id must not be empty")
    stem = urllib.parse.quote(carrier_id, safe="")  # keeps only A-Z a-z 0-9 _ . - ~
    if stem[0] in ".-~":
        stem = f"%{ord(stem[0]):02X}{stem[1:]}"
    if len(stem) <= _MAX_STEM_BYTES:  # ASCII: one byte a character
        return stem
    prefix = stem[:_MAX_STEM_BYTES]
    escape = prefix.rfind("%", -2)  # a %XX cut short by the limit is left out whole
    if escape != -1:
        prefix = prefix[:escape]
    digest = hashlib.sha256(carrier_id.encode()).hexdigest()
    return f"{prefix}~{digest[:_HASH_DIGITS]}"


def _month_days(month: str) -> tuple[date, date]:
    if not _MONTH.fullmatch(month):
        raise ValueError(f"month must be YYYY-MM, got {month!r}")
    try:
        first = date(int(month[:4]), int(month[5:]), 1)
    except ValueError:
        raise ValueError(f"month must be YYYY-MM, got {month!r}") from None
    following = (first + timedelta(days=31)).replace(day=1)
    return first, following - timedelta(days=1)


@contextlib.contextmanager
def _billing_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
        yield
    finally:
        os.close(fd)


def _clear_leftovers(folder: Path) -> None:
    """Remove the temporary folders of killed writers (call holding the billing lock)."""
    for path in [*folder.glob(".*.tmp"), *folder.glob(".*.old")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _append(target: Path, part: Path) -> None:
    with open(target, "ab") as out, open(part, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
    part.unlink()


def _write_json_file(path: Path, head: dict[str, Any], calls_array: Path) -> None:
    """``head`` as a JSON object whose last member ``calls`` is the array in ``calls_array``."""
    with open(path, "wb") as out:
        out.write(json.dumps(head)[:-1].encode())
        out.write(b', "calls": ')
        with open(calls_array, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        out.write(b"}\n")
    calls_array.unlink()


def _write_carrier_files(
    con: duckdb.DuckDBPyConnection,
    calls: Path,
    folder: Path,
    month: str,
    carrier_id: str,
    totals: BillingTotals,
) -> None:
    stem = carrier_file_stem(carrier_id)
    of_carrier = {"calls_path": str(calls), "carrier_id": carrier_id}
    lines = "SELECT {columns} FROM read_parquet($calls_path) AS c WHERE c.carrier_id = $carrier_id"
    # CSV: the call lines, then the totals row (same writer, same quoting).
    csv_path = folder / f"{stem}.csv"
    _copy(
        con,
        lines.format(columns=f"{_select_list('csv')}, CAST(NULL AS BIGINT) AS calls"),
        _COPY_OPTIONS["csv"],
        csv_path,
        of_carrier,
    )
    totals_part = folder / f".{stem}.totals.part"
    # Money as its exact decimal text at its scale ("0.0000", never "0E-4").
    values = {k: format(v, "f") if isinstance(v, Decimal) else v for k, v in asdict(totals).items()}
    _copy(
        con,
        _totals_row_select(),
        "FORMAT csv, HEADER false, COMPRESSION none",
        totals_part,
        {"carrier_id": carrier_id, **values},
    )
    _append(csv_path, totals_part)
    # JSON: the head, then DuckDB's array of the calls.
    calls_part = folder / f".{stem}.calls.part"
    _copy(
        con,
        lines.format(columns=_select_list("json")),
        "FORMAT json, ARRAY true, COMPRESSION none",
        calls_part,
        of_carrier,
    )
    head = {"carrier_id": carrier_id, "month": month, "totals": values}
    _write_json_file(folder / f"{stem}.json", head, calls_part)


def _swap_in(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.old")
    had_old = target.exists()
    if had_old:
        os.replace(target, old)
    os.replace(staging, target)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


def write_billing_month(
    warehouse: Warehouse, month: str, caller_numbers: str = "clear"
) -> dict[str, BillingTotals]:
    """Write every carrier's billing files of ``month`` (YYYY-MM); each carrier's totals.

    ``caller_numbers`` (clear, hash or mask): what the call lines show of caller numbers.
    """
    first, last = _month_days(month)
    target = billing_dir(warehouse, month)
    files = _files_between(warehouse, first, last)
    out: dict[str, BillingTotals] = {}
    with _billing_lock(target.parent):
        _clear_leftovers(target.parent)
        staging = target.with_name(f".{month}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        staging.mkdir()
        try:
            with _connection(warehouse) as con:
                calls = staging / ".calls.parquet.part"
                # One sorted snapshot of the month: totals and lines both come from it.
                source = _calls_source(con, files, caller_numbers)
                _copy(
                    con,
                    f"SELECT {_select_list('parquet')} FROM {source} AS c "
                    "WHERE c.call_date BETWEEN $first AND $last "
                    f"ORDER BY c.carrier_id, {_ORDER}",
                    "FORMAT parquet",
                    calls,
                    {"first": first, "last": last},
                )
                sums = ", ".join(
                    f"CAST(coalesce(sum({name}), 0) AS VARCHAR)" for name in BILLING_TOTAL_COLUMNS
                )
                rows = con.execute(
                    f"SELECT carrier_id, count(*), {sums} FROM read_parquet($calls_path) "
                    "GROUP BY carrier_id ORDER BY carrier_id",
                    {"calls_path": str(calls)},
                ).fetchall()
                for carrier_id, count, *amounts in rows:
                    seconds, retail_seconds, cost, revenue, margin = amounts
                    totals = BillingTotals(
                        calls=int(count),
                        billable_seconds=int(seconds),
                        retail_billable_seconds=int(retail_seconds),
                        cost=Decimal(cost),
                        revenue=Decimal(revenue),
                        margin=Decimal(margin),
                    )
                    _write_carrier_files(con, calls, staging, month, str(carrier_id), totals)
                    out[str(carrier_id)] = totals
            calls.unlink()
            _swap_in(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def read_billing_totals(warehouse: Warehouse, month: str) -> dict[str, BillingTotals]:
    """The totals rows of a month's billing CSV files, by carrier id."""
    folder = billing_dir(warehouse, month)
    out: dict[str, BillingTotals] = {}
    paths = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not paths:
        return out
    columns = ", ".join(("calls", *BILLING_TOTAL_COLUMNS))
    with duckdb.connect() as con:
        for path in paths:
            if len(path.stem) > _MAX_STEM_BYTES:  # a shortened name: the id is in the file
                carrier_id, rows = _long_carrier_totals(path)
            else:
                carrier_id = urllib.parse.unquote(path.stem)
                rows = con.execute(
                    f"SELECT {columns} FROM read_csv($path, header = true, all_varchar = true, "
                    "delim = ',', quote = '\"', escape = '\"') WHERE calls IS NOT NULL",
                    {"path": str(path)},
                ).fetchall()
            if len(rows) != 1:
                raise ValueError(f"{path.name}: expected one totals row, found {len(rows)}")
            calls, seconds, retail_seconds, cost, revenue, margin = rows[0]
            out[carrier_id] = BillingTotals(
                calls=int(calls),
                billable_seconds=int(seconds),
                retail_billable_seconds=int(retail_seconds),
                cost=Decimal(cost),
                revenue=Decimal(revenue),
                margin=Decimal(margin),
            )
    return out


def _long_carrier_totals(path: Path) -> tuple[str, list[tuple[str, ...]]]:
    """The carrier id and the totals rows of a billing CSV named by a shortened stem.

    The id is the totals row's ``carrier_id`` cell, or that cell without its first character
    where the CSV neutralised a formula start with ``'``: whichever has the file's stem.
    """
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # the csv module's default is 128 KiB
    names = ("calls", *BILLING_TOTAL_COLUMNS)
    cells: list[str] = []
    rows: list[tuple[str, ...]] = []
    with open(path, encoding="utf-8", newline="") as lines:
        for record in csv.DictReader(lines):
            if record["calls"]:
                cells.append(record["carrier_id"])
                rows.append(tuple(record[name] for name in names))
    if not cells:
        return path.stem, rows  # no totals row: the caller reports it
    cell = cells[0]
    for carrier_id in (cell, cell[1:]) if cell.startswith("'") else (cell,):
        if carrier_id and carrier_file_stem(carrier_id) == path.stem:
            return carrier_id, rows
    raise ValueError(f"{path.name}: the totals row's carrier_id does not give this name")
