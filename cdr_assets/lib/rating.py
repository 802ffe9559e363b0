"""Rating engine: the rate decks under ``rates/`` and the pricing of CDRs against them.

This module owns the billing contract of ``docs/rating.md``:

* :func:`load_decks` reads ``config.toml``, ``carriers.csv``, ``cost/<carrier_id>.csv`` and the
  optional ``retail.csv``, refuses any deck that breaks a rule with a :class:`DeckError` naming
  the file, the line and the rule, and returns the decks as Arrow tables (:class:`RateDecks`).
* :func:`rate_calls` prices a table of calls in DuckDB and returns a lazy relation with the
  rating columns appended.

Money never goes through a binary float. Rates are parsed as :class:`~decimal.Decimal`, stored
as Arrow/DuckDB ``DECIMAL`` and, for the arithmetic, as integers scaled by a common power of
ten; amounts are rounded half-up with integer (HUGEINT) division. Rating is set-based SQL: one
equality join per distinct prefix length, never a Python loop per call.

The module knows nothing about Dagster: assets call these two functions.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CALL_TYPES",
    "RATING_COLUMNS",
    "RATING_STATUSES",
    "DeckError",
    "RateDecks",
    "RatingConfig",
    "load_decks",
    "rate_calls",
]

CALL_TYPES = ("local", "national", "international")
RATING_STATUSES = ("unanswered", "unknown_carrier", "no_rate", "no_retail_rate", "rated")

CONFIG_FILE = "config.toml"
CARRIERS_FILE = "carriers.csv"
COST_DIR = "cost"
RETAIL_FILE = "retail.csv"

REQUIRED_DECK_COLUMNS = ("prefix", "destination", "rate_per_minute")
DEFAULT_INCREMENT = (60, 60)
MAX_INCREMENT = 1_000_000  # seconds; keeps the billable arithmetic far inside BIGINT

MAX_MONEY_DECIMALS = 12
# Rates, fees and the markup are limited to 12 decimal places so that every intermediate of
# the integer arithmetic stays far inside HUGEINT (DuckDB raises on overflow, never wraps).
MAX_RATE_DECIMALS = 12
# decimal128(38, s) must hold the value: at most 38 - 12 digits before the point.
MAX_RATE_INTEGER_DIGITS = 38 - MAX_RATE_DECIMALS
VERSION_LENGTH = 12

RATING_COLUMNS = (
    "billable_seconds",
    "rate_prefix",
    "destination",
    "rate_per_minute",
    "connection_fee",
    "cost",
    "retail_prefix",
    "retail_destination",
    "retail_rate_per_minute",
    "retail_billable_seconds",
    "revenue",
    "margin",
    "rating_status",
    "deck_version",
)

_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_INCREMENT_RE = re.compile(r"([0-9]+)\s*/\s*([0-9]+)")
_TOML_LINE_RE = re.compile(r"at line (\d+)")
# Open effective bounds, for comparisons.
_NEVER = datetime.min.replace(tzinfo=UTC)
_FOREVER = datetime.max.replace(tzinfo=UTC)


class DeckError(ValueError):
    """A rate deck or the rating configuration breaks a rule of the billing contract.

    The message names the file (relative to the rates directory), the 1-based physical line
    (the CSV header is line 1) and the rule that was broken.
    """


@dataclass(frozen=True)
class RatingConfig:
    """``config.toml``: one currency, the money precision and the optional markup."""

    currency: str
    money_decimals: int
    markup: Decimal | None


@dataclass(frozen=True)
class RateDecks:
    """Validated decks, ready to register into DuckDB.

    ``cost`` stacks every ``cost/<carrier_id>.csv`` with a ``carrier_id`` column; ``retail`` is
    ``retail.csv`` or ``None`` when there is none. Both keep the deck as written (empty
    ``call_type`` and open effective bounds are null) plus ``source_file``/``source_line`` so
    that a priced call can be traced back to its row. ``files`` maps every file read to its
    sha256; a carrier is known when ``cost/<carrier_id>.csv`` is among them, even with no rows.
    ``version`` is a short hash of the content of every file read, so two equal versions
    price identically.
    """

    config: RatingConfig
    carriers: dict[str, str]
    cost: pa.Table
    retail: pa.Table | None
    version: str
    files: dict[str, str]


# --------------------------------------------------------------------------------------------
# Deck loading
# --------------------------------------------------------------------------------------------
#
# A deck is validated column by column: every distinct text of a column is parsed once, and
# when some are refused the first row holding one is found. That keeps a 50,000-row deck at a
# fraction of a second while still naming the first offending line, as a row-by-row reading
# would.


def _decimal_scale(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


class _Invalid(Exception):
    """A value breaks a rule; the message is the rule. The caller adds file and line."""


def _fail(rel: str, line: int | None, rule: str) -> DeckError:
    where = f"{rel} line {line}" if line is not None else rel
    return DeckError(f"{where}: {rule}")


def _decode(data: bytes, rel: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _fail(rel, line, "the file is not UTF-8 text") from None


@dataclass
class _CsvTable:
    """A CSV file: stripped header, and its data rows (blank lines left out) as columns."""

    rel: str
    header_line: int
    columns: dict[str, int]  # lower-case header name -> position
    lines: list[int]  # first physical line of each data row, 1-based
    records: list[list[str]]  # data rows, fields not yet stripped

    def column(self, name: str) -> list[str]:
        """The stripped values of a column; empty strings when the column is absent."""
        index = self.columns.get(name)
        if index is None:
            return [""] * len(self.records)
        return list(map(str.strip, map(itemgetter(index), self.records)))


def _read_csv(data: bytes, rel: str, required: tuple[str, ...]) -> _CsvTable:
    text = _decode(data, rel)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    next_line = 1
    try:
        if '"' not in text:
            # Without quotes, a record is exactly one physical line.
            records = list(reader)
            lines = list(range(1, len(records) + 1))
        else:
            records, lines = [], []
            for record in reader:
                records.append(record)
                lines.append(next_line)
                next_line = reader.line_num + 1
    except csv.Error as exc:
        # A quoted field may run over lines: name the line where the bad record starts.
        line = next_line if '"' in text else reader.line_num
        raise _fail(rel, line, f"malformed CSV: {exc}") from None

    # Blank lines (nothing but separators and spaces) are left out. Only a record without
    # anything in its first field can be one, so only those are looked at closely.
    firsts = list(map(str.strip, (record[0] if record else "" for record in records)))
    blank = {i for i, first in enumerate(firsts) if not first and not "".join(records[i]).strip()}
    if blank:
        keep = [i for i in range(len(records)) if i not in blank]
        records = [records[i] for i in keep]
        lines = [lines[i] for i in keep]
    if not records:
        raise _fail(rel, 1, "missing header line")

    header_line, header = lines[0], [name.strip() for name in records[0]]
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        key = name.lower()
        if key in columns:
            raise _fail(rel, header_line, f"column {name!r} appears twice in the header")
        columns[key] = index
    for name in required:
        if name not in columns:
            raise _fail(rel, header_line, f"missing required column {name!r}")
    width = len(header)
    if set(map(len, records)) != {width}:
        for line, record in zip(lines, records, strict=True):
            if len(record) != width:
                raise _fail(
                    rel, line, f"expected {width} fields as in the header, got {len(record)}"
                )
    return _CsvTable(rel, header_line, columns, lines[1:], records[1:])


def _decimal_parser(column: str) -> Callable[[str], Decimal]:
    def parse(text: str) -> Decimal:
        rule = f"{column} must be a decimal >= 0, got {text!r}"
        if not _DECIMAL_RE.fullmatch(text):
            raise _Invalid(rule)
        value = Decimal(text)
        if value < 0:
            raise _Invalid(rule)
        if _decimal_scale(value) > MAX_RATE_DECIMALS:
            raise _Invalid(
                f"{column} has more than {MAX_RATE_DECIMALS} decimal places, got {text!r}"
            )
        if value.adjusted() >= MAX_RATE_INTEGER_DIGITS:
            raise _Invalid(
                f"{column} has more than {MAX_RATE_INTEGER_DIGITS} digits before the point, "
                f"got {text!r}"
            )
        return value + 0  # '-0' becomes '0', the scale stays

    return parse


def _parse_prefix(text: str) -> str:
    if not (text.isascii() and (text.isdigit() or not text)):
        raise _Invalid(f"prefix must be digits only (E.164 without '+'), got {text!r}")
    return text


def _parse_destination(text: str) -> str:
    if not text:
        raise _Invalid("destination is required")
    return text


def _parse_call_type(text: str) -> str | None:
    call_type = text.lower()
    if call_type and call_type not in CALL_TYPES:
        raise _Invalid(f"call_type must be empty or one of {', '.join(CALL_TYPES)}, got {text!r}")
    return call_type or None


_parse_rate_text = _decimal_parser("rate_per_minute")
_parse_fee_text = _decimal_parser("connection_fee")


def _parse_rate(text: str) -> Decimal:
    if not text:
        raise _Invalid("rate_per_minute is required")
    return _parse_rate_text(text)


def _parse_fee(text: str) -> Decimal:
    return _parse_fee_text(text) if text else Decimal(0)


def _parse_increment(text: str) -> tuple[int, int]:
    if not text:
        return DEFAULT_INCREMENT
    match = _INCREMENT_RE.fullmatch(text)
    parts = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not all(0 < part <= MAX_INCREMENT for part in parts):
        raise _Invalid(
            "increment must be 'initial/subsequent' in whole seconds, both > 0 "
            f"(e.g. 60/60, 1/1, 30/6), got {text!r}"
        )
    return parts


def _instant_parser(column: str) -> Callable[[str], datetime | None]:
    """ISO date (midnight UTC) or datetime (naive = UTC, an offset is converted to UTC)."""

    def parse(text: str) -> datetime | None:
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise _Invalid(f"{column} must be an ISO date or datetime, got {text!r}") from None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    return parse


_COLUMN_PARSERS: tuple[tuple[str, Callable[[str], Any]], ...] = (
    ("prefix", _parse_prefix),
    ("destination", _parse_destination),
    ("call_type", _parse_call_type),
    ("rate_per_minute", _parse_rate),
    ("connection_fee", _parse_fee),
    ("increment", _parse_increment),
    ("effective_from", _instant_parser("effective_from")),
    ("effective_to", _instant_parser("effective_to")),
)


def _parse_column(texts: Sequence[str], parse: Callable[[str], Any]) -> tuple[list[Any], int, str]:
    """Parse each distinct text once. Returns the values, or the first refused row and rule
    (row -1 when every value is fine)."""
    distinct = set(texts)
    if parse is _parse_prefix:
        joined = "".join(distinct)
        if joined.isascii() and (joined.isdigit() or not joined):
            return list(texts), -1, ""
    elif parse is _parse_destination and "" not in distinct:
        return list(texts), -1, ""
    parsed: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for text in distinct:
        try:
            parsed[text] = parse(text)
        except _Invalid as exc:
            refused[text] = str(exc)
    if refused:
        row = next(i for i, text in enumerate(texts) if text in refused)
        return [], row, refused[texts[row]]
    return list(map(parsed.__getitem__, texts)), -1, ""


def _read_deck(data: bytes, rel: str) -> dict[str, list[Any]]:
    """Validate a deck; return its columns (parsed), plus ``line``, the line of each row."""
    table = _read_csv(data, rel, REQUIRED_DECK_COLUMNS)
    first_error: tuple[int, int, str] | None = None  # (row, column order, rule)
    parsed: dict[str, list[Any]] = {"line": table.lines}
    texts: dict[str, list[str]] = {}
    for order, (name, parse) in enumerate(_COLUMN_PARSERS):
        texts[name] = table.column(name)
        values, row, rule = _parse_column(texts[name], parse)
        if row >= 0:
            if first_error is None or (row, order) < first_error[:2]:
                first_error = (row, order, rule)
        else:
            parsed[name] = values
    if "effective_from" in parsed and "effective_to" in parsed:
        for row, (start, end) in enumerate(
            zip(parsed["effective_from"], parsed["effective_to"], strict=True)
        ):
            if first_error is not None and row >= first_error[0]:
                break
            if start is not None and end is not None and end <= start:
                rule = (
                    "effective_to must be after effective_from, got "
                    f"{texts['effective_from'][row]!r} to {texts['effective_to'][row]!r}"
                )
                first_error = (row, len(_COLUMN_PARSERS), rule)
                break
    if first_error is not None:
        row, _, rule = first_error
        raise _fail(rel, table.lines[row], rule)
    _check_overlaps(parsed, rel)
    return parsed


def _check_overlaps(deck: dict[str, list[Any]], rel: str) -> None:
    """Refuse two rows with the same prefix and call_type whose effective windows overlap,
    naming the first row (in file order) that overlaps an earlier one, and that one."""
    keys = list(zip(deck["prefix"], deck["call_type"], strict=True))
    if len(set(keys)) == len(keys):
        return
    repeated = {key for key, count in Counter(keys).items() if count > 1}
    groups: dict[tuple[str, str | None], list[int]] = {}
    for row, key in enumerate(keys):
        if key in repeated:
            groups.setdefault(key, []).append(row)
    lines = deck["line"]
    starts = [_NEVER if t is None else t for t in deck["effective_from"]]
    ends = [_FOREVER if t is None else t for t in deck["effective_to"]]
    clashes: list[tuple[int, int, str, str | None]] = []
    for (prefix, call_type), members in groups.items():
        # Until the first clash the rows seen are disjoint windows: kept sorted by start,
        # their ends are sorted too, and those overlapping a new window are contiguous.
        seen_starts: list[datetime] = []
        seen_ends: list[datetime] = []
        seen_lines: list[int] = []
        for row in members:
            first = bisect.bisect_right(seen_ends, starts[row])
            last = bisect.bisect_left(seen_starts, ends[row])
            if first < last:
                clashes.append((lines[row], min(seen_lines[first:last]), prefix, call_type))
                break
            seen_starts.insert(first, starts[row])
            seen_ends.insert(first, ends[row])
            seen_lines.insert(first, lines[row])
    if clashes:
        second, first_line, prefix, call_type = min(clashes)
        raise _fail(
            rel,
            second,
            f"rows with the same prefix {prefix!r} and call_type {call_type or ''!r} have "
            f"overlapping effective windows (lines {first_line} and {second})",
        )


def _toml_key_line(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=", re.MULTILINE)
    match = pattern.search(text)
    return None if match is None else text.count("\n", 0, match.start()) + 1


def _read_config(data: bytes) -> RatingConfig:
    rel = CONFIG_FILE
    text = _decode(data, rel)
    try:
        raw = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE_RE.search(str(exc))
        raise _fail(rel, int(found.group(1)) if found else None, f"not valid TOML: {exc}") from None

    def fail(key: str, rule: str) -> DeckError:
        return _fail(rel, _toml_key_line(text, key), rule)

    currency = raw.get("currency")
    if currency is None:
        raise fail("currency", "currency is required")
    if not isinstance(currency, str) or not currency.strip():
        raise fail("currency", f"currency must be a non-empty string, got {currency!r}")
    decimals = raw.get("money_decimals")
    if decimals is None:
        raise fail("money_decimals", "money_decimals is required")
    if (
        isinstance(decimals, bool)
        or not isinstance(decimals, int)
        or not 0 <= decimals <= MAX_MONEY_DECIMALS
    ):
        raise fail(
            "money_decimals",
            f"money_decimals must be an integer from 0 to {MAX_MONEY_DECIMALS}, got {decimals!r}",
        )
    markup = raw.get("markup")
    if markup is not None:
        rule = f"markup must be a decimal >= 0 with at most {MAX_RATE_DECIMALS} decimal places"
        if isinstance(markup, bool) or not isinstance(markup, int | Decimal):
            raise fail("markup", f"{rule}, got {markup!r}")
        markup = Decimal(markup)
        if (
            not markup.is_finite()
            or markup < 0
            or _decimal_scale(markup) > MAX_RATE_DECIMALS
            or markup.adjusted() >= MAX_RATE_INTEGER_DIGITS
        ):
            raise fail("markup", f"{rule}, got {str(markup)!r}")
        markup = markup + 0
    return RatingConfig(currency=currency.strip(), money_decimals=decimals, markup=markup)


def _read_carriers(data: bytes) -> dict[str, str]:
    rel = CARRIERS_FILE
    if not _decode(data, rel).strip():
        return {}
    table = _read_csv(data, rel, ("carrier_id", "name"))
    carriers: dict[str, str] = {}
    seen: dict[str, int] = {}
    for line, carrier_id, name in zip(
        table.lines, table.column("carrier_id"), table.column("name"), strict=True
    ):
        if not carrier_id:
            raise _fail(rel, line, "carrier_id is required")
        if carrier_id in seen:
            raise _fail(
                rel, line, f"carrier_id {carrier_id!r} already listed on line {seen[carrier_id]}"
            )
        carriers[carrier_id] = name
        seen[carrier_id] = line
    return carriers


def _deck_schema(scale: int, with_carrier: bool) -> pa.Schema:
    money = pa.decimal128(38, scale)
    instant = pa.timestamp("us", tz="UTC")
    fields = [("carrier_id", pa.string())] if with_carrier else []
    fields += [
        ("prefix", pa.string()),
        ("destination", pa.string()),
        ("call_type", pa.string()),
        ("rate_per_minute", money),
        ("connection_fee", money),
        ("increment_initial", pa.int64()),
        ("increment_subsequent", pa.int64()),
        ("effective_from", instant),
        ("effective_to", instant),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
    ]
    return pa.schema(fields)


def _deck_scale(deck: dict[str, list[Any]]) -> int:
    values = set(deck["rate_per_minute"]) | set(deck["connection_fee"])
    return max((_decimal_scale(value) for value in values), default=0)


def _deck_table(rel: str, carrier_id: str | None, deck: dict[str, list[Any]]) -> pa.Table:
    schema = _deck_schema(_deck_scale(deck), carrier_id is not None)
    size = len(deck["line"])
    increments = deck["increment"]
    columns: dict[str, pa.Array] = {
        "prefix": pa.array(deck["prefix"], type=pa.string()),
        "destination": pa.array(deck["destination"], type=pa.string()),
        "call_type": pa.array(deck["call_type"], type=pa.string()),
        "rate_per_minute": pa.array(
            deck["rate_per_minute"], type=schema.field("rate_per_minute").type
        ),
        "connection_fee": pa.array(
            deck["connection_fee"], type=schema.field("connection_fee").type
        ),
        "increment_initial": pa.array(list(map(itemgetter(0), increments)), type=pa.int64()),
        "increment_subsequent": pa.array(list(map(itemgetter(1), increments)), type=pa.int64()),
        "effective_from": pa.array(
            deck["effective_from"], type=schema.field("effective_from").type
        ),
        "effective_to": pa.array(deck["effective_to"], type=schema.field("effective_to").type),
        "source_file": pa.array([rel] * size, type=pa.string()),
        "source_line": pa.array(deck["line"], type=pa.int64()),
    }
    if carrier_id is not None:
        columns = {"carrier_id": pa.array([carrier_id] * size, type=pa.string()), **columns}
    return pa.table(columns, schema=schema)


def _rescale(table: pa.Table, scale: int) -> pa.Table:
    """The deck with its rates and fees at ``scale`` decimals (never fewer than it has)."""
    money = pa.decimal128(38, scale)
    for name in ("rate_per_minute", "connection_fee"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table.column(name).cast(money))
    return table


def load_decks(rates_dir: Path) -> RateDecks:
    """Read and validate every deck under ``rates_dir``; raise :class:`DeckError` on any fault."""
    rates_dir = Path(rates_dir)
    if not rates_dir.is_dir():
        raise DeckError(f"rates directory {rates_dir.name!r} does not exist")
    files: dict[str, str] = {}

    def read(rel: str) -> bytes:
        data = (rates_dir / rel).read_bytes()
        files[rel] = hashlib.sha256(data).hexdigest()
        return data

    if not (rates_dir / CONFIG_FILE).is_file():
        raise DeckError(f"{CONFIG_FILE}: file not found (currency and money_decimals are required)")
    config = _read_config(read(CONFIG_FILE))
    carriers = _read_carriers(read(CARRIERS_FILE)) if (rates_dir / CARRIERS_FILE).is_file() else {}

    # Each deck becomes Arrow as soon as it is read, at its own scale, so that the Python
    # objects of one deck are freed before the next is read.
    cost_tables: list[pa.Table] = []
    cost_dir = rates_dir / COST_DIR
    if cost_dir.is_dir():
        for path in sorted(cost_dir.iterdir()):
            if path.suffix != ".csv" or path.name.startswith(".") or not path.is_file():
                continue
            rel = f"{COST_DIR}/{path.name}"
            cost_tables.append(_deck_table(rel, path.stem, _read_deck(read(rel), rel)))
    retail = None
    if (rates_dir / RETAIL_FILE).is_file():
        retail = _deck_table(RETAIL_FILE, None, _read_deck(read(RETAIL_FILE), RETAIL_FILE))

    # One scale for every rate and fee, the largest any deck uses.
    scale = max((_table_scale(table) for table in [*cost_tables, retail]), default=0)
    cost = pa.concat_tables(
        [_deck_schema(scale, True).empty_table()]
        + [_rescale(table, scale) for table in cost_tables]
    )
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]}\n".encode())
    return RateDecks(
        config=config,
        carriers=carriers,
        cost=cost.combine_chunks(),
        retail=None if retail is None else _rescale(retail, scale),
        version=digest.hexdigest()[:VERSION_LENGTH],
        files=dict(sorted(files.items())),
    )


# --------------------------------------------------------------------------------------------
# Rating
# --------------------------------------------------------------------------------------------
#
# The joins work on integers. A called number's digits, right-padded with zeros to
# KEY_DIGITS, are a BIGINT; its first L digits are then that integer divided by 10^(KEY_DIGITS
# - L), provided the number has at least L digits. A prefix of length L is the same integer,
# so one equality join per prefix length finds the candidates, and the longest length that
# found one wins. Prefixes longer than KEY_DIGITS (no E.164 number is that long) are compared
# as strings. A called number that is not '+' followed by digits matches empty prefixes only.
KEY_DIGITS = 18
# Prefixes of up to SHORT_DIGITS digits are few; they are expanded to every digit string of
# that length, so that a single join replaces one join per short length.
SHORT_DIGITS = 3
# A call's type as an index: the lookup rows carry one deck row per index (0: unknown type).
_CALL_TYPE_INDEX = {"": 0, "local": 1, "national": 2, "international": 3}
_BIGINT_MAX = 2**63 - 1

# Deck rows as the rating reads them. ``rid`` is the row's position; *_units hold the rate and
# 60 x the connection fee as integers scaled by 10^scale, the form the exact arithmetic needs.
_ROWS_SQL = """
CREATE OR REPLACE TEMP TABLE {rows} AS
SELECT
    rid,
    prefix,
    destination,
    rate_per_minute,
    increment_initial AS inc_a,
    increment_subsequent AS inc_b,
    connection_fee,
    CAST(rate_units AS {units_type}) AS rate_units,
    CAST(CAST(fee_units AS HUGEINT) * 60 AS {units_type}) AS fee60_units
