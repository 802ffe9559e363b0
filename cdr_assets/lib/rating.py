"""Rating engine: the rate decks under ``rates/`` and the pricing of CDRs against them.

This module owns the billing contract of ``docs/rating.md``:

* :func:`load_decks` reads ``config.toml``, ``carriers.csv``, ``cost/<carrier_id>.csv`` and the
  optional ``retail.csv``, refuses any deck that breaks a rule with a :class:`DeckError` naming
  the file, the line and the rule, and returns the decks as Arrow tables (:class:`RateDecks`).
* :func:`rate_calls` prices a table of calls in DuckDB and returns a lazy relation with the
  rating columns appended.
* :func:`write_snapshot` keeps the decks of a version in the warehouse, and :func:`load_decks`
  reads decks from such a snapshot instead of parsing files with the same content again.

Money never goes through a binary float. Rates are parsed as :class:`~decimal.Decimal`, stored
as Arrow/DuckDB ``DECIMAL`` and, for the arithmetic, as integers scaled by a common power of
ten; amounts are rounded half-up with integer (HUGEINT) division. Rating is set-based SQL: a
few narrow equality joins per call against lookup tables built once per deck version, never a
Python loop per call.

The module knows nothing about Dagster: assets call these functions.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import os
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
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cdr_assets.lib.warehouse import temporary_sibling, write_relation_atomic, write_text_atomic

__all__ = [
    "CALL_TYPES",
    "RATING_COLUMNS",
    "RATING_STATUSES",
    "DeckError",
    "RateDecks",
    "RatingConfig",
    "load_decks",
    "rate_calls",
    "write_snapshot",
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


# Decks this process loaded, by folder and content: a run loads them in several steps, and
# parsing and checking 300,000 deck rows takes seconds; hashing the files, milliseconds.
_LOADED: dict[tuple[str, str], RateDecks] = {}


def _deck_files(rates_dir: Path) -> list[Path]:
    """The files ``load_decks`` reads, in its order."""
    names = [rates_dir / CONFIG_FILE, rates_dir / CARRIERS_FILE]
    cost_dir = rates_dir / COST_DIR
    if cost_dir.is_dir():
        names += sorted(
            p
            for p in cost_dir.iterdir()
            if p.suffix == ".csv" and not p.name.startswith(".") and p.is_file()
        )
    return [p for p in [*names, rates_dir / RETAIL_FILE] if p.is_file()]


def _hash_files(rates_dir: Path) -> dict[str, str]:
    """The sha256 of every file ``load_decks`` reads, by path relative to ``rates_dir``."""
    return {
        path.relative_to(rates_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in _deck_files(rates_dir)
    }


def _deck_version(files: dict[str, str]) -> str:
    """The version of the decks read from ``files`` (relative path -> sha256)."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]}\n".encode())
    return digest.hexdigest()[:VERSION_LENGTH]


def load_decks(rates_dir: Path, snapshots: Path | None = None) -> RateDecks:
    """Read and validate every deck under ``rates_dir``; raise :class:`DeckError` on any fault.

    Decks with the same content as decks this process already loaded from the folder are
    returned as loaded (they were valid then, and are the same bytes now). Otherwise, when
    ``snapshots`` (the warehouse's ``rate_decks`` folder) holds a snapshot of decks read from
    files with the same content (see :func:`write_snapshot`), the decks are read from it
    instead of being parsed and checked again; a missing or unusable snapshot is ignored.
    """
    rates_dir = Path(rates_dir)
    if not rates_dir.is_dir():
        return _load_decks(rates_dir)  # raises, naming the folder
    hashes = _hash_files(rates_dir)
    key = (str(rates_dir.resolve()), json.dumps(hashes, sort_keys=True))
    decks = _LOADED.get(key)
    if decks is None:
        if snapshots is not None:
            decks = _read_snapshot(Path(snapshots) / _deck_version(hashes), hashes)
        if decks is None:
            decks = _load_decks(rates_dir)
        _LOADED.clear()  # one set of decks at a time: they can be large
        if decks.files == hashes:  # not changed while it was read
            _LOADED[key] = decks
    return decks


def _load_decks(rates_dir: Path) -> RateDecks:
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
    return RateDecks(
        config=config,
        carriers=carriers,
        cost=cost.combine_chunks(),
        retail=None if retail is None else _rescale(retail, scale),
        version=_deck_version(files),
        files=dict(sorted(files.items())),
    )


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------
#
# The warehouse keeps the decks of every version under ``rate_decks/<version>/``, so that a
# bill priced by a version can be explained after the files change: the cost and retail tables
# as Parquet, and ``decks.json`` with the configuration, the carriers and the sha256 of every
# file read. Each file is renamed into place when complete, ``decks.json`` last. A snapshot
# also spares a new process the parsing and checking of files with the same content: reading
# it takes a fraction of the time.

SNAPSHOT_META = "decks.json"
COST_SNAPSHOT = "cost.parquet"
RETAIL_SNAPSHOT = "retail.parquet"
# Raise it when the decks ``_load_decks`` builds from the same files change (a new rule, a new
# column): snapshots of another format are then parsed again, and written anew. Snapshots
# written before decks.json recorded it are format 1.
SNAPSHOT_FORMAT = 1
# What reading a missing, partial or damaged snapshot can raise; decks.json that does not
# describe the files read raises ValueError.
_SNAPSHOT_ERRORS = (OSError, ValueError, TypeError, KeyError, ArithmeticError, pa.ArrowException)


def write_snapshot(decks: RateDecks, snapshots: Path) -> Path:
    """Keep ``decks`` under ``snapshots/<version>/`` and return that folder.

    Nothing is written when the folder already holds a usable snapshot of these files; a
    partial, damaged or outdated one is written again.
    """
    folder = Path(snapshots) / decks.version
    if _read_snapshot(folder, decks.files) is not None:
        return folder
    with duckdb.connect() as con:
        write_relation_atomic(con.from_arrow(decks.cost), folder / COST_SNAPSHOT)
        if decks.retail is not None:
            write_relation_atomic(con.from_arrow(decks.retail), folder / RETAIL_SNAPSHOT)
    write_text_atomic(folder / SNAPSHOT_META, json.dumps(_snapshot_meta(decks), indent=1))
    return folder