FROM {arrow}
"""

# Known carriers and the small integer code that stands for each in the lookup groups.
_KNOWN_SQL = """
CREATE OR REPLACE TEMP TABLE {known} AS
SELECT carrier_id, CAST(row_number() OVER (ORDER BY carrier_id) - 1 AS INTEGER) AS code
FROM {arrow}
"""

# One lookup row per (carrier, prefix, time segment). The segments cut a prefix's timeline at
# every effective bound of its rows, so inside one the set of live rows is constant. The row
# names, for each call type index, the deck row that prices a call of that type there: the
# row with that call_type, else the row without one (r0, for a call of unknown type, only the
# latter). A probe then finds at most one lookup row: the calls are never sorted or grouped.
_KEYS_SQL = """
CREATE OR REPLACE TEMP TABLE {keys} AS
WITH deck AS (
    SELECT
        d.rid,
        {code} AS code,
        d.prefix,
        coalesce(d.call_type, '') AS call_type,
        coalesce(d.effective_from, '-infinity'::TIMESTAMPTZ) AS eff_from,
        coalesce(d.effective_to, 'infinity'::TIMESTAMPTZ) AS eff_to
    FROM {arrow} AS d
    {known_join}
),
bounds AS (
    SELECT code, prefix, eff_from AS t FROM deck
    UNION
    SELECT code, prefix, eff_to AS t FROM deck
),
segments AS (
    SELECT
        code,
        prefix,
        t AS seg_from,
        lead(t) OVER (PARTITION BY code, prefix ORDER BY t) AS seg_to
    FROM bounds
),
live AS (
    SELECT
        s.code,
        s.prefix,
        s.seg_from,
        s.seg_to,
        -- windows of one prefix and call_type never overlap: at most one row per max()
        max(d.rid) FILTER (WHERE d.call_type = '') AS any_type,
        max(d.rid) FILTER (WHERE d.call_type = 'local') AS local,
        max(d.rid) FILTER (WHERE d.call_type = 'national') AS national,
        max(d.rid) FILTER (WHERE d.call_type = 'international') AS international
    FROM segments AS s
    JOIN deck AS d
        ON d.code = s.code
        AND d.prefix = s.prefix
        AND d.eff_from <= s.seg_from
        AND s.seg_to <= d.eff_to
    WHERE s.seg_to IS NOT NULL
    GROUP BY ALL
)
SELECT
    code,
    length(prefix) AS plen,
    prefix,
    CASE WHEN length(prefix) BETWEEN 1 AND {key_digits} THEN CAST(prefix AS BIGINT) END AS pkey,
    seg_from,
    seg_to,
    any_type AS r0,
    coalesce(local, any_type) AS r1,
    coalesce(national, any_type) AS r2,
    coalesce(international, any_type) AS r3
FROM live
"""

# The lookup rows of prefixes up to {width} digits, expanded to every digit string K of up to
# {width} digits they are a prefix of; per K, time segment and call type index the longest
# prefix with a row for that type wins. A call probes it with its first {width} digits (fewer
# when the number is shorter), packed with their count into skey.
_SHORT_SQL = """
CREATE OR REPLACE TEMP TABLE {short} AS
WITH RECURSIVE suffixes(s) AS (
    SELECT ''
    UNION ALL
    SELECT s || CAST(d AS VARCHAR) FROM suffixes, range(10) AS t(d) WHERE length(s) < {width}
),
candidates AS (
    SELECT k.*, k.prefix || x.s AS digits
    FROM (SELECT * FROM {keys} WHERE plen <= {width}) AS k
    JOIN suffixes AS x ON k.plen + length(x.s) <= {width}
),
bounds AS (
    SELECT code, digits, seg_from AS t FROM candidates
    UNION
    SELECT code, digits, seg_to AS t FROM candidates
),
segments AS (
    SELECT
        code,
        digits,
        t AS seg_from,
        lead(t) OVER (PARTITION BY code, digits ORDER BY t) AS seg_to
    FROM bounds
)
SELECT
    s.code,
    CAST('0' || rpad(s.digits, {width}, '0') AS BIGINT) * 32 + length(s.digits) AS skey,
    s.seg_from,
    s.seg_to,
    arg_max(c.r0, c.plen) FILTER (WHERE c.r0 IS NOT NULL) AS r0,
    arg_max(c.r1, c.plen) FILTER (WHERE c.r1 IS NOT NULL) AS r1,
    arg_max(c.r2, c.plen) FILTER (WHERE c.r2 IS NOT NULL) AS r2,
    arg_max(c.r3, c.plen) FILTER (WHERE c.r3 IS NOT NULL) AS r3