def _snapshot_meta(decks: RateDecks) -> dict[str, Any]:
    """The content of ``decks.json``."""
    return {
        "version": decks.version,
        "currency": decks.config.currency,
        "money_decimals": decks.config.money_decimals,
        "markup": None if decks.config.markup is None else str(decks.config.markup),
        "carriers": decks.carriers,
        "files": decks.files,
        "snapshot_format": SNAPSHOT_FORMAT,
    }


def _read_snapshot(folder: Path, files: dict[str, str]) -> RateDecks | None:
    """The decks read from ``files`` as kept in the snapshot ``folder``, or None when the
    folder holds no usable snapshot of them."""
    try:
        return _snapshot_decks(folder, files)
    except _SNAPSHOT_ERRORS:
        return None


def _snapshot_decks(folder: Path, files: dict[str, str]) -> RateDecks:
    """The decks of the snapshot ``folder``; raises when it does not hold decks read from
    ``files`` in this snapshot format."""
    meta = json.loads((folder / SNAPSHOT_META).read_text(encoding="utf-8"))
    if (
        not isinstance(meta, dict)
        or meta.get("snapshot_format", 1) != SNAPSHOT_FORMAT
        or meta.get("version") != folder.name
        or meta.get("files") != files
    ):
        raise ValueError(f"{SNAPSHOT_META} does not describe the files read")
    cost = _read_parquet(folder / COST_SNAPSHOT)
    retail = _read_parquet(folder / RETAIL_SNAPSHOT) if RETAIL_FILE in files else None
    scale = _snapshot_scale([cost] if retail is None else [cost, retail])
    return RateDecks(
        config=_snapshot_config(meta),
        carriers=_snapshot_carriers(meta["carriers"]),
        cost=_snapshot_table(cost, _deck_schema(scale, True)),
        retail=None if retail is None else _snapshot_table(retail, _deck_schema(scale, False)),
        version=folder.name,
        files=dict(sorted(files.items())),
    )


def _read_parquet(path: Path) -> pa.Table:
    """One Parquet file. ``pq.read_table`` would first import ``pyarrow.dataset``, which takes
    longer than reading the decks."""
    with pq.ParquetFile(path) as parquet:
        return parquet.read()


def _snapshot_scale(tables: list[pa.Table]) -> int:
    """The scale of the rates and fees of ``tables``, one decimal type for all as in
    ``_load_decks``."""
    types = {
        table.schema.field(name).type
        for table in tables
        for name in ("rate_per_minute", "connection_fee")
    }
    money = types.pop() if len(types) == 1 else None
    if money is None or not pa.types.is_decimal(money) or money.scale > MAX_RATE_DECIMALS:
        raise TypeError("the rates and fees of the snapshot are not of one decimal type")
    return int(money.scale)


def _snapshot_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A deck read from Parquet, with exactly the schema ``_load_decks`` gives it."""
    if table.column_names != schema.names:
        raise ValueError("the columns of the snapshot are not those of a deck")
    return table.cast(schema).combine_chunks()


def _snapshot_config(meta: dict[str, Any]) -> RatingConfig:
    currency, decimals, markup = meta["currency"], meta["money_decimals"], meta["markup"]
    if (
        not isinstance(currency, str)
        or type(decimals) is not int
        or not (markup is None or isinstance(markup, str))
    ):
        raise TypeError(f"the configuration in {SNAPSHOT_META} is not of the expected types")
    return RatingConfig(currency, decimals, None if markup is None else Decimal(markup))


def _snapshot_carriers(carriers: Any) -> dict[str, str]:
    if not isinstance(carriers, dict) or not all(isinstance(v, str) for v in carriers.values()):
        raise TypeError(f"the carriers in {SNAPSHOT_META} are not a mapping of names")
    return dict(carriers)


# --------------------------------------------------------------------------------------------
# Rating
# --------------------------------------------------------------------------------------------
#
# The decks are turned, once per connection and deck version, into lookup tables in which a
# call finds its deck rows with a few narrow equality joins; no call is ever sorted or grouped.
#
# * A *node* is a (carrier, prefix) that some deck row has. In the combined layout the retail
#   deck's prefixes are nodes under every carrier with a cost deck, so that one node answers
#   for both decks; when that would make too many nodes, cost and retail are looked up apart.
# * Every node is resolved at registration, per call type and time segment, to the deck row of
#   each side that prices its calls: the longest of the node's prefix and its shorter prefixes
#   with a row live in the segment, the row with the call's type first. The segments cut the
#   timeline at every effective bound of the group, merged where the rows do not change. A
#   node whose row depends on the call type has an odd node key and one resolved row per type.
# * A called number's digits, right-padded with zeros to KEY_DIGITS, are a BIGINT; its first L
#   digits are that integer divided by 10^(KEY_DIGITS - L), provided it has at least L digits.
#   Nodes of up to the short width are expanded to every digit string of that width, so one
#   join (the short lookup) finds the call's node among them; it also tells which longer node
#   lengths start with the call's first digits. Each of those lengths is one more join (a
#   length nothing starts with is not probed), and the longest node found is the call's node.
#   Prefixes longer than KEY_DIGITS (no E.164 number is that long) are compared as strings.
#   A called number that is not '+' followed by digits matches the empty prefix only.
# * The call then fetches its node's resolved row ids (one join on node and call type, and the
#   time segment) and the two deck rows by id; the amounts are integer arithmetic.
KEY_DIGITS = 18
# The short width is the largest number of digits, at most SHORT_DIGITS, whose expansion keeps
# carriers x 10^width within SHORT_LIMIT (every prefix of up to that many digits is expanded).
SHORT_DIGITS = 5
SHORT_LIMIT = 1_000_000
# Cost and retail share their nodes while carriers x retail rows stays within COMBINE_LIMIT.
COMBINE_LIMIT = 2_000_000
_CALL_TYPE_INDEX = {"local": 1, "national": 2, "international": 3}  # 0: no or unknown type
_BIGINT_MAX = 2**63 - 1
_PACK_LIMIT = 2**62  # largest (prefix x carriers) packed into one BIGINT key
_MASK_BITS = 40  # longer prefix lengths beyond the first 40 are always probed
_NEVER_US = -(2**63)  # open effective bounds, in microseconds
_FOREVER_US = 2**63 - 1
_SIDES = ("cost", "retail")

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

# Known carriers and the small integer code that stands for each in the lookup keys.
_KNOWN_SQL = """
CREATE OR REPLACE TEMP TABLE {known} AS
SELECT carrier_id, CAST(row_number() OVER (ORDER BY carrier_id) - 1 AS BIGINT) AS code
FROM {arrow}
"""

# The nodes of a layout group, found in SQL when some prefix is too long for an integer key:
# every distinct (code, prefix), numbered, with its parent (the longest of its proper prefixes
# that is a node too, -1 for none) and the node of every deck row.
_NODES_SQL = """
CREATE OR REPLACE TEMP TABLE {nodes} AS
SELECT
    code,
    prefix,
    length(prefix) AS plen,
    CASE WHEN length(prefix) <= {key_digits} THEN CAST('0' || prefix AS BIGINT) ELSE -1 END
        AS value,
    CAST(row_number() OVER () - 1 AS BIGINT) AS ordinal
FROM (SELECT DISTINCT code, prefix FROM {arrow})
"""

_PARENTS_SQL = """
SELECT n.ordinal, n.code, n.prefix, n.plen, n.value, coalesce(p.parent, -1) AS parent
FROM {nodes} AS n
LEFT JOIN (
    SELECT a.ordinal, arg_max(m.ordinal, a.i) AS parent
    FROM (
        SELECT ordinal, code, prefix, CAST(unnest(range(plen)) AS BIGINT) AS i FROM {nodes}
    ) AS a
    JOIN {nodes} AS m ON m.code = a.code AND m.prefix = left(a.prefix, a.i)
    GROUP BY a.ordinal
) AS p USING (ordinal)
"""

_OWN_SQL = """
SELECT r.row, n.ordinal
FROM (SELECT code, prefix, CAST(row_number() OVER () - 1 AS BIGINT) AS row FROM {arrow}) AS r
JOIN {nodes} AS n USING (code, prefix)
"""

_ATTACH_SQL = """
CREATE OR REPLACE TEMP TABLE {attach} AS
SELECT
    ak,
    coalesce(seg_from, '-infinity'::TIMESTAMPTZ) AS seg_from,
    coalesce(seg_to, 'infinity'::TIMESTAMPTZ) AS seg_to,
    * EXCLUDE (ak, seg_from, seg_to)