FROM segments AS s
JOIN candidates AS c
    ON c.code = s.code
    AND c.digits = s.digits
    AND c.seg_from <= s.seg_from
    AND s.seg_to <= c.seg_to
WHERE s.seg_to IS NOT NULL
GROUP BY ALL
"""

# Prefix lengths of a lookup table, longest first, and whether a row of that length has a
# bounded segment; a length without one is probed on equality alone.
_LENGTHS_SQL = """
SELECT
    plen,
    bool_or(seg_from <> '-infinity'::TIMESTAMPTZ OR seg_to <> 'infinity'::TIMESTAMPTZ)
FROM {keys}
GROUP BY plen
ORDER BY plen DESC
"""

_BOUNDED_SQL = """
SELECT coalesce(
    bool_or(seg_from <> '-infinity'::TIMESTAMPTZ OR seg_to <> 'infinity'::TIMESTAMPTZ), false
)
FROM {short}
"""

_PARAMS_SQL = """
CREATE OR REPLACE TEMP TABLE {params} AS
SELECT
    deck_version,
    CAST(markup_units AS HUGEINT) AS markup_units,
    CAST(markup_den AS HUGEINT) AS markup_den,
    CAST(markup_units AS {markup_type}) AS fast_markup_units,
    CAST(markup_den AS {markup_type}) AS fast_markup_den,
    CAST(cost_safe_bill AS BIGINT) AS cost_safe_bill,
    CAST(retail_safe_bill AS BIGINT) AS retail_safe_bill,
    CAST(markup_safe_cost AS BIGINT) AS markup_safe_cost