FROM {arrow}
"""

_COPY_SQL = "CREATE OR REPLACE TEMP TABLE {target} AS SELECT * FROM {arrow}"

_TABLE_EXISTS_SQL = """
SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?
"""

_REQUIRED_CALL_COLUMNS = (
    "called_number",
    "call_type",
    "start_time",
    "duration_seconds",
    "disposition",
    "carrier_id",
)


@dataclass(frozen=True)
class _Group:
    """One node lookup: the deck sides it resolves, and its tables."""

    name: str
    sides: tuple[str, ...]
    keyed: bool  # nodes per carrier (else one set for all, code 0)
    mult: int  # carriers in the packed keys (1 when not keyed)
    levels: tuple[tuple[int, str], ...]  # (prefix length, 'pack' | 'pair' | 'text'), longest first
    short_width: int  # digits of the short lookup; -1: no node at all
    windowed: bool  # some deck row of the group has an effective bound
    levels_table: str
    short_table: str
    attach_table: str


@dataclass(frozen=True)
class _Plan:
    """How ``rate_calls`` reads the registered tables of one deck version."""

    groups: tuple[_Group, ...]
    known: str
    rows: dict[str, str]  # side -> deck rows table
    units: dict[str, str]  # side -> BIGINT or HUGEINT
    safe_bill: dict[str, int]  # side -> largest bill priced in BIGINT (-1: never)
    scale: int
    markup: tuple[int, int, int] | None  # units, denominator, largest cost kept in BIGINT
    ready: str  # exists once every table is complete


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
        "rid": pa.array(np.arange(table.num_rows, dtype=np.int64)),
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


def _prefix_lengths(tables: Sequence[pa.Table]) -> list[int]:
    found: set[int] = set()
    for table in tables:
        if table.num_rows:
            found.update(pc.unique(pc.utf8_length(table.column("prefix"))).to_pylist())
    return sorted(found)


def _has_windows(tables: Sequence[pa.Table]) -> bool:
    return any(
        table.column(name).null_count < table.num_rows
        for table in tables
        for name in ("effective_from", "effective_to")
    )


def _short_width(mult: int, lengths: list[int]) -> int:
    """The widest expansion within SHORT_LIMIT, no wider than the longest prefix; -1 when
    there is no prefix at all."""
    width = 0
    while width < min(SHORT_DIGITS, KEY_DIGITS) and mult * 10 ** (width + 1) <= SHORT_LIMIT:
        width += 1
    return min(width, max(lengths)) if lengths else -1


def _group(
    name: str, sides: tuple[str, ...], keyed: bool, mult: int, members: list[pa.Table], prefix: str
) -> _Group:
    lengths = _prefix_lengths(members)
    width = _short_width(mult, lengths)
    levels = []
    for length in sorted(lengths, reverse=True):
        if length <= width:
            continue
        if length > KEY_DIGITS:
            kind = "text"
        elif 10**length * mult <= _PACK_LIMIT:
            kind = "pack"
        else:
            kind = "pair"
        levels.append((length, kind))
    return _Group(
        name=name,
        sides=sides,
        keyed=keyed,
        mult=mult,
        levels=tuple(levels),
        short_width=width,
        windowed=_has_windows(members),
        levels_table=f"{prefix}_{name}_levels",
        short_table=f"{prefix}_{name}_short",
        attach_table=f"{prefix}_{name}_attach",
    )


def _plan(decks: RateDecks) -> tuple[_Plan, dict[str, pa.Table]]:
    """The layout of the lookup tables of ``decks`` and the deck sides prepared for DuckDB."""
    scale = max(_table_scale(decks.cost), _table_scale(decks.retail))
    decimals = decks.config.money_decimals
    retail = decks.retail if decks.retail is not None and decks.retail.num_rows else None
    mult = max(len(_known_carriers(decks)), 1)
    priced = len(pc.unique(decks.cost.column("carrier_id")))
    layout: list[tuple[str, tuple[str, ...], bool]]
    if retail is None:
        layout = [("all", ("cost",), True)]
    elif priced * retail.num_rows <= COMBINE_LIMIT:
        layout = [("all", ("cost", "retail"), True)]
    else:
        layout = [("cost", ("cost",), True), ("retail", ("retail",), False)]
    # The version is a content hash, so tables registered under it can be reused. The
    # configuration, table sizes and layout join it in case a RateDecks was assembled by hand
    # or the limits changed; the hash also makes a safe identifier of them.
    identity = (
        decks.version,
        repr(decks.config),
        decks.cost.num_rows,
        -1 if decks.retail is None else decks.retail.num_rows,
        layout,
        SHORT_DIGITS,
        SHORT_LIMIT,
    )
    tag = hashlib.sha256(repr(identity).encode()).hexdigest()[:VERSION_LENGTH]
    prefix = f"__rating_{tag}"
    tables = {"cost": decks.cost, "retail": retail}
    groups = tuple(
        _group(
            name,
            sides,
            keyed,
            mult if keyed else 1,
            [t for t in (tables[side] for side in sides) if t is not None],
            prefix,
        )
        for name, sides, keyed in layout
    )
    prepared: dict[str, pa.Table] = {}
    units: dict[str, str] = {}
    safe: dict[str, int] = {}
    for side in _SIDES:
        source = tables[side]
        if source is None:
            source = _deck_schema(scale, False).empty_table()
        prepared[side], rate_max, fee60_max = _deck_for_duckdb(source, scale)
        fits = max(rate_max, fee60_max) <= _BIGINT_MAX
        units[side] = "BIGINT" if fits else "HUGEINT"
        safe[side] = _safe_bill(rate_max, fee60_max, scale, decimals) if fits else -1
    markup_plan = None
    markup = decks.config.markup
    if markup is not None:
        markup_scale = _decimal_scale(markup)
        markup_units = _unscaled(markup, markup_scale)
        markup_den = 10**markup_scale
        # The largest cost (in units) whose product with the markup stays inside BIGINT.
        markup_safe = (
            (_BIGINT_MAX - markup_den) // (2 * max(markup_units, 1))
            if markup_units <= _BIGINT_MAX
            else -1
        )
        markup_plan = (markup_units, markup_den, markup_safe)
    plan = _Plan(
        groups=groups,
        known=f"{prefix}_known",
        rows={side: f"{prefix}_{side}_rows" for side in _SIDES},
        units=units,
        safe_bill=safe,
        scale=scale,
        markup=markup_plan,
        ready=f"{prefix}_ready",
    )
    return plan, prepared


def _side_rows(deck: pa.Table, side: int, codes: pa.Array | None, known: pa.Array) -> pa.Table:
    """The rows of one deck side as the resolution reads them: side, code (the carrier's, or
    each of ``codes``), prefix, call type index, effective window in microseconds (open ends
    as the extreme integers) and rid."""
    size = deck.num_rows
    if codes is None:
        code = pc.index_in(deck.column("carrier_id"), value_set=known).cast(pa.int64())
        repeat = 1
    else:
        repeat = len(codes)
        code = pa.array(np.repeat(codes.to_numpy(zero_copy_only=False), size).astype(np.int64))
    call_type = pc.index_in(deck.column("call_type"), value_set=pa.array(list(_CALL_TYPE_INDEX)))
    prefix = deck.column("prefix").combine_chunks()
    plen = pc.utf8_length(prefix).cast(pa.int64())
    short = pc.if_else(pc.less_equal(plen, KEY_DIGITS), prefix, pa.scalar("", pa.string()))
    columns = {
        "prefix": prefix,
        "plen": plen,
        "value": pc.cast(pc.binary_join_element_wise("0", short, ""), pa.int64()),
        "ct": pc.add(pc.fill_null(call_type, -1), 1).cast(pa.int8()),
        "eff_from": pc.fill_null(deck.column("effective_from").cast(pa.int64()), _NEVER_US),
        "eff_to": pc.fill_null(deck.column("effective_to").cast(pa.int64()), _FOREVER_US),
        "rid": deck.column("rid").combine_chunks(),
    }
    if repeat != 1:
        rows = pa.array(np.tile(np.arange(size, dtype=np.int64), repeat))
        columns = {name: column.take(rows) for name, column in columns.items()}
    return pa.table(
        {
            "side": pa.array(np.full(size * repeat, side, dtype=np.int8)),
            "code": code,
            **columns,
        }
    )


def _resolve(
    parents: np.ndarray, plens: np.ndarray, own: dict[str, np.ndarray], sides: int, gate: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The deck row of every side and call type for every node, per time segment.

    ``own`` holds the deck rows of each node (ordinal, side, ct, eff_from, eff_to, rid). The
    timeline is cut at every effective bound of the group; in each piece a node's row for a
    side and call type is its own row of that type, else its own row without a type, else its
    parent's. Consecutive pieces with the same rows are one segment. With ``gate`` (cost and
    retail resolved together) a retail row counts only where a cost row was found.

    Returns, per segment: the node's ordinal, start, end (microseconds; the extreme integers
    for open ends) and the row ids (sides x 4 call types, -1 for none).
    """
    count = len(parents)
    bounds = np.concatenate([own["eff_from"], own["eff_to"]])
    bounds = np.unique(bounds[(bounds != _NEVER_US) & (bounds != _FOREVER_US)])
    starts = np.concatenate([[_NEVER_US], bounds]).astype(np.int64)
    ends = np.concatenate([bounds, [_FOREVER_US]]).astype(np.int64)
    # Nodes by prefix length, so that every parent is resolved before its children.
    by_length = [np.flatnonzero((plens == length) & (parents >= 0)) for length in np.unique(plens)]
    column = own["side"].astype(np.int64) * 4
    untyped = own["ct"] == 0
    ordinal, typed_ct = own["ordinal"], own["ct"].astype(np.int64)
    # Row ids as int32 where they fit: the arrays below are nodes x sides x 4.
    small = not len(own["rid"]) or int(own["rid"].max()) < 2**31 - 1
    rid = own["rid"].astype(np.int32 if small else np.int64)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    previous: np.ndarray | None = None
    segment_start = np.full(count, _NEVER_US, dtype=np.int64)
    for start, end in zip(starts, ends, strict=True):
        live = (own["eff_from"] <= start) & (end <= own["eff_to"])
        rows = np.full((count, sides * 4), -1, dtype=rid.dtype)
        pick = np.flatnonzero(live & untyped)
        for call_type in range(4):
            rows[ordinal[pick], column[pick] + call_type] = rid[pick]
        pick = np.flatnonzero(live & ~untyped)
        rows[ordinal[pick], column[pick] + typed_ct[pick]] = rid[pick]
        for nodes in by_length:
            mine = rows[nodes]
            np.copyto(mine, rows[parents[nodes]], where=mine < 0)
            rows[nodes] = mine
        if gate:
            rows[:, 4:8][rows[:, 0:4] < 0] = -1
        if previous is not None:
            changed = np.flatnonzero((rows != previous).any(axis=1))
            out.append(
                (
                    changed,
                    segment_start[changed],
                    np.full(len(changed), start, dtype=np.int64),
                    previous[changed],
                )
            )
            segment_start[changed] = start
        previous = rows
    assert previous is not None
    out.append(
        (
            np.arange(count),
            segment_start,
            np.full(count, _FOREVER_US, dtype=np.int64),
            previous,
        )
    )
    return tuple(np.concatenate(part) for part in zip(*out, strict=True))  # type: ignore[return-value]