FROM {arrow}
"""

_TABLE_EXISTS_SQL = """
SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?
"""

_COLUMN_TYPE_SQL = """
SELECT data_type FROM duckdb_columns()
WHERE database_name = 'temp' AND table_name = ? AND column_name = ?
"""

# The rating. Placeholders are filled only with names and integers this module generates
# (table names, prefix lengths, powers of ten, the money scale): every value that comes from
# a deck or a CDR reaches the query as table data.
_RATE_SQL = """
WITH base AS (
    SELECT
        c.*{exclude},
        coalesce(
            c.duration_seconds > 0
            AND coalesce(nullif(CAST(c.disposition AS VARCHAR), ''), 'ANSWERED') = 'ANSWERED',
            false
        ) AS __rating_billable,
        CAST(c.duration_seconds AS BIGINT) AS __rating_d,
        {start_time} AS __rating_ts,
        CASE CAST(c.call_type AS VARCHAR)
            WHEN 'local' THEN 1
            WHEN 'national' THEN 2
            WHEN 'international' THEN 3
            ELSE 0
        END AS __rating_ct,
        ltrim(CAST(c.called_number AS VARCHAR), '+') AS __rating_digits
    FROM {calls} AS c
),
keyed AS (
    SELECT
        b.*,
        k.code IS NOT NULL AS __rating_known,
        k.code AS __rating_code,
        strlen(b.__rating_digits) AS __rating_len,
        CASE
            WHEN regexp_full_match(b.__rating_digits, '[0-9]+')
                THEN CAST(left(b.__rating_digits, {key_digits}) AS BIGINT)
                    * {powers}[{key_digits} + 1 - least(strlen(b.__rating_digits), {key_digits})]
        END AS __rating_n
    FROM base AS b
    LEFT JOIN {known} AS k ON k.carrier_id = CAST(b.carrier_id AS VARCHAR)
),
cost_match AS (
    SELECT
        b.*,
        CASE WHEN b.__rating_billable THEN {cost_rid} END AS __rating_cost_rid
    FROM keyed AS b
    {cost_joins}
),
retail_match AS (
    SELECT
        b.*,
        CASE WHEN b.__rating_cost_rid IS NOT NULL THEN {retail_rid} END AS __rating_retail_rid
    FROM cost_match AS b
    {retail_joins}
),
billed AS (
    SELECT
        m.*,
        cr.rid AS __rating_cost_row,
        cr.prefix AS __rating_prefix,
        cr.destination AS __rating_destination,
        cr.rate_per_minute AS __rating_rate,
        cr.connection_fee AS __rating_fee,
        cr.rate_units AS __rating_rate_units,
        cr.fee60_units AS __rating_fee60_units,
        CASE
            WHEN NOT m.__rating_billable THEN 0
            WHEN m.__rating_d <= cr.inc_a THEN cr.inc_a
            ELSE cr.inc_a + ((m.__rating_d - cr.inc_a + cr.inc_b - 1) // cr.inc_b) * cr.inc_b
        END AS __rating_bill,
        rr.rid AS __rating_retail_row,
        rr.prefix AS __rating_retail_prefix,
        rr.destination AS __rating_retail_destination,
        rr.rate_per_minute AS __rating_retail_rate,
        rr.rate_units AS __rating_retail_rate_units,
        rr.fee60_units AS __rating_retail_fee60_units,
        CASE
            WHEN m.__rating_d <= rr.inc_a THEN rr.inc_a
            ELSE rr.inc_a + ((m.__rating_d - rr.inc_a + rr.inc_b - 1) // rr.inc_b) * rr.inc_b
        END AS __rating_retail_row_bill,
        p.*
    FROM retail_match AS m
    LEFT JOIN {cost_rows} AS cr ON cr.rid = m.__rating_cost_rid
    LEFT JOIN {retail_rows} AS rr ON rr.rid = m.__rating_retail_rid
    CROSS JOIN (
        SELECT
            deck_version AS __rating_version,
            markup_units AS __rating_markup_units,
            markup_den AS __rating_markup_den,
            fast_markup_units AS __rating_fast_markup_units,
            fast_markup_den AS __rating_fast_markup_den,
            cost_safe_bill AS __rating_cost_safe_bill,
            retail_safe_bill AS __rating_retail_safe_bill,
            markup_safe_cost AS __rating_markup_safe_cost
        FROM {params}
    ) AS p
),
costed AS (
    SELECT
        b.*,
        CASE
            WHEN NOT b.__rating_billable THEN CAST(0 AS HUGEINT)
            ELSE {cost_units}
        END AS __rating_cost_units,
        CASE
            WHEN NOT b.__rating_billable THEN 0
            WHEN b.__rating_retail_row IS NOT NULL THEN b.__rating_retail_row_bill
            WHEN b.__rating_markup_units IS NOT NULL THEN b.__rating_bill
        END AS __rating_retail_bill
    FROM billed AS b
),
revenued AS (
    SELECT
        c.*,
        CASE
            WHEN NOT c.__rating_billable THEN CAST(0 AS HUGEINT)
            WHEN c.__rating_cost_row IS NULL THEN NULL
            WHEN c.__rating_retail_row IS NOT NULL THEN {retail_units}
            -- half-up of cost x markup = floor((2 cost m + den) / (2 den)), in BIGINT while
            -- that cannot overflow
            WHEN c.__rating_cost_units <= c.__rating_markup_safe_cost THEN CAST(
                (2 * CAST(c.__rating_cost_units AS BIGINT) * c.__rating_fast_markup_units
                    + c.__rating_fast_markup_den) // (2 * c.__rating_fast_markup_den)
                AS HUGEINT
            )
            ELSE (2 * c.__rating_cost_units * c.__rating_markup_units + c.__rating_markup_den)
                // (2 * c.__rating_markup_den)
        END AS __rating_revenue_units
    FROM costed AS c
)
SELECT
    r.* EXCLUDE ({internal}),
    CAST(r.__rating_bill AS BIGINT) AS billable_seconds,
    r.__rating_prefix AS rate_prefix,
    r.__rating_destination AS destination,
    r.__rating_rate AS rate_per_minute,
    r.__rating_fee AS connection_fee,
    {cost} AS cost,
    r.__rating_retail_prefix AS retail_prefix,
    r.__rating_retail_destination AS retail_destination,
    r.__rating_retail_rate AS retail_rate_per_minute,
    CAST(r.__rating_retail_bill AS BIGINT) AS retail_billable_seconds,
    {revenue} AS revenue,
    {margin} AS margin,
    CASE
        WHEN NOT r.__rating_billable THEN 'unanswered'
        WHEN NOT r.__rating_known THEN 'unknown_carrier'
        WHEN r.__rating_cost_row IS NULL THEN 'no_rate'
        WHEN r.__rating_revenue_units IS NULL THEN 'no_retail_rate'
        ELSE 'rated'
    END AS rating_status,
    r.__rating_version AS deck_version
FROM revenued AS r
"""

# Internal columns of _RATE_SQL (without their __rating_ prefix), dropped from its result.
_INTERNAL_COLUMNS = (
    "billable",
    "d",
    "ts",
    "ct",
    "digits",
    "known",
    "code",
    "len",
    "n",
    "cost_rid",
    "retail_rid",
    "cost_row",
    "prefix",
    "destination",
    "rate",
    "fee",
    "rate_units",
    "fee60_units",
    "bill",
    "retail_row",
    "retail_prefix",
    "retail_destination",
    "retail_rate",
    "retail_rate_units",
    "retail_fee60_units",
    "retail_row_bill",
    "version",
    "markup_units",
    "markup_den",
    "fast_markup_units",
    "fast_markup_den",
    "cost_safe_bill",
    "retail_safe_bill",
    "markup_safe_cost",
    "cost_units",
    "retail_bill",
    "revenue_units",
)

# A LEFT JOIN probing the lookup rows of one prefix length, or the expanded short prefixes.
_PROBE_SQL = """
    LEFT JOIN (
        SELECT code, {key_column}, seg_from, seg_to, r0, r1, r2, r3 FROM {table}{where}
    ) AS {alias}
        ON {alias}.{key_column} = {key}{code}{window}"""

_REQUIRED_CALL_COLUMNS = (
    "called_number",
    "call_type",
    "start_time",
    "duration_seconds",
    "disposition",
    "carrier_id",
)


@dataclass(frozen=True)
class _Side:
    """The temporary tables of one side (cost or retail) of a registered deck version."""

    rows: str
    keys: str
    long_lengths: tuple[tuple[int, bool], ...]  # (prefix length, has bounded segments)
    short: str | None  # expanded prefixes of up to short_width digits, if any
    short_width: int
    short_bounded: bool
    units_type: str  # BIGINT, or HUGEINT when the deck's units do not fit one


@dataclass(frozen=True)
class _Registered:
    cost: _Side
    retail: _Side
    known: str
    params: str
    scale: int


def _unscaled(value: Decimal, scale: int) -> int:
    """``value * 10**scale`` as an exact integer (no context precision involved)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    number = int("".join(map(str, digits)) or "0") * 10 ** (exponent + scale)
    return -number if sign else number


def _table_scale(table: pa.Table | None) -> int:
    if table is None:
        return 0
    types = [table.schema.field(name).type for name in ("rate_per_minute", "connection_fee")]
    return max((t.scale for t in types if pa.types.is_decimal(t)), default=0)


def _units(column: pa.ChunkedArray, scale: int) -> pa.Array:
    """The unscaled integers of a decimal column at ``scale``, as decimal128(38, 0).

    A decimal128 value is stored as its unscaled 128-bit integer, so viewing the same buffers
    with scale 0 reads ``value * 10**scale`` exactly, without a Python loop.
    """
    array = column.cast(pa.decimal128(38, scale)).combine_chunks()
    return pa.Array.from_buffers(
        pa.decimal128(38, 0),
        len(array),
        array.buffers(),
        null_count=array.null_count,
        offset=array.offset,
    )


def _max_int(array: pa.Array) -> int:
    value = pc.max(array).as_py() if len(array) else None
    return int(value) if value is not None else 0


def _deck_for_duckdb(table: pa.Table, scale: int) -> tuple[pa.Table, int, int]:
    """The deck with a row id, one common DECIMAL scale and the scaled integer units, plus
    the largest rate and 60 x fee units (to bound the integer arithmetic)."""
    money = pa.decimal128(38, scale)
    rate_units = _units(table.column("rate_per_minute"), scale)
    fee_units = _units(table.column("connection_fee"), scale)
    columns = {
        "rid": pa.array(range(table.num_rows), type=pa.int64()),
        "carrier_id": table.column("carrier_id")
        if "carrier_id" in table.column_names
        else pa.nulls(table.num_rows, pa.string()),
        "prefix": table.column("prefix"),
        "destination": table.column("destination"),
        "call_type": table.column("call_type"),
        "rate_per_minute": table.column("rate_per_minute").cast(money),
        "connection_fee": table.column("connection_fee").cast(money),
        "increment_initial": table.column("increment_initial"),
        "increment_subsequent": table.column("increment_subsequent"),
        "effective_from": table.column("effective_from"),
        "effective_to": table.column("effective_to"),
        "rate_units": rate_units,
        "fee_units": fee_units,
    }
    return pa.table(columns), _max_int(rate_units), 60 * _max_int(fee_units)


def _known_carriers(decks: RateDecks) -> list[str]:
    """Carriers with a cost deck file (even one without rows), or with rows in ``cost``."""
    known = {
        rel[len(COST_DIR) + 1 : -len(".csv")]
        for rel in decks.files
        if rel.startswith(f"{COST_DIR}/") and rel.endswith(".csv")
    }
    known.update(c for c in decks.cost.column("carrier_id").unique().to_pylist() if c)
    return sorted(known)


def _create_from_arrow(
    con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str, **names: str
) -> None:
    con.register(name, table)
    try:
        con.execute(sql.format(arrow=name, **names)).fetchall()
    finally:
        con.unregister(name)


def _amount_scaling(scale: int, decimals: int) -> tuple[int, int]:
    """(up, down) with amount units = half_up(n * up / down), n in units of 10^-scale / 60."""
    return 10 ** max(decimals - scale, 0), 60 * 10 ** max(scale - decimals, 0)


def _safe_bill(rate_max: int, fee60_max: int, scale: int, decimals: int) -> int:
    """The largest billable seconds for which the BIGINT form of the amount cannot overflow:
    2 * (fee60 + rate * bill) * up + down <= 2^63 - 1."""
    up, down = _amount_scaling(scale, decimals)
    room = (_BIGINT_MAX - down) // (2 * up) - fee60_max
    if room < 0:
        return -1
    return min(room // max(rate_max, 1), _BIGINT_MAX)


def _create_side(
    con: duckdb.DuckDBPyConnection,
    names: dict[str, str],
    side: str,
    table: pa.Table,
    scale: int,
    decimals: int,
    code: str,
    known_join: str,
) -> int:
    """Create the rows, lookup and short-prefix tables of one side; return its safe bill."""
    arrow = f"{names['prefix']}_arrow"
    prepared, rate_max, fee60_max = _deck_for_duckdb(table, scale)
    fits = max(rate_max, fee60_max) <= _BIGINT_MAX
    rows, keys, short = (names[f"{side}_{part}"] for part in ("rows", "keys", "short"))
    units_type = "BIGINT" if fits else "HUGEINT"
    _create_from_arrow(con, arrow, prepared, _ROWS_SQL, rows=rows, units_type=units_type)
    _create_from_arrow(
        con,
        arrow,
        prepared,
        _KEYS_SQL,
        keys=keys,
        code=code,
        known_join=known_join,
        key_digits=str(KEY_DIGITS),
    )
    lengths = [int(length) for length, _ in con.execute(_LENGTHS_SQL.format(keys=keys)).fetchall()]
    width = max((length for length in lengths if length <= SHORT_DIGITS), default=-1)
    if width >= 0:
        con.execute(_SHORT_SQL.format(short=short, keys=keys, width=width)).fetchall()
    return _safe_bill(rate_max, fee60_max, scale, decimals) if fits else -1


def _describe_side(con: duckdb.DuckDBPyConnection, names: dict[str, str], side: str) -> _Side:
    rows, keys, short = (names[f"{side}_{part}"] for part in ("rows", "keys", "short"))
    lengths = [
        (int(length), bool(bounded))
        for length, bounded in con.execute(_LENGTHS_SQL.format(keys=keys)).fetchall()
    ]
    width = max((length for length, _ in lengths if length <= SHORT_DIGITS), default=-1)
    bounded = False
    if width >= 0:
        ((bounded,),) = con.execute(_BOUNDED_SQL.format(short=short)).fetchall()
    ((units_type,),) = con.execute(_COLUMN_TYPE_SQL, [rows, "rate_units"]).fetchall()
    return _Side(
        rows=rows,
        keys=keys,
        long_lengths=tuple((length, b) for length, b in lengths if length > width),
        short=short if width >= 0 else None,
        short_width=max(width, 0),
        short_bounded=bool(bounded),
        units_type=str(units_type),
    )


def _register(con: duckdb.DuckDBPyConnection, decks: RateDecks) -> _Registered:
    """Create, once per connection and deck version, the temporary tables of ``decks``."""
    # The version is a content hash, so tables registered under it can be reused. The
    # configuration and table sizes join it in case a RateDecks was assembled by hand; the
    # hash also makes a safe identifier of them.
    identity = (
        decks.version,
        repr(decks.config),
        decks.cost.num_rows,
        -1 if decks.retail is None else decks.retail.num_rows,
    )
    tag = hashlib.sha256(repr(identity).encode()).hexdigest()[:VERSION_LENGTH]
    prefix = f"__rating_{tag}"
    parts = ["known", "params"] + [
        f"{side}_{part}" for side in ("cost", "retail") for part in ("rows", "keys", "short")
    ]
    names = {part: f"{prefix}_{part}" for part in parts}
    names["prefix"] = prefix
    scale = max(_table_scale(decks.cost), _table_scale(decks.retail))
    ((existing,),) = con.execute(_TABLE_EXISTS_SQL, [names["params"]]).fetchall()
    if not existing:
        _create_all(con, decks, names, scale)
    return _Registered(
        cost=_describe_side(con, names, "cost"),
        retail=_describe_side(con, names, "retail"),
        known=names["known"],
        params=names["params"],
        scale=scale,
    )


def _create_all(
    con: duckdb.DuckDBPyConnection, decks: RateDecks, names: dict[str, str], scale: int
) -> None:
    prefix = names["prefix"]
    decimals = decks.config.money_decimals
    known = pa.table({"carrier_id": pa.array(_known_carriers(decks), type=pa.string())})
    _create_from_arrow(con, f"{prefix}_arrow", known, _KNOWN_SQL, known=names["known"])
    retail = decks.retail if decks.retail is not None else _deck_schema(scale, False).empty_table()
    cost_safe = _create_side(
        con,
        names,
        "cost",
        decks.cost,
        scale,
        decimals,
        "k.code",
        f"JOIN {names['known']} AS k ON k.carrier_id = d.carrier_id",
    )
    retail_safe = _create_side(con, names, "retail", retail, scale, decimals, "0", "")

    markup = decks.config.markup
    markup_scale = 0 if markup is None else _decimal_scale(markup)
    markup_units = None if markup is None else _unscaled(markup, markup_scale)
    markup_den = 10**markup_scale
    # The largest cost (in units) whose product with the markup stays inside BIGINT.
    markup_safe = (
        (_BIGINT_MAX - markup_den) // (2 * max(markup_units, 1))
        if markup_units is not None and markup_units <= _BIGINT_MAX
        else -1
    )
    units = pa.decimal128(38, 0)

    def one(value: int | None) -> pa.Array:
        return pa.array([None if value is None else Decimal(value)], type=units)

    params = pa.table(
        {
            "deck_version": pa.array([decks.version], type=pa.string()),
            "markup_units": one(markup_units),
            "markup_den": one(markup_den),
            "cost_safe_bill": one(cost_safe),
            "retail_safe_bill": one(retail_safe),
            "markup_safe_cost": one(markup_safe),
        }
    )
    # params goes last: its existence marks a complete registration.
    _create_from_arrow(
        con,
        f"{prefix}_arrow",
        params,
        _PARAMS_SQL,
        params=names["params"],
        markup_type="BIGINT" if markup_safe >= 0 else "HUGEINT",
    )


def _probes(side: _Side, alias: str, code: str | None) -> tuple[str, str]:
    """The LEFT JOINs probing each prefix length (the short prefixes last), and the
    longest-first coalesce of the deck row each found for the call's type."""
    joins = []
    rids = []

    def add(name: str, table: str, where: str, key_column: str, key: str, bounded: bool) -> None:
        window = (
            f" AND {name}.seg_from <= b.__rating_ts AND b.__rating_ts < {name}.seg_to"
            if bounded
            else ""
        )
        joins.append(
            _PROBE_SQL.format(
                key_column=key_column,
                table=table,
                where=where,
                alias=name,
                key=key,
                code=f" AND {name}.code = {code}" if code else "",
                window=window,
            )
        )
        rids.append(
            f"CASE b.__rating_ct WHEN 0 THEN {name}.r0 WHEN 1 THEN {name}.r1"
            f" WHEN 2 THEN {name}.r2 ELSE {name}.r3 END"
        )

    for length, bounded in side.long_lengths:
        if length <= KEY_DIGITS:
            key_column = "pkey"
            key = (
                f"CASE WHEN b.__rating_len >= {length}"
                f" THEN b.__rating_n // {10 ** (KEY_DIGITS - length)} END"
            )
        else:
            key_column = "prefix"
            key = f"left(b.__rating_digits, {length})"
        add(f"{alias}{length}", side.keys, f" WHERE plen = {length}", key_column, key, bounded)
    if side.short is not None:
        width = side.short_width
        key = (
            "CASE WHEN b.__rating_n IS NULL THEN 0 ELSE"
            f" (b.__rating_n // {10 ** (KEY_DIGITS - width)}) * 32"
            f" + least(b.__rating_len, {width}) END"
        )
        add(f"{alias}s", side.short, "", "skey", key, side.short_bounded)
    if not rids:
        return "", "CAST(NULL AS BIGINT)"
    return "".join(joins), rids[0] if len(rids) == 1 else f"coalesce({', '.join(rids)})"


def _amount_units(
    prefix: str, bill: str, safe_bill: str, units_type: str, scale: int, decimals: int
) -> str:
    """``round_half_up(fee + rate * bill / 60, decimals)`` in integer units of 10^-decimals.

    The operands are integers scaled by 10^scale, so the exact amount is n / (60 * 10^scale)
    with n = fee60_units + rate_units * bill; for non-negative integers, half-up division is
    floor((2n + d) / 2d). No step is a float. HUGEINT division is slow, so a call whose bill
    keeps every intermediate inside BIGINT (all of them, with sane rates) takes BIGINT.
    """
    up, down = _amount_scaling(scale, decimals)
    fee60, rate = f"{prefix}fee60_units", f"{prefix}rate_units"
    wide = (
        f"(2 * (CAST({fee60} AS HUGEINT) + CAST({rate} AS HUGEINT) * {bill})"
        f" * CAST({up} AS HUGEINT) + {down}) // CAST({2 * down} AS HUGEINT)"
    )
    if units_type != "BIGINT":
        return wide
    narrow = f"(2 * ({fee60} + {rate} * {bill}) * {up} + {down}) // {2 * down}"
    return f"CASE WHEN {bill} <= {safe_bill} THEN CAST({narrow} AS HUGEINT) ELSE {wide} END"


def _money(units: str, decimals: int) -> str:
    """Integer units of 10^-decimals as DECIMAL(38, decimals), by an exact multiplication.

    Dividing instead would make DuckDB go through DOUBLE.
    """
    if decimals == 0:
        return f"CAST({units} AS DECIMAL(38, 0))"
    step = "0." + "0" * (decimals - 1) + "1"
    return (
        f"CAST(CAST({units} AS DECIMAL(38, 0)) * CAST('{step}' AS DECIMAL(38, {decimals}))"
        f" AS DECIMAL(38, {decimals}))"
    )


def _quote_name(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def rate_calls(
    con: duckdb.DuckDBPyConnection, calls: str, decks: RateDecks
) -> duckdb.DuckDBPyRelation:
    """Price every call of the table or view ``calls`` with ``decks``.

    Returns a lazy relation with every column of ``calls`` (an input column named like a
    rating column is replaced by the one computed here, so rated calls can be re-rated)
    followed by :data:`RATING_COLUMNS`. Every call gets exactly one ``rating_status``; none is
    dropped. The decks are registered into ``con`` as temporary tables named after their
    version, once per connection.
    """
    relation = con.table(calls)
    columns = dict(zip(relation.columns, (str(t) for t in relation.types), strict=True))
    missing = [name for name in _REQUIRED_CALL_COLUMNS if name not in columns]
    if missing:
        raise ValueError(f"{calls!r} lacks the column(s) {', '.join(missing)} needed for rating")
    if columns["start_time"].upper().startswith("TIMESTAMP WITH TIME ZONE"):
        start_time = "c.start_time"
    else:
        # A timestamp without a zone is UTC by the CDR contract.
        start_time = "timezone('UTC', CAST(c.start_time AS TIMESTAMP))"

    registered = _register(con, decks)
    decimals = decks.config.money_decimals
    cost_joins, cost_rid = _probes(registered.cost, "__rating_c", "b.__rating_code")
    retail_joins, retail_rid = _probes(registered.retail, "__rating_r", None)
    collisions = [name for name in RATING_COLUMNS if name in columns]
    powers = ", ".join(f"CAST({10**i} AS BIGINT)" for i in range(KEY_DIGITS + 1))
    sql = _RATE_SQL.format(
        exclude=f" EXCLUDE ({', '.join(collisions)})" if collisions else "",
        start_time=start_time,
        calls=_quote_name(calls),
        known=registered.known,
        key_digits=KEY_DIGITS,
        powers=f"[{powers}]",
        cost_rid=cost_rid,
        cost_joins=cost_joins,
        retail_rid=retail_rid,
        retail_joins=retail_joins,
        cost_rows=registered.cost.rows,
        retail_rows=registered.retail.rows,
        params=registered.params,
        cost_units=_amount_units(
            "b.__rating_",
            "b.__rating_bill",
            "b.__rating_cost_safe_bill",
            registered.cost.units_type,
            registered.scale,
            decimals,
        ),
        retail_units=_amount_units(
            "c.__rating_retail_",
            "c.__rating_retail_bill",
            "c.__rating_retail_safe_bill",
            registered.retail.units_type,
            registered.scale,
            decimals,
        ),
        internal=", ".join(f"__rating_{name}" for name in _INTERNAL_COLUMNS),
        cost=_money("r.__rating_cost_units", decimals),
        revenue=_money("r.__rating_revenue_units", decimals),
        margin=_money("r.__rating_revenue_units - r.__rating_cost_units", decimals),
    )
    return con.sql(sql)