def _short_table(tree: _Tree, node_keys: np.ndarray, group: _Group) -> pa.Table:
    """The short lookup of ``group``: every digit string K of at most the short width digits
    that starts with a node that short, or (at the full width) that starts a longer node.

    K is keyed as ((K right-padded to the width) x 32 + its length) x mult + code, the key a
    call computes from its first digits. The value is (its longest node of at most the width
    digits, + 1; 0 for none) x 2^levels + the mask of the longer prefix lengths (one bit per
    level) of the nodes that start with K: the call probes only those levels.
    """
    width, mult = group.short_width, group.mult
    bits = min(len(group.levels), _MASK_BITS)
    short = np.flatnonzero(tree.plen <= width)
    codes, values, plens = tree.code[short], tree.value[short], tree.plen[short]
    keys, found = [], []
    for length in range(width + 1):
        # per code, the node of every string of exactly ``length`` digits; longer nodes last
        slots = np.full(mult * 10**length, -1, dtype=np.int64)
        for plen in range(length + 1):
            mine = np.flatnonzero(plens == plen)
            if not len(mine):
                continue
            step = 10 ** (length - plen)
            first = codes[mine] * 10**length + values[mine] * step
            slots[(first[:, None] + np.arange(step)[None, :]).ravel()] = np.repeat(
                node_keys[short[mine]], step
            )
        masks = np.zeros(len(slots), dtype=np.int64)
        if length == width:
            for bit, (level, _) in enumerate(group.levels[:bits]):
                deep = np.flatnonzero(tree.plen == level)
                if level > KEY_DIGITS:  # compared as text: probed whenever the number is long
                    masks |= 1 << bit
                    continue
                head = tree.code[deep] * 10**width + tree.value[deep] // 10 ** (level - width)
                masks[head] |= 1 << bit
        hit = np.flatnonzero((slots >= 0) | (masks != 0))
        code, digits = hit // 10**length, hit % 10**length
        keys.append((digits * 10 ** (width - length) * 32 + length) * mult + code)
        found.append((slots[hit] + 1) * 2**bits + masks[hit])
    return pa.table({"sk": pa.array(np.concatenate(keys)), "v": pa.array(np.concatenate(found))})


def _instants(values: np.ndarray, open_end: int) -> pa.Array:
    return pa.array(values, mask=values == open_end).cast(pa.timestamp("us", tz="UTC"))


@dataclass(frozen=True)
class _Tree:
    """The nodes of a layout group: every distinct (code, prefix) of its deck rows."""

    ordinal: np.ndarray  # the node of every deck row
    code: np.ndarray  # per node
    plen: np.ndarray
    value: np.ndarray  # the prefix as an integer (-1 past KEY_DIGITS digits)
    prefix: pa.Array | None  # the prefix as text, when some prefix is longer than KEY_DIGITS
    parent: np.ndarray  # the longest proper prefix that is a node too, -1 for none


def _tree_by_value(code: np.ndarray, plen: np.ndarray, value: np.ndarray, mult: int) -> _Tree:
    """The nodes, numbered by the sorted integer key (value x 32 + length) x mult + code."""
    keys, ordinal = np.unique((value * 32 + plen) * mult + code, return_inverse=True)
    node_code, rest = keys % mult, keys // mult
    node_plen, node_value = rest % 32, rest // 32
    parent = np.full(len(keys), -1, dtype=np.int64)
    for length in np.unique(node_plen):  # shortest first, so that longer prefixes win
        below = np.flatnonzero(node_plen > length)
        shift = np.power(10, node_plen[below] - length)
        wanted = ((node_value[below] // shift) * 32 + length) * mult + node_code[below]
        found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        hit = keys[found] == wanted
        parent[below[hit]] = found[hit]
    return _Tree(ordinal.reshape(-1), node_code, node_plen, node_value, None, parent)


def _tree_by_text(con: duckdb.DuckDBPyConnection, rows: pa.Table, arrow: str) -> _Tree:
    """The nodes of prefixes of any length, found in SQL."""
    nodes = f"{arrow}_nodes"
    con.register(arrow, rows)
    try:
        con.execute(_NODES_SQL.format(nodes=nodes, arrow=arrow, key_digits=KEY_DIGITS)).fetchall()
        found = con.sql(_PARENTS_SQL.format(nodes=nodes)).to_arrow_table()
        own = con.sql(_OWN_SQL.format(arrow=arrow, nodes=nodes)).to_arrow_table()
        con.execute(f"DROP TABLE {nodes}").fetchall()
    finally:
        con.unregister(arrow)
    order = found.column("ordinal").to_numpy()
    count = len(order)

    def by_node(name: str) -> np.ndarray:
        values = np.empty(count, dtype=np.int64)
        values[order] = found.column(name).to_numpy()
        return values

    ordinal = np.empty(rows.num_rows, dtype=np.int64)
    ordinal[own.column("row").to_numpy()] = own.column("ordinal").to_numpy()
    prefix = found.column("prefix").take(pa.array(np.argsort(order)))
    return _Tree(
        ordinal,
        by_node("code"),
        by_node("plen"),
        by_node("value"),
        prefix.combine_chunks(),
        by_node("parent"),
    )


def _create_group(
    con: duckdb.DuckDBPyConnection,
    group: _Group,
    prepared: dict[str, pa.Table],
    known: pa.Array,
    arrow: str,
) -> None:
    """Create the levels, short and attach tables of one layout group."""
    priced = pc.unique(pc.index_in(prepared["cost"].column("carrier_id"), value_set=known))
    parts = []
    for index, side in enumerate(group.sides):
        if side == "cost":
            codes = None
        else:
            codes = priced.cast(pa.int64()) if group.keyed else pa.array([0], pa.int64())
        parts.append(_side_rows(prepared[side], index, codes, known))
    rows = pa.concat_tables(parts)
    longest = max((length for length, _ in group.levels), default=group.short_width)
    if (10**longest * 32 + 32) * group.mult <= _BIGINT_MAX:
        tree = _tree_by_value(
            rows.column("code").to_numpy(),
            rows.column("plen").to_numpy(),
            rows.column("value").to_numpy(),
            group.mult,
        )
    else:
        tree = _tree_by_text(con, rows, arrow)
    own = {
        name: rows.column(name).to_numpy() for name in ("side", "ct", "eff_from", "eff_to", "rid")
    }
    own["ordinal"] = tree.ordinal
    del rows
    count = len(tree.parent)
    parents, plens = tree.parent, tree.plen
    sides = len(group.sides)
    ordinals, starts, ends, resolved = _resolve(
        parents, plens, own, sides, gate=group.sides == _SIDES
    )
    del own, parents
    # A node is typed when its row depends on the call type in some segment.
    typed_segment = np.zeros(len(ordinals), dtype=bool)
    for column in range(0, sides * 4, 4):
        for call_type in (1, 2, 3):
            typed_segment |= resolved[:, column + call_type] != resolved[:, column]
    typed = np.zeros(count, dtype=np.int64)
    typed[ordinals[typed_segment]] = 1
    node_keys = np.arange(count, dtype=np.int64) * 2 + typed
    # The attach rows: type 0 for every segment, types 1-3 for the segments of typed nodes.
    ak, seg_from, seg_to, rids = [], [], [], []
    for call_type in range(4):
        pick = np.arange(len(ordinals)) if call_type == 0 else np.flatnonzero(typed[ordinals] == 1)
        chosen = resolved[pick][:, [column + call_type for column in range(0, sides * 4, 4)]]
        keep = (chosen >= 0).any(axis=1)
        pick, chosen = pick[keep], chosen[keep]
        ak.append(node_keys[ordinals[pick]] * 4 + call_type)
        seg_from.append(starts[pick])
        seg_to.append(ends[pick])
        rids.append(chosen)
    del resolved, ordinals, starts, ends
    all_rids = np.concatenate(rids)
    attach = {
        "ak": pa.array(np.concatenate(ak)),
        "seg_from": _instants(np.concatenate(seg_from), _NEVER_US),
        "seg_to": _instants(np.concatenate(seg_to), _FOREVER_US),
    }
    for index, side in enumerate(group.sides):
        attach[f"{side}_rid"] = pa.array(all_rids[:, index], mask=all_rids[:, index] < 0)
    del all_rids, rids
    _create_from_arrow(con, arrow, pa.table(attach), _ATTACH_SQL, attach=group.attach_table)
    del attach
    # The levels: the nodes longer than the short width.
    pack_digits = max((length for length, kind in group.levels if kind == "pack"), default=0)
    long = np.flatnonzero(plens > group.short_width)
    value = tree.value[long]
    levels = {
        "plen": pa.array(plens[long]),
        "code": pa.array(tree.code[long]),
        "pkey": pa.array(value, mask=plens[long] > KEY_DIGITS),
        "pk": pa.array(value * group.mult + tree.code[long], mask=plens[long] > pack_digits),
        "node": pa.array(node_keys[long]),
    }
    if tree.prefix is not None:
        levels["prefix"] = tree.prefix.take(pa.array(long))
    _create_from_arrow(con, arrow, pa.table(levels), _COPY_SQL, target=group.levels_table)
    if group.short_width >= 0:
        table = _short_table(tree, node_keys, group)
        _create_from_arrow(con, arrow, table, _COPY_SQL, target=group.short_table)


def _register(
    con: duckdb.DuckDBPyConnection, decks: RateDecks, lookup: Path | None = None
) -> _Plan:
    """Create, once per connection and deck version, the temporary tables of ``decks``.

    ``lookup``: a folder where the tables are kept (a DuckDB file named after the plan), so
    that another process reads them instead of building them again (about 2 s for five
    50,000-row decks). A missing or unreadable file is built and written again.
    """
    plan, prepared = _plan(decks)
    ((existing,),) = con.execute(_TABLE_EXISTS_SQL, [plan.ready]).fetchall()
    if existing:
        return plan
    prefix = plan.ready.removesuffix("_ready")
    kept = None if lookup is None else lookup / f"{prefix.lstrip('_')}.v{LOOKUP_FORMAT}.duckdb"
    if kept is None or not _read_lookup(con, kept, prefix):
        arrow = prefix + "_arrow"
        known = pa.array(_known_carriers(decks), type=pa.string())
        _create_from_arrow(
            con, arrow, pa.table({"carrier_id": known}), _KNOWN_SQL, known=plan.known
        )
        for side in _SIDES:
            _create_from_arrow(
                con,
                arrow,
                prepared[side],
                _ROWS_SQL,
                rows=plan.rows[side],
                units_type=plan.units[side],
            )
        for group in plan.groups:
            _create_group(con, group, prepared, known, arrow)
        if kept is not None:
            _write_lookup(con, kept, prefix)
    # The marker goes last: its existence means the registration is complete.
    con.execute(f"CREATE OR REPLACE TEMP TABLE {plan.ready} AS SELECT 1 AS ready").fetchall()
    return plan


# Part of a kept lookup file's name: raise it when the tables ``_register`` builds change
# (a column, a table), so that files of the old layout are not read.
LOOKUP_FORMAT = 1

_LOOKUP_TABLES_SQL = """
SELECT table_name FROM duckdb_tables()
WHERE database_name = ? AND starts_with(table_name, ?) ORDER BY table_name
"""


def _write_lookup(con: duckdb.DuckDBPyConnection, path: Path, prefix: str) -> None:
    """Copy the lookup tables named ``prefix...`` into the DuckDB file ``path`` (exact
    types), renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    names = [n for (n,) in con.execute(_LOOKUP_TABLES_SQL, ["temp", prefix]).fetchall()]
    try:
        con.execute(f"ATTACH {_quote_text(str(tmp))} AS rating_lookup_out")
        try:
            for name in names:
                con.execute(f"CREATE TABLE rating_lookup_out.{name} AS SELECT * FROM temp.{name}")
        finally:
            con.execute("DETACH rating_lookup_out")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)


def _read_lookup(con: duckdb.DuckDBPyConnection, path: Path, prefix: str) -> bool:
    """Create the lookup tables from the DuckDB file ``path``; False (and nothing created)
    when it is missing or unreadable."""
    if not path.is_file():
        return False
    created: list[str] = []
    try:
        con.execute(f"ATTACH {_quote_text(str(path))} AS rating_lookup_in (READ_ONLY)")
        try:
            names = con.execute(_LOOKUP_TABLES_SQL, ["rating_lookup_in", prefix]).fetchall()
            for (name,) in names:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM rating_lookup_in.{name}"
                )
                created.append(name)
        finally:
            con.execute("DETACH rating_lookup_in")
    except duckdb.Error:
        for name in created:
            con.execute(f"DROP TABLE IF EXISTS temp.{name}")
        return False
    return bool(created)


def _code_term(group: _Group) -> str:
    """The call's carrier code in the keys of ``group``; null for calls not looked up (not
    billable, or unknown carrier), which then match nothing."""
    return "b.__rating_pcode" if group.keyed else "b.__rating_pcode * 0"


def _level_join(group: _Group, length: int, kind: str, bit: int, alias: str) -> str:
    code = _code_term(group)
    guard = f"b.__rating_len >= {length}"
    if bit < _MASK_BITS:
        guard += f" AND (b.__rating_v & {1 << bit}) <> 0"
    if kind == "text":
        column = "prefix, code"
        condition = (
            f"{alias}.prefix = CASE WHEN {guard} AND b.__rating_n IS NOT NULL"
            f" THEN left(b.__rating_digits, {length}) END AND {alias}.code = {code}"
        )
    else:
        key = f"b.__rating_n // {10 ** (KEY_DIGITS - length)}"
        if kind == "pair":
            column = "pkey, code"
            condition = f"{alias}.pkey = CASE WHEN {guard} THEN {key} END AND {alias}.code = {code}"
        else:
            column = "pk"
            condition = f"{alias}.pk = CASE WHEN {guard} THEN {key} * {group.mult} + {code} END"
    return (
        f"    LEFT JOIN (SELECT {column}, node FROM {group.levels_table} WHERE plen = {length})"
        f" AS {alias}\n        ON {condition}\n"
    )


def _group_ctes(group: _Group, source: str, name: str) -> list[str]:
    """CTEs adding to ``source`` the call's resolved row id of each side of ``group``.

    The short lookup comes first: it gives the call's node of at most the short width digits
    and which longer prefix lengths start with the call's first digits; only those are probed,
    and the longest node found is the call's node.
    """
    if group.short_width < 0:
        rids = ", ".join(f"CAST(NULL AS BIGINT) AS __rating_{side}_rid" for side in group.sides)
        return [f"{name} AS (\n    SELECT b.*, {rids}\n    FROM {source} AS b\n)"]
    width, bits = group.short_width, min(len(group.levels), _MASK_BITS)
    joins, nodes = [], []
    for bit, (length, kind) in enumerate(group.levels):
        alias = f"__rating_{group.name}{length}"
        joins.append(_level_join(group, length, kind, bit, alias))
        nodes.append(f"{alias}.node")
    nodes.append(f"nullif(b.__rating_v // {2**bits}, 0) - 1")
    node = nodes[0] if len(nodes) == 1 else f"coalesce({', '.join(nodes)})"
    window = (
        " AND a.seg_from <= b.__rating_ts AND b.__rating_ts < a.seg_to" if group.windowed else ""
    )
    rids = ", ".join(f"a.{side}_rid AS __rating_{side}_rid" for side in group.sides)
    return [
        f"{name}_short AS (\n    SELECT b.*, s.v AS __rating_v\n    FROM {source} AS b\n"
        f"    LEFT JOIN {group.short_table} AS s\n"
        f"        ON s.sk = (CASE WHEN b.__rating_n IS NULL THEN 0"
        f" ELSE (b.__rating_n // {10 ** (KEY_DIGITS - width)}) * 32"
        f" + least(b.__rating_len, {width}) END) * {group.mult} + {_code_term(group)}\n)",
        f"{name}_node AS (\n    SELECT b.* EXCLUDE (__rating_v), {node} AS __rating_node\n"
        f"    FROM {name}_short AS b\n" + "".join(joins) + ")",
        f"{name} AS (\n    SELECT b.* EXCLUDE (__rating_node), {rids}\n"
        f"    FROM {name}_node AS b\n"
        f"    LEFT JOIN {group.attach_table} AS a\n"
        f"        ON a.ak = b.__rating_node * 4 + (b.__rating_node % 2) * b.__rating_ct{window}\n)",
    ]


def _amount_units(
    prefix: str, bill: str, safe_bill: int, units_type: str, scale: int, decimals: int
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
    if units_type != "BIGINT" or safe_bill < 0:
        return wide
    narrow = f"(2 * ({fee60} + {rate} * {bill}) * {up} + {down}) // {2 * down}"
    return f"CASE WHEN {bill} <= {safe_bill} THEN CAST({narrow} AS HUGEINT) ELSE {wide} END"


def _markup_units(markup: tuple[int, int, int] | None) -> str:
    """The WHEN/ELSE branch pricing revenue as half-up(cost x markup), or none."""
    if markup is None:
        return ""
    units, den, safe = markup
    wide = (
        f"(2 * c.__rating_cost_units * CAST({units} AS HUGEINT) + CAST({den} AS HUGEINT))"
        f" // CAST({2 * den} AS HUGEINT)"
    )
    if safe < 0:
        return f"ELSE {wide}"
    # half-up of cost x markup = floor((2 cost m + den) / (2 den)), in BIGINT while that
    # cannot overflow
    return (
        f"WHEN c.__rating_cost_units <= {safe} THEN CAST("
        f"(2 * CAST(c.__rating_cost_units AS BIGINT) * {units} + {den}) // {2 * den} AS HUGEINT)"
        f" ELSE {wide}"
    )


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


def _quote_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# The rating. Placeholders are filled only with names and integers this module generates
# (table names, prefix lengths, powers of ten, bounds of the integer arithmetic, the money
# scale) and the deck version as a quoted literal: every other value that comes from a deck or
# a CDR reaches the query as table data.
_BASE_SQL = """base AS (
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
        CASE WHEN b.__rating_billable THEN k.code END AS __rating_pcode,
        strlen(b.__rating_digits) AS __rating_len,
        CASE
            WHEN regexp_full_match(b.__rating_digits, '[0-9]+')
                THEN CAST(left(b.__rating_digits, {key_digits}) AS BIGINT)
                    * {powers}[{key_digits} + 1 - least(strlen(b.__rating_digits), {key_digits})]
        END AS __rating_n
    FROM base AS b
    LEFT JOIN {known} AS k ON k.carrier_id = CAST(b.carrier_id AS VARCHAR)
)"""

_PRICE_SQL = """billed AS (
    SELECT
        b.*,
        cr.prefix AS __rating_prefix,
        cr.destination AS __rating_destination,
        cr.rate_per_minute AS __rating_rate,
        cr.connection_fee AS __rating_fee,
        cr.rate_units AS __rating_rate_units,
        cr.fee60_units AS __rating_fee60_units,
        CASE
            WHEN NOT b.__rating_billable THEN 0
            WHEN b.__rating_d <= cr.inc_a THEN cr.inc_a
            ELSE cr.inc_a + ((b.__rating_d - cr.inc_a + cr.inc_b - 1) // cr.inc_b) * cr.inc_b
        END AS __rating_bill,
        rr.inc_a IS NOT NULL AS __rating_has_retail,
        rr.prefix AS __rating_retail_prefix,
        rr.destination AS __rating_retail_destination,
        rr.rate_per_minute AS __rating_retail_rate,
        rr.rate_units AS __rating_retail_rate_units,
        rr.fee60_units AS __rating_retail_fee60_units,
        CASE
            WHEN b.__rating_d <= rr.inc_a THEN rr.inc_a
            ELSE rr.inc_a + ((b.__rating_d - rr.inc_a + rr.inc_b - 1) // rr.inc_b) * rr.inc_b
        END AS __rating_retail_row_bill
    FROM {source} AS b
    LEFT JOIN {cost_rows} AS cr ON cr.rid = b.__rating_cost_rid
    LEFT JOIN {retail_rows} AS rr ON rr.rid = {retail_rid}
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
            WHEN b.__rating_has_retail THEN b.__rating_retail_row_bill
            {markup_bill}
        END AS __rating_retail_bill
    FROM billed AS b
),
revenued AS (
    SELECT
        c.*,
        CASE
            WHEN NOT c.__rating_billable THEN CAST(0 AS HUGEINT)
            WHEN c.__rating_cost_units IS NULL THEN NULL
            WHEN c.__rating_has_retail THEN {retail_units}
            {markup_units}
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
        WHEN r.__rating_cost_units IS NULL THEN 'no_rate'
        WHEN r.__rating_revenue_units IS NULL THEN 'no_retail_rate'
        ELSE 'rated'
    END AS rating_status,
    CAST({version} AS VARCHAR) AS deck_version
FROM revenued AS r"""

# Internal columns of the rating query (without their __rating_ prefix), dropped from its
# result.
_INTERNAL_COLUMNS = (
    "billable",
    "d",
    "ts",
    "ct",
    "digits",
    "known",
    "pcode",
    "len",
    "n",
    "cost_rid",
    "retail_rid",
    "prefix",
    "destination",
    "rate",
    "fee",
    "rate_units",
    "fee60_units",
    "bill",
    "has_retail",
    "retail_prefix",
    "retail_destination",
    "retail_rate",
    "retail_rate_units",
    "retail_fee60_units",
    "retail_row_bill",
    "cost_units",
    "retail_bill",
    "revenue_units",
)


def rate_calls(
    con: duckdb.DuckDBPyConnection, calls: str, decks: RateDecks, lookup: Path | None = None
) -> duckdb.DuckDBPyRelation:
    """Price every call of the table or view ``calls`` with ``decks``.

    Returns a lazy relation with every column of ``calls`` (an input column named like a
    rating column is replaced by the one computed here, so rated calls can be re-rated)
    followed by :data:`RATING_COLUMNS`. Every call gets exactly one ``rating_status``; none is
    dropped. The decks are registered into ``con`` as temporary tables named after their
    version, once per connection; with ``lookup`` (a folder, the version's snapshot), they
    are read from there when a process built them before, and kept there otherwise.
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

    plan = _register(con, decks, lookup)
    decimals = decks.config.money_decimals
    collisions = [name for name in RATING_COLUMNS if name in columns]
    powers = ", ".join(f"CAST({10**i} AS BIGINT)" for i in range(KEY_DIGITS + 1))
    ctes = [
        _BASE_SQL.format(
            exclude=f" EXCLUDE ({', '.join(collisions)})" if collisions else "",
            start_time=start_time,
            calls=_quote_name(calls),
            known=plan.known,
            key_digits=KEY_DIGITS,
            powers=f"[{powers}]",
        )
    ]
    source = "keyed"
    for index, group in enumerate(plan.groups):
        ctes += _group_ctes(group, source, f"matched{index}")
        source = f"matched{index}"
    resolved = {side for group in plan.groups for side in group.sides}
    if "retail" not in resolved:
        retail_rid = "CAST(NULL AS BIGINT)"
    elif any(group.sides == _SIDES for group in plan.groups):
        retail_rid = "b.__rating_retail_rid"  # gated by the cost row at registration
    else:
        retail_rid = "CASE WHEN b.__rating_cost_rid IS NOT NULL THEN b.__rating_retail_rid END"
    internal = [name for name in _INTERNAL_COLUMNS if name != "retail_rid" or "retail" in resolved]
    ctes.append(
        _PRICE_SQL.format(
            source=source,
            cost_rows=plan.rows["cost"],
            retail_rows=plan.rows["retail"],
            retail_rid=retail_rid,
            cost_units=_amount_units(
                "b.__rating_",
                "b.__rating_bill",
                plan.safe_bill["cost"],
                plan.units["cost"],
                plan.scale,
                decimals,
            ),
            markup_bill="ELSE b.__rating_bill" if plan.markup is not None else "",
            retail_units=_amount_units(
                "c.__rating_retail_",
                "c.__rating_retail_bill",
                plan.safe_bill["retail"],
                plan.units["retail"],
                plan.scale,
                decimals,
            ),
            markup_units=_markup_units(plan.markup),
            internal=", ".join(f"__rating_{name}" for name in internal),
            cost=_money("r.__rating_cost_units", decimals),
            revenue=_money("r.__rating_revenue_units", decimals),
            margin=_money("r.__rating_revenue_units - r.__rating_cost_units", decimals),
            version=_quote_text(decks.version),
        )
    )
    return con.sql("WITH " + ",\n".join(ctes))
