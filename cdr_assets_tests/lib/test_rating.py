"""Tests of the rating engine against docs/rating.md, read line by line.

Every test writes its own small decks into a temporary rates directory, rates a handful of
calls through DuckDB and checks each rating column. A property test compares ``rate_calls``
with a deliberately naive pure-Python reading of the contract on random decks and calls.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_assets.lib import rating
from cdr_assets.lib.rating import (
    RATING_COLUMNS,
    DeckError,
    RateDecks,
    load_decks,
    rate_calls,
)

REPO = Path(__file__).resolve().parents[2]
HEADER = (
    "prefix,destination,call_type,rate_per_minute,connection_fee,increment,"
    "effective_from,effective_to"
)
CONFIG = 'currency = "USD"\nmoney_decimals = 4\nmarkup = 1.5\n'
NOON = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def write_rates(
    root: Path,
    cost: dict[str, str],
    retail: str | None = None,
    config: str = CONFIG,
    carriers: str | None = None,
) -> Path:
    """A rates directory: ``cost`` maps carrier_id to the deck's CSV text."""
    rates = root / "rates"
    (rates / "cost").mkdir(parents=True, exist_ok=True)
    (rates / "config.toml").write_text(config, encoding="utf-8")
    if carriers is not None:
        (rates / "carriers.csv").write_text(carriers, encoding="utf-8")
    for carrier_id, text in cost.items():
        (rates / "cost" / f"{carrier_id}.csv").write_text(text, encoding="utf-8")
    if retail is not None:
        (rates / "retail.csv").write_text(retail, encoding="utf-8")
    return rates


def deck(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def call(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "call_id": "c",
        "called_number": "+447911123456",
        "call_type": "international",
        "start_time": NOON,
        "duration_seconds": 60,
        "disposition": "ANSWERED",
        "carrier_id": "carrier_a",
    }
    values.update(overrides)
    return values


CALL_SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("called_number", pa.string()),
        ("call_type", pa.string()),
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("duration_seconds", pa.int64()),
        ("disposition", pa.string()),
        ("carrier_id", pa.string()),
    ]
)


def rate(
    decks: RateDecks | Path,
    calls: list[dict[str, Any]],
    con: duckdb.DuckDBPyConnection | None = None,
) -> list[dict[str, Any]]:
    """Rate ``calls`` and return the rows in input order, as dicts."""
    if isinstance(decks, Path):
        decks = load_decks(decks)
    con = con or duckdb.connect()
    rows = [{**c, "call_id": c.get("call_id") or f"call-{i}"} for i, c in enumerate(calls)]
    for i, row in enumerate(rows):
        row["call_id"] = f"{i:06d}-{row['call_id']}"
    table = pa.Table.from_pylist(rows, schema=CALL_SCHEMA)
    con.register("calls_arrow", table)
    con.execute("CREATE OR REPLACE TEMP TABLE calls AS SELECT * FROM calls_arrow").fetchall()
    con.unregister("calls_arrow")
    result = rate_calls(con, "calls", decks).order("call_id").fetchall()
    columns = rate_calls(con, "calls", decks).columns
    return [dict(zip(columns, values, strict=True)) for values in result]


def rate_one(decks: RateDecks | Path, **overrides: Any) -> dict[str, Any]:
    (row,) = rate(decks, [call(**overrides)])
    return row


D = Decimal


@pytest.fixture
def simple(tmp_path: Path) -> Path:
    """carrier_a: 44 at 0.04/min, 60/60; nothing else. No retail deck, markup 1.5."""
    return write_rates(tmp_path, {"carrier_a": deck("44,United Kingdom,,0.04,,60/60,,")})


# --------------------------------------------------------------------------------------------
# Billable seconds: billable = a if 0 < d <= a; a + ceil((d - a) / b) * b if d > a
# --------------------------------------------------------------------------------------------

INCREMENT_CASES = [
    # increment, d, billable
    *[("60/60", d, b) for d, b in [(0, 0), (1, 60), (60, 60), (61, 120), (120, 120), (121, 180)]],
    *[("1/1", d, b) for d, b in [(0, 0), (1, 1), (2, 2), (3, 3)]],
    *[("30/6", d, b) for d, b in [(0, 0), (1, 30), (30, 30), (31, 36), (36, 36), (37, 42)]],
    ("", 61, 120),  # empty increment = 60/60
]


@pytest.mark.parametrize(("increment", "duration", "billable"), INCREMENT_CASES)
def test_billable_seconds_per_increment(
    tmp_path: Path, increment: str, duration: int, billable: int
) -> None:
    rates = write_rates(tmp_path, {"carrier_a": deck(f"44,UK,,0.6,,{increment},,")})
    row = rate_one(rates, duration_seconds=duration)
    assert row["billable_seconds"] == billable
    # 0.6 per minute = 0.01 per second: the cost shows the billed seconds exactly.
    assert row["cost"] == D(billable) / 100
    assert row["rating_status"] == ("unanswered" if duration == 0 else "rated")


# --------------------------------------------------------------------------------------------
# Amounts: cost = round(connection_fee + rate_per_minute * billable / 60), half-up
# --------------------------------------------------------------------------------------------

AMOUNT_CASES = [
    # rate, fee, increment, duration, money_decimals, cost
    ("0.06", "0.05", "60/60", 61, 4, "0.1700"),  # fee + 2 minutes
    ("0.06", "", "60/60", 61, 4, "0.1200"),  # empty fee = 0
    ("0", "0.25", "60/60", 5, 4, "0.2500"),  # fee alone
    ("0.0115", "", "1/1", 30, 4, "0.0058"),  # exactly 0.00575: half-up goes up (float: 0.0057)
    ("0.0001", "", "1/1", 30, 4, "0.0001"),  # exactly 0.00005 goes up
    ("0.0001", "", "1/1", 29, 4, "0.0000"),  # 0.0000483 goes down
    ("0.07", "", "1/1", 45, 2, "0.05"),  # 0.0525 -> 0.05
    ("0.1", "", "1/1", 45, 2, "0.08"),  # exactly 0.075 -> 0.08
    ("1.5", "0.5", "60/60", 30, 0, "2"),  # exactly 1.5 + 0.5 = 2.0
    ("1", "0", "1/1", 30, 0, "1"),  # exactly 0.5 -> 1
    ("0.123456789", "0.000000001", "1/1", 7, 12, "0.014403293050"),
]


@pytest.mark.parametrize(
    ("rate_", "fee", "increment", "duration", "decimals", "cost"), AMOUNT_CASES
)
def test_cost_is_rounded_half_up_exactly(
    tmp_path: Path, rate_: str, fee: str, increment: str, duration: int, decimals: int, cost: str
) -> None:
    config = f'currency = "USD"\nmoney_decimals = {decimals}\n'
    rates = write_rates(
        tmp_path, {"carrier_a": deck(f"44,UK,,{rate_},{fee},{increment},,")}, config=config
    )
    row = rate_one(rates, duration_seconds=duration)
    assert row["cost"] == D(cost)
    assert row["cost"].as_tuple().exponent == -decimals  # carried at money_decimals
    assert row["rating_status"] == "no_retail_rate"


def test_a_float_would_price_differently(tmp_path: Path) -> None:
    # The guard of the previous test: binary floats really do get this one wrong.
    assert round(0.0115 * 30 / 60, 4) == 0.0057
    rates = write_rates(tmp_path, {"carrier_a": deck("44,UK,,0.0115,,1/1,,")})
    row = rate_one(rates, duration_seconds=30)
    assert row["cost"] == D("0.0058")
    assert row["revenue"] == D("0.0087")  # 0.0058 * 1.5 = 0.0087
    assert row["margin"] == D("0.0029")


MARKUP_CASES = [
    # markup, cost rate (1/1, 60 s so cost = rate), revenue
    ("1.5", "0.0001", "0.0002"),  # exactly 0.00015 goes up
    ("1.5", "0.0003", "0.0005"),  # exactly 0.00045 goes up
    ("1.25", "0.0002", "0.0003"),  # exactly 0.00025 goes up
    ("1.33", "0.0010", "0.0013"),  # 0.00133 goes down
    ("0", "0.5", "0.0000"),
    ("2", "0.5", "1.0000"),
]


@pytest.mark.parametrize(("markup", "cost_rate", "revenue"), MARKUP_CASES)
def test_markup_revenue_is_rounded_half_up(
    tmp_path: Path, markup: str, cost_rate: str, revenue: str
) -> None:
    config = f'currency = "USD"\nmoney_decimals = 4\nmarkup = {markup}\n'
    rates = write_rates(tmp_path, {"carrier_a": deck(f"44,UK,,{cost_rate},,1/1,,")}, config=config)
    row = rate_one(rates, duration_seconds=60)
    assert row["cost"] == D(cost_rate)
    assert row["revenue"] == D(revenue)
    assert row["margin"] == D(revenue) - D(cost_rate)
    assert row["retail_billable_seconds"] == row["billable_seconds"] == 60


def test_result_column_types(simple: Path) -> None:
    con = duckdb.connect()
    rate(simple, [call()], con=con)
    relation = rate_calls(con, "calls", load_decks(simple))
    types = dict(zip(relation.columns, map(str, relation.types), strict=True))
    assert list(relation.columns) == [c.name for c in CALL_SCHEMA] + list(RATING_COLUMNS)
    assert types["cost"] == types["revenue"] == types["margin"] == "DECIMAL(38,4)"
    assert types["billable_seconds"] == types["retail_billable_seconds"] == "BIGINT"
    assert types["rate_per_minute"].startswith("DECIMAL(")
    assert types["connection_fee"].startswith("DECIMAL(")
    assert types["retail_rate_per_minute"].startswith("DECIMAL(")
    for name in ("rate_prefix", "destination", "retail_prefix", "retail_destination"):
        assert types[name] == "VARCHAR"
    assert types["rating_status"] == types["deck_version"] == "VARCHAR"


def test_no_step_goes_through_double(simple: Path) -> None:
    con = duckdb.connect()
    rate(simple, [call()], con=con)
    sql = rate_calls(con, "calls", load_decks(simple)).sql_query()
    assert not re.search(r"\b(DOUBLE|FLOAT|REAL)\b", sql, re.IGNORECASE)
    plan = "\n".join(str(r) for r in con.execute("EXPLAIN " + sql).fetchall())
    assert "DOUBLE" not in plan.upper()


def test_money_decimals_zero_and_twelve(tmp_path: Path) -> None:
    for decimals, expected in ((0, "1"), (12, "0.766666666667")):
        config = f'currency = "EUR"\nmoney_decimals = {decimals}\n'
        rates = write_rates(
            tmp_path / str(decimals), {"c": deck(",Any,,0.46,,1/1,,")}, config=config
        )
        row = rate_one(rates, carrier_id="c", duration_seconds=100)
        assert row["cost"] == D(expected)


def test_amounts_past_bigint_stay_exact(tmp_path: Path) -> None:
    # In units of 10^-12 this rate does not fit a BIGINT: the HUGEINT path prices it.
    config = 'currency = "USD"\nmoney_decimals = 12\nmarkup = 1.000000000001\n'
    rate_ = "98765432109.123456789012"
    rates = write_rates(tmp_path, {"c": deck(f",Any,,{rate_},0.5,1/1,,")}, config=config)
    row = rate_one(rates, carrier_id="c", duration_seconds=7)
    with localcontext() as context:
        context.prec = 80
        cost = (D("0.5") + D(rate_) * 7 / 60).quantize(D("1e-12"), rounding=ROUND_HALF_UP)
        revenue = (cost * D("1.000000000001")).quantize(D("1e-12"), rounding=ROUND_HALF_UP)
    assert (row["cost"], row["revenue"]) == (cost, revenue)


# --------------------------------------------------------------------------------------------
# Choosing the row: longest prefix; at equal length the row with a call_type; windows
# --------------------------------------------------------------------------------------------

CHOICE_DECK = deck(
    ",World,,0.90,,60/60,,",
    "4,Zone 4,,0.50,,60/60,,",
    "44,UK,,0.40,,60/60,,",
    "44,UK international,international,0.30,,60/60,,",
    "4420,London,,0.20,,60/60,,",
    "44,UK national,national,0.35,,60/60,,",
)

CHOICE_CASES = [
    # called number, call type, expected prefix, destination
    ("+442071234567", "international", "4420", "London"),  # longest prefix wins
    ("+447911123456", "international", "44", "UK international"),  # typed row beats empty
    ("+447911123456", "national", "44", "UK national"),
    ("+447911123456", "local", "44", "UK"),  # no local row: the empty call_type row
    ("+447911123456", None, "44", "UK"),  # unknown type: only empty call_type rows
    ("+4930123456", "international", "4", "Zone 4"),
    ("+33123456789", "international", "", "World"),  # empty prefix matches everything
    ("+44", "international", "44", "UK international"),  # the whole number is the prefix
    ("+4", None, "4", "Zone 4"),
    ("+", None, "", "World"),
]


@pytest.mark.parametrize(("number", "call_type", "prefix", "destination"), CHOICE_CASES)
def test_row_choice(
    tmp_path: Path, number: str, call_type: str | None, prefix: str, destination: str
) -> None:
    rates = write_rates(tmp_path, {"carrier_a": CHOICE_DECK})
    row = rate_one(rates, called_number=number, call_type=call_type)
    assert (row["rate_prefix"], row["destination"]) == (prefix, destination)


def test_typed_row_wins_at_equal_length_only(tmp_path: Path) -> None:
    # A longer prefix without call_type beats a shorter one with the call's type.
    rates = write_rates(
        tmp_path,
        {"carrier_a": deck("44,UK intl,international,0.3,,,,", "447,UK mobile,,0.5,,,,")},
    )
    assert rate_one(rates, called_number="+447911123456")["destination"] == "UK mobile"


def test_typed_row_matches_only_its_type(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {"carrier_a": deck("44,UK national,national,0.3,,,,")})
    assert rate_one(rates, call_type="international")["rating_status"] == "no_rate"
    assert rate_one(rates, call_type=None)["rating_status"] == "no_rate"
    assert rate_one(rates, call_type="national")["rating_status"] == "rated"


WINDOW_DECK = deck(
    "44,UK old,,0.40,,60/60,,2024-05-15T12:00:00Z",
    "44,UK new,,0.20,,60/60,2024-05-15T14:00:00+02:00,2024-06-01",
    "44,UK june,,0.10,,60/60,2024-06-01,",
    "49,DE from,,0.30,,60/60,2024-05-15 12:00:00,",
)

WINDOW_CASES = [
    # start time, destination
    (NOON - timedelta(microseconds=1), "UK old"),  # effective_to is exclusive
    (NOON, "UK new"),  # effective_from is inclusive (+02:00 converted to UTC)
    (datetime(2024, 5, 31, 23, 59, 59, tzinfo=UTC), "UK new"),
    (datetime(2024, 6, 1, tzinfo=UTC), "UK june"),  # a date is midnight UTC
    (datetime(2024, 6, 1, 2, tzinfo=UTC).astimezone(), "UK june"),
    (datetime(1999, 1, 1, tzinfo=UTC), "UK old"),  # empty effective_from = always
    (datetime(2999, 1, 1, tzinfo=UTC), "UK june"),  # empty effective_to = never ends
]


@pytest.mark.parametrize(("start", "destination"), WINDOW_CASES)
def test_effective_window(tmp_path: Path, start: datetime, destination: str) -> None:
    rates = write_rates(tmp_path, {"carrier_a": WINDOW_DECK})
    assert rate_one(rates, start_time=start)["destination"] == destination


@pytest.mark.parametrize(
    ("start", "status"),
    [(NOON - timedelta(seconds=1), "no_rate"), (NOON, "rated")],
)
def test_naive_datetime_in_a_deck_is_utc(tmp_path: Path, start: datetime, status: str) -> None:
    rates = write_rates(tmp_path, {"carrier_a": WINDOW_DECK})
    assert rate_one(rates, called_number="+4930123", start_time=start)["rating_status"] == status


def test_window_falls_back_to_a_shorter_prefix(tmp_path: Path) -> None:
    # Out of the 4420 row's window, the 44 row prices the call.
    rates = write_rates(
        tmp_path,
        {"carrier_a": deck("44,UK,,0.4,,,,", "4420,London,,0.2,,,2024-05-15T12:00:00Z,")},
    )
    before = rate_one(rates, called_number="+442071234567", start_time=NOON - timedelta(hours=1))
    after = rate_one(rates, called_number="+442071234567", start_time=NOON)
    assert (before["rate_prefix"], after["rate_prefix"]) == ("44", "4420")


def test_start_time_without_zone_is_utc(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {"carrier_a": WINDOW_DECK})
    con = duckdb.connect()
    con.execute("SET TimeZone = 'America/New_York'").fetchall()
    con.execute(
        """CREATE TABLE naive AS SELECT * FROM (VALUES
            ('a', '+447911', 'international', TIMESTAMP '2024-05-15 11:59:59', 60, 'ANSWERED',
             'carrier_a'),
            ('b', '+447911', 'international', TIMESTAMP '2024-05-15 12:00:00', 60, 'ANSWERED',
             'carrier_a')
        ) t(call_id, called_number, call_type, start_time, duration_seconds, disposition,
            carrier_id)"""
    ).fetchall()
    relation = rate_calls(con, "naive", load_decks(rates)).order("call_id")
    assert [r[0] for r in relation.select("destination").fetchall()] == ["UK old", "UK new"]


# --------------------------------------------------------------------------------------------
# Rating status, in the order of the contract, and the null rules
# --------------------------------------------------------------------------------------------

STATUS_CASES = [
    # call overrides, status
    ({"disposition": "NO_ANSWER", "duration_seconds": 30}, "unanswered"),
    ({"disposition": "BUSY"}, "unanswered"),
    ({"disposition": "FAILED"}, "unanswered"),
    ({"disposition": "CONGESTION"}, "unanswered"),
    ({"disposition": "ANSWERED", "duration_seconds": 0}, "unanswered"),
    ({"disposition": None, "duration_seconds": 0}, "unanswered"),  # derived NO_ANSWER
    ({"disposition": None, "duration_seconds": 1}, "rated"),  # derived ANSWERED
    ({"disposition": "NO_ANSWER", "carrier_id": "carrier_x"}, "unanswered"),  # first wins
    ({"carrier_id": "carrier_x"}, "unknown_carrier"),  # listed in carriers.csv, no deck
    ({"carrier_id": "nobody"}, "unknown_carrier"),
    ({"carrier_id": "carrier_empty"}, "no_rate"),  # a deck file without rows: known
    ({"called_number": "+33123456"}, "no_rate"),
    ({}, "rated"),
]


@pytest.mark.parametrize(("overrides", "status"), STATUS_CASES)
def test_rating_status(tmp_path: Path, overrides: dict[str, Any], status: str) -> None:
    rates = write_rates(
        tmp_path,
        {"carrier_a": deck("44,UK,,0.04,0.01,60/60,,"), "carrier_empty": deck()},
        carriers="carrier_id,name\ncarrier_a,A\ncarrier_x,X without a deck\n",
    )
    row = rate_one(rates, **overrides)
    assert row["rating_status"] == status
    if status == "unanswered":
        # costs 0 and earns 0, connection fee included; no deck row is looked up
        assert (row["cost"], row["revenue"], row["margin"]) == (0, 0, 0)
        assert row["billable_seconds"] == row["retail_billable_seconds"] == 0
        for name in ("rate_prefix", "destination", "rate_per_minute", "connection_fee"):
            assert row[name] is None
        for name in ("retail_prefix", "retail_destination", "retail_rate_per_minute"):
            assert row[name] is None
    elif status in ("unknown_carrier", "no_rate"):
        for name in (
            "billable_seconds",
            "rate_prefix",
            "destination",
            "rate_per_minute",
            "connection_fee",
            "cost",
            "revenue",
            "margin",
            "retail_prefix",
            "retail_destination",
            "retail_rate_per_minute",
            "retail_billable_seconds",
        ):
            assert row[name] is None, name
    else:
        assert row["cost"] == D("0.0500")  # 0.01 + 0.04
        assert row["revenue"] == D("0.0750")
        assert row["margin"] == D("0.0250")
    assert row["deck_version"] == load_decks(rates).version


def test_no_markup_and_no_retail_row_is_no_retail_rate(tmp_path: Path) -> None:
    config = 'currency = "USD"\nmoney_decimals = 4\n'
    rates = write_rates(
        tmp_path,
        {"carrier_a": deck("44,UK,,0.04,,60/60,,", "33,FR,,0.05,,60/60,,")},
        retail=deck("44,UK retail,,0.10,,1/1,,"),
        config=config,
    )
    fr = rate_one(rates, called_number="+33123456789", duration_seconds=90)
    assert fr["rating_status"] == "no_retail_rate"
    assert (fr["billable_seconds"], fr["cost"]) == (120, D("0.1000"))
    assert fr["revenue"] is fr["margin"] is fr["retail_billable_seconds"] is None
    assert fr["retail_prefix"] is None
    uk = rate_one(rates, duration_seconds=90)
    assert (uk["rating_status"], uk["revenue"], uk["retail_billable_seconds"]) == (
        "rated",
        D("0.1500"),
        90,
    )


def test_retail_row_bills_with_its_own_increment_and_markup_fills_gaps(tmp_path: Path) -> None:
    rates = write_rates(
        tmp_path,
        {
            "carrier_a": deck(
                "44,UK,,0.04,,60/60,,", "33,FR,,0.05,0.02,60/60,,", ",World,,0.2,,60/60,,"
            )
        },
        retail=deck(
            "44,UK retail,,0.10,0.01,30/6,,",
            "4420,London retail,,0.12,,1/1,,",
            "49,DE national retail,national,0.5,,,,",
        ),
    )
    uk = rate_one(rates, duration_seconds=31)
    assert (uk["billable_seconds"], uk["cost"]) == (60, D("0.0400"))
    assert (uk["retail_prefix"], uk["retail_destination"]) == ("44", "UK retail")
    assert uk["retail_rate_per_minute"] == D("0.10")
    assert uk["retail_billable_seconds"] == 36  # 30/6
    assert uk["revenue"] == D("0.0700")  # 0.01 + 0.10 * 36 / 60
    assert uk["margin"] == D("0.0300")

    london = rate_one(rates, called_number="+442071234567", duration_seconds=31)
    assert (london["retail_prefix"], london["retail_billable_seconds"]) == ("4420", 31)
    assert london["revenue"] == D("0.0620")

    # No retail row for France: cost * markup, and the cost side's billable seconds.
    fr = rate_one(rates, called_number="+33123456789", duration_seconds=31)
    assert fr["retail_prefix"] is fr["retail_destination"] is fr["retail_rate_per_minute"] is None
    assert fr["cost"] == D("0.0700")
    assert fr["revenue"] == D("0.1050")
    assert fr["retail_billable_seconds"] == fr["billable_seconds"] == 60

    # The national-only retail row does not price an international call.
    de = rate_one(rates, called_number="+4930123", duration_seconds=60)
    assert (de["retail_prefix"], de["revenue"]) == (None, D("0.3000"))
    de_national = rate_one(rates, called_number="+4930123", call_type="national")
    assert (de_national["retail_prefix"], de_national["revenue"]) == ("49", D("0.5000"))


def test_retail_is_not_consulted_without_a_cost_row(tmp_path: Path) -> None:
    rates = write_rates(
        tmp_path, {"carrier_a": deck("44,UK,,0.04,,,,")}, retail=deck(",Anything,,1,,,,")
    )
    row = rate_one(rates, called_number="+33123")
    assert row["rating_status"] == "no_rate"
    assert row["retail_prefix"] is row["revenue"] is row["retail_billable_seconds"] is None


def test_carrier_with_an_empty_deck_beside_a_retail_deck(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {"carrier_a": HEADER + "\n"}, retail=deck(",Anything,,1,,,,"))
    assert rate_one(rates)["rating_status"] == "no_rate"
    assert rate_one(rates, carrier_id="carrier_b")["rating_status"] == "unknown_carrier"


def test_retail_deck_with_windows_and_gaps(tmp_path: Path) -> None:
    config = 'currency = "USD"\nmoney_decimals = 4\n'
    rates = write_rates(
        tmp_path,
        {"carrier_a": deck(",World,,0.1,,1/1,,")},
        retail=deck(
            "44,UK promo,,0.05,,1/1,2024-05-01,2024-05-15T12:00:00Z",
            "44,UK,,0.2,,1/1,2024-05-20,",
        ),
        config=config,
    )
    promo = rate_one(rates, start_time=NOON - timedelta(seconds=1))
    gap = rate_one(rates, start_time=NOON)
    full = rate_one(rates, start_time=datetime(2024, 5, 20, tzinfo=UTC))
    assert (promo["retail_destination"], promo["revenue"]) == ("UK promo", D("0.0500"))
    assert (gap["rating_status"], gap["revenue"]) == ("no_retail_rate", None)
    assert (full["retail_destination"], full["revenue"]) == ("UK", D("0.2000"))


# --------------------------------------------------------------------------------------------
# The shipped default decks
# --------------------------------------------------------------------------------------------

DEFAULT_RATES = {
    # carrier: local, national, 1, 44, 49, 33, 61, 81, 86, 91, other
    "carrier_001": "0.01 0.02 0.03 0.04 0.04 0.04 0.05 0.06 0.07 0.05 0.08",
    "carrier_002": "0.008 0.015 0.025 0.035 0.035 0.035 0.045 0.055 0.065 0.045 0.07",
    "carrier_003": "0.009 0.018 0.028 0.038 0.038 0.038 0.048 0.058 0.068 0.048 0.075",
}
DEFAULT_NUMBERS = [
    ("local", "+14155550100"),
    ("national", "+14155550100"),
    *[
        ("international", number)
        for number in (
            "+12125550100",
            "+442071234567",
            "+4930123456",
            "+33142685300",
            "+61212345678",
            "+81312345678",
            "+861012345678",
            "+911123456789",
            "+5511987654321",
        )
    ],
]


@pytest.mark.parametrize("carrier_id", sorted(DEFAULT_RATES))
def test_default_decks_reproduce_the_tariff(carrier_id: str) -> None:
    decks = load_decks(REPO / "rates")
    calls = [
        call(called_number=number, call_type=call_type, carrier_id=carrier_id, duration_seconds=61)
        for call_type, number in DEFAULT_NUMBERS
    ]
    rows = rate(decks, calls)
    for row, expected in zip(rows, DEFAULT_RATES[carrier_id].split(), strict=True):
        assert row["rating_status"] == "rated"
        assert row["rate_per_minute"] == D(expected), row["called_number"]
        assert row["billable_seconds"] == 120
        assert row["cost"] == D(expected) * 2
        assert row["revenue"] == (D(expected) * 2 * D("1.5")).quantize(D("0.0001"))


def test_default_decks_worked_example() -> None:
    decks = load_decks(REPO / "rates")
    assert decks.config.currency == "USD"
    assert decks.config.money_decimals == 4
    assert decks.config.markup == D("1.5")
    assert decks.retail is None
    assert decks.carriers == {
        "carrier_001": "Premium Carrier A",
        "carrier_002": "Budget Carrier B",
        "carrier_003": "Standard Carrier C",
    }
    row = rate_one(
        decks, called_number="+447911123456", carrier_id="carrier_001", duration_seconds=330
    )
    assert row["billable_seconds"] == 360
    assert str(row["cost"]) == "0.2400"
    assert str(row["revenue"]) == "0.3600"
    assert str(row["margin"]) == "0.1200"
    assert row["rating_status"] == "rated"


# --------------------------------------------------------------------------------------------
# Deck rules: a deck that breaks one is refused, naming the file, the line and the rule
# --------------------------------------------------------------------------------------------

INVALID_DECKS = [
    # rows (the header is line 1), line, rule
    (["44,UK,,0.04,,,,", "4a,Bad,,0.04,,,,"], 3, "prefix must be digits only"),
    (["+44,UK,,0.04,,,,"], 2, "prefix must be digits only"),
    (["44,UK,,-0.01,,,,"], 2, "rate_per_minute must be a decimal >= 0, got '-0.01'"),
    (["44,UK,,abc,,,,"], 2, "rate_per_minute must be a decimal >= 0, got 'abc'"),
    (["44,UK,,1e-3,,,,"], 2, "rate_per_minute must be a decimal >= 0"),
    (["44,UK,,NaN,,,,"], 2, "rate_per_minute must be a decimal >= 0"),
    (["44,UK,,0.1.2,,,,"], 2, "rate_per_minute must be a decimal >= 0"),
    (["44,UK,,,,,,"], 2, "rate_per_minute is required"),
    (["44,UK,,0.04,-1,,,"], 2, "connection_fee must be a decimal >= 0, got '-1'"),
    (["44,UK,,0.04,x,,,"], 2, "connection_fee must be a decimal >= 0"),
    (["44,UK,,0.0000000000001,,,,"], 2, "more than 12 decimal places"),
    (["44,UK,,0.04,,0/60,,"], 2, "increment must be 'initial/subsequent'"),
    (["44,UK,,0.04,,60/0,,"], 2, "increment must be"),
    (["44,UK,,0.04,,60,,"], 2, "increment must be"),
    (["44,UK,,0.04,,1.5/1,,"], 2, "increment must be"),
    (["44,UK,,0.04,,-1/1,,"], 2, "increment must be"),
    (["44,UK,,0.04,,99999999999999999999/1,,"], 2, "increment must be"),
    (["44,UK,,0.04,,a/b,,"], 2, "increment must be"),
    (["44,UK,,0.04,,,2024-13-01,"], 2, "effective_from must be an ISO date or datetime"),
    (["44,UK,,0.04,,,,yesterday"], 2, "effective_to must be an ISO date or datetime"),
    (
        ["44,UK,,0.04,,,2024-05-02,2024-05-01"],
        2,
        "effective_to must be after effective_from",
    ),
    (["44,UK,,0.04,,,2024-05-01,2024-05-01"], 2, "effective_to must be after effective_from"),
    (
        ["44,UK,,0.04,,,2024-05-01T12:00:00Z,2024-05-01T14:00:00+02:00"],
        2,
        "effective_to must be after effective_from",
    ),
    (["44,,,0.04,,,,"], 2, "destination is required"),
    (["44,UK,mobile,0.04,,,,"], 2, "call_type must be empty or one of"),
    (["44,UK,,0.04,,,,,"], 2, "expected 8 fields as in the header, got 9"),
    (["44,UK,,0.04"], 2, "expected 8 fields as in the header, got 4"),
    (
        ["44,UK,,0.04,,,,", "33,FR,,0.05,,,,", "44,UK again,,0.05,,,,"],
        4,
        "overlapping effective windows (lines 2 and 4)",
    ),
    (
        [
            "44,UK,international,0.04,,,,2024-06-01",
            "44,UK,,0.05,,,,",
            "44,UK,international,0.05,,,2024-05-01,",
        ],
        4,
        "overlapping effective windows (lines 2 and 4)",
    ),
    (
        [
            "44,UK a,,0.04,,,2024-01-01,2024-03-01",
            "44,UK b,,0.04,,,2024-03-01,2024-04-01",
            "44,UK c,,0.04,,,2024-02-01,2024-02-02",
        ],
        4,
        "overlapping effective windows (lines 2 and 4)",
    ),
    (
        [
            "44,UK a,,0.04,,,2024-01-01,2024-03-01",
            "44,UK b,,0.04,,,2024-03-01,2024-05-01",
            "44,UK c,,0.04,,,2024-02-01,2024-04-01",  # overlaps both: the first is named
        ],
        4,
        "overlapping effective windows (lines 2 and 4)",
    ),
    (
        ["44,UK,,0.04,,,2024-05-02,2024-05-01", "4x,UK,,0.04,,,,"],
        2,
        "effective_to must be after effective_from",  # the first faulty line is named
    ),
    (["44,UK,,0.04,,,,", "", "4x,UK,,0.04,,,,"], 4, "prefix must be digits only"),  # blank line 3
    (['"44,UK,,0.04,,,,', "33,FR,,0.05,,,,"], 2, "malformed CSV"),
]


@pytest.mark.parametrize(("rows", "line", "rule"), INVALID_DECKS)
def test_invalid_deck_is_refused_naming_file_line_and_rule(
    tmp_path: Path, rows: list[str], line: int, rule: str
) -> None:
    rates = write_rates(
        tmp_path, {"carrier_001": deck("1,US,,0.01,,,,"), "carrier_007": deck(*rows)}
    )
    with pytest.raises(DeckError) as raised:
        load_decks(rates)
    message = str(raised.value)
    assert message.startswith(f"cost/carrier_007.csv line {line}: "), message
    assert rule in message


def test_valid_windows_that_touch_do_not_overlap(tmp_path: Path) -> None:
    rates = write_rates(
        tmp_path,
        {
            "c": deck(
                "44,UK a,,0.04,,,,2024-03-01",
                "44,UK b,,0.05,,,2024-03-01,2024-04-01",
                "44,UK c,,0.06,,,2024-04-01T00:00:00+00:00,",
                "44,UK intl,international,0.07,,,,",  # another call_type: no clash
            )
        },
    )
    assert load_decks(rates).cost.num_rows == 4


@pytest.mark.parametrize(
    ("header", "line", "rule"),
    [
        ("destination,rate_per_minute", 1, "missing required column 'prefix'"),
        ("prefix,rate_per_minute", 1, "missing required column 'destination'"),
        ("prefix,destination", 1, "missing required column 'rate_per_minute'"),
        ("prefix,destination,rate_per_minute,prefix", 1, "column 'prefix' appears twice"),
    ],
)
def test_deck_header_rules(tmp_path: Path, header: str, line: int, rule: str) -> None:
    rates = write_rates(tmp_path, {}, retail=deck(header=header))
    with pytest.raises(DeckError, match=re.escape(f"retail.csv line {line}: {rule}")):
        load_decks(rates)


def test_empty_deck_file_is_refused(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {"carrier_a": ""})
    with pytest.raises(DeckError, match=r"cost/carrier_a\.csv line 1: missing header line"):
        load_decks(rates)


def test_deck_not_utf8_is_refused(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {})
    (rates / "cost" / "c.csv").write_bytes(HEADER.encode() + b"\n44,K\xf6ln,,0.1,,,,\n")
    with pytest.raises(DeckError, match=r"cost/c\.csv line 2: the file is not UTF-8"):
        load_decks(rates)


def test_minimal_deck_columns_bom_spaces_and_case(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {})
    text = "\ufeffPrefix , Destination,RATE_PER_MINUTE\n 44 , UK ,  0.04 \n\n,World,0.1\n"
    (rates / "cost" / "c.csv").write_text(text, encoding="utf-8")
    decks = load_decks(rates)
    assert decks.cost.column("prefix").to_pylist() == ["44", ""]
    assert decks.cost.column("source_line").to_pylist() == [2, 4]
    row = rate_one(decks, carrier_id="c", duration_seconds=61)
    assert (row["destination"], row["billable_seconds"], row["cost"]) == ("UK", 120, D("0.0800"))


CONFIG_ERRORS = [
    ("money_decimals = 4\n", "config.toml: currency is required"),
    ('currency = "USD"\n', "config.toml: money_decimals is required"),
    ('currency = "USD"\nmoney_decimals = 13\n', "config.toml line 2: money_decimals must be"),
    ('currency = "USD"\nmoney_decimals = 2.5\n', "config.toml line 2: money_decimals must be"),
    ('currency = "USD"\nmoney_decimals = -1\n', "config.toml line 2: money_decimals must be"),
    ('currency = "USD"\nmoney_decimals = true\n', "config.toml line 2: money_decimals must be"),
    ('currency = "USD"\nmoney_decimals = 4\nmarkup = -1.5\n', "config.toml line 3: markup must"),
    ('currency = "USD"\nmoney_decimals = 4\nmarkup = "x"\n', "config.toml line 3: markup must"),
    ('currency = "USD"\nmoney_decimals = 4\nmarkup = nan\n', "config.toml line 3: markup must"),
    ('currency = ""\nmoney_decimals = 4\n', "config.toml line 1: currency must be"),
    ('currency = "USD"\nmoney_decimals = = 4\n', "config.toml line 2: not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), CONFIG_ERRORS)
def test_config_rules(tmp_path: Path, text: str, message: str) -> None:
    rates = write_rates(tmp_path, {}, config=text)
    with pytest.raises(DeckError, match=re.escape(message)):
        load_decks(rates)


def test_config_markup_is_decimal_and_optional(tmp_path: Path) -> None:
    with_markup = load_decks(write_rates(tmp_path / "a", {}, config=CONFIG))
    assert with_markup.config.markup == D("1.5")
    assert isinstance(with_markup.config.markup, Decimal)
    integer = 'currency = "USD"\nmoney_decimals = 2\nmarkup = 2\n'
    assert load_decks(write_rates(tmp_path / "b", {}, config=integer)).config.markup == D(2)
    none = 'currency = "USD"\nmoney_decimals = 2\n'
    assert load_decks(write_rates(tmp_path / "c", {}, config=none)).config.markup is None


def test_missing_config_is_refused(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {})
    (rates / "config.toml").unlink()
    with pytest.raises(DeckError, match=r"config\.toml"):
        load_decks(rates)


def test_carriers_rules(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {}, carriers="carrier_id,name\na,A\n,B\n")
    with pytest.raises(DeckError, match=r"carriers\.csv line 3: carrier_id is required"):
        load_decks(rates)
    (rates / "carriers.csv").write_text("carrier_id,name\na,A\na,B\n")
    with pytest.raises(DeckError, match=r"carriers\.csv line 3: carrier_id 'a' already listed"):
        load_decks(rates)
    (rates / "carriers.csv").write_text("")
    assert load_decks(rates).carriers == {}


# --------------------------------------------------------------------------------------------
# Versions, files, pass-through, registration
# --------------------------------------------------------------------------------------------


def test_version_follows_content(tmp_path: Path) -> None:
    rates = write_rates(tmp_path, {"a": deck("44,UK,,0.04,,,,")}, retail=deck(",All,,1,,,,"))
    first = load_decks(rates)
    assert set(first.files) == {"config.toml", "cost/a.csv", "retail.csv"}
    assert all(re.fullmatch("[0-9a-f]{64}", digest) for digest in first.files.values())
    assert load_decks(rates).version == first.version
    for path, text in (
        (rates / "cost" / "a.csv", deck("44,UK,,0.05,,,,")),
        (rates / "retail.csv", deck(",All,,2,,,,")),
        (rates / "config.toml", CONFIG.replace("1.5", "1.6")),
        (rates / "carriers.csv", "carrier_id,name\na,A\n"),
    ):
        before = load_decks(rates).version
        path.write_text(text, encoding="utf-8")
        assert load_decks(rates).version != before, path.name


def test_decks_of_unchanged_files_are_loaded_once_and_a_broken_edit_is_still_refused(
    tmp_path: Path,
) -> None:
    rates = write_rates(tmp_path, {"a": deck("44,UK,,0.04,,,,")})
    first = load_decks(rates)
    assert load_decks(rates) is first  # same bytes: parsed and checked once in this process
    (rates / "cost" / "a.csv").write_text(deck("44,UK,,not-a-rate,,,,"), encoding="utf-8")
    with pytest.raises(DeckError, match=r"a\.csv"):
        load_decks(rates)
    (rates / "cost" / "a.csv").write_text(deck("44,UK,,0.04,,,,"), encoding="utf-8")
    assert load_decks(rates).version == first.version


def test_rates_are_decimals_not_floats(tmp_path: Path) -> None:
    decks = load_decks(write_rates(tmp_path, {"a": deck("44,UK,,0.0115,0.1,,,")}))
    assert pa.types.is_decimal(decks.cost.schema.field("rate_per_minute").type)
    assert pa.types.is_decimal(decks.cost.schema.field("connection_fee").type)
    assert decks.cost.column("rate_per_minute").to_pylist() == [D("0.0115")]
    assert decks.cost.column("carrier_id").to_pylist() == ["a"]


def test_two_deck_versions_in_one_connection(tmp_path: Path) -> None:
    old = load_decks(write_rates(tmp_path / "old", {"carrier_a": deck("44,UK,,0.04,,,,")}))
    new = load_decks(write_rates(tmp_path / "new", {"carrier_a": deck("44,UK,,0.08,,,,")}))
    con = duckdb.connect()
    rate(old, [call()], con=con)
    old_relation = rate_calls(con, "calls", old).select("cost, deck_version")
    new_relation = rate_calls(con, "calls", new).select("cost, deck_version")
    assert old_relation.fetchall() == [(D("0.0400"), old.version)]
    assert new_relation.fetchall() == [(D("0.0800"), new.version)]
    assert rate_calls(con, "calls", old).select("cost").fetchall() == [(D("0.0400"),)]


def test_other_columns_pass_through_and_rating_columns_are_replaced(simple: Path) -> None:
    con = duckdb.connect()
    con.execute(
        """CREATE TABLE rated_before AS SELECT
            'x' AS call_id, '+447911' AS called_number, 'international' AS call_type,
            TIMESTAMPTZ '2024-05-01 10:00:00+00' AS start_time, 61 AS duration_seconds,
            NULL AS disposition, 'carrier_a' AS carrier_id, 42 AS extra,
            999.0 AS cost, 'stale' AS rating_status"""
    ).fetchall()
    relation = rate_calls(con, "rated_before", load_decks(simple))
    row = dict(zip(relation.columns, relation.fetchall()[0], strict=True))
    assert relation.columns.count("cost") == 1
    assert row["extra"] == 42
    assert (row["cost"], row["rating_status"]) == (D("0.0800"), "rated")


def test_missing_call_column_is_an_error(simple: Path) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE c AS SELECT '+44' AS called_number").fetchall()
    with pytest.raises(ValueError, match="lacks the column"):
        rate_calls(con, "c", load_decks(simple))


def test_rating_is_set_based_and_scales(simple: Path) -> None:
    con = duckdb.connect()
    con.execute(
        """CREATE TABLE many AS SELECT
            CAST(i AS VARCHAR) AS call_id, '+44' || CAST(7000000000 + i AS VARCHAR)
                AS called_number, 'international' AS call_type,
            TIMESTAMPTZ '2024-05-01 00:00:00+00' AS start_time, i % 200 AS duration_seconds,
            NULL AS disposition, 'carrier_a' AS carrier_id
        FROM range(20000) t(i)"""
    ).fetchall()
    relation = rate_calls(con, "many", load_decks(simple))
    ((count, total),) = con.execute(
        f"SELECT count(*), sum(cost) FROM ({relation.sql_query()})"
    ).fetchall()
    # 100 calls per duration 0..199; 0 s is unanswered; 1-60 s bill one minute, 61-120 two...
    minutes = sum(100 * ((d + 59) // 60) for d in range(1, 200))
    assert (count, total) == (20000, D("0.04") * minutes)


# --------------------------------------------------------------------------------------------
# Snapshots: the decks kept in the warehouse, read back by later processes
# --------------------------------------------------------------------------------------------


def snapshot_rates(root: Path) -> Path:
    """Decks with effective windows (dates, a datetime with an offset), empty and set call
    types, connection fees, rates of several scales, a deck without rows, carriers, a retail
    deck and the markup of CONFIG."""
    return write_rates(
        root,
        {
            "carrier_a": deck(
                "44,UK,,0.04,0.01,60/60,,2024-03-01",
                "44,UK new,,0.045,,1/1,2024-03-01T02:00:00+02:00,",
                "447,UK mobile,international,0.1234,,30/6,,",
            ),
            "carrier_b": deck("1,US,national,0.01,,,2024-01-01T00:00:00,2025-01-01"),
            "carrier_c": deck(),
        },
        retail=deck(",World,,1.5,,,,", "44,UK,international,0.2,0.05,1/1,2024-01-01,"),
        carriers="carrier_id,name\ncarrier_a,Alpha\ncarrier_b,Beta\n",
    )


def parse_nothing(rates_dir: Path) -> RateDecks:
    raise AssertionError(f"{rates_dir.name} parsed: the snapshot was not used")


def as_in_a_new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the decks this process loaded."""
    monkeypatch.setattr(rating, "_LOADED", {})


def test_decks_read_from_a_snapshot_equal_the_parsed_decks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates, snapshots = snapshot_rates(tmp_path), tmp_path / "rate_decks"
    parsed = load_decks(rates)
    assert parsed.retail is not None and parsed.config.markup == D("1.5")
    assert None in parsed.cost.column("call_type").to_pylist()
    assert parsed.cost.column("effective_from").null_count < parsed.cost.num_rows
    assert rating.write_snapshot(parsed, snapshots) == snapshots / parsed.version
    as_in_a_new_process(monkeypatch)
    monkeypatch.setattr(rating, "_load_decks", parse_nothing)

    read = load_decks(rates, snapshots)
    assert read is not parsed
    assert read.config == parsed.config and isinstance(read.config.markup, Decimal)
    assert (read.carriers, read.version) == (parsed.carriers, parsed.version)
    assert list(read.files.items()) == list(parsed.files.items())
    assert read.retail is not None
    for ours, theirs in ((read.cost, parsed.cost), (read.retail, parsed.retail)):
        assert ours.schema.equals(theirs.schema, check_metadata=False)
        assert ours.equals(theirs)
    calls = [
        call(start_time=datetime(2024, 2, 1, tzinfo=UTC), duration_seconds=61),
        call(called_number="+447911", duration_seconds=45),
        call(called_number="+15551234567", call_type="national", carrier_id="carrier_b"),
        call(carrier_id="carrier_c"),
    ]
    assert rate(read, calls) == rate(parsed, calls)


def test_a_new_process_reads_the_snapshot_instead_of_parsing_and_keeps_it(
    simple: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshots = tmp_path / "rate_decks"
    parsed = load_decks(simple)
    folder = rating.write_snapshot(parsed, snapshots)
    written = {path.name: path.stat().st_ino for path in folder.iterdir()}
    assert sorted(written) == ["cost.parquet", "decks.json"]  # no retail deck
    rating.write_snapshot(parsed, snapshots)  # a usable snapshot is left as it is
    assert {path.name: path.stat().st_ino for path in folder.iterdir()} == written
    as_in_a_new_process(monkeypatch)
    monkeypatch.setattr(rating, "_load_decks", parse_nothing)
    with pytest.raises(AssertionError, match="the snapshot was not used"):
        load_decks(simple)  # without the warehouse's snapshots the decks are parsed

    read = load_decks(simple, snapshots)
    assert read.retail is None and read.cost.equals(parsed.cost)
    assert read.version == parsed.version
    assert load_decks(simple, snapshots) is read  # then kept in this process, as parsed decks
    assert load_decks(simple) is read


def test_a_snapshot_without_a_format_is_read_and_one_of_another_format_is_not(
    simple: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshots = tmp_path / "rate_decks"
    meta_path = rating.write_snapshot(load_decks(simple), snapshots) / "decks.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["snapshot_format"]  # as written before decks.json recorded it
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    as_in_a_new_process(monkeypatch)
    monkeypatch.setattr(rating, "_load_decks", parse_nothing)
    assert load_decks(simple, snapshots).version == meta["version"]

    meta_path.write_text(
        json.dumps({**meta, "snapshot_format": rating.SNAPSHOT_FORMAT + 1}), encoding="utf-8"
    )
    as_in_a_new_process(monkeypatch)
    with pytest.raises(AssertionError, match="the snapshot was not used"):
        load_decks(simple, snapshots)


def test_a_changed_deck_is_parsed_not_read_from_the_old_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates, snapshots = snapshot_rates(tmp_path), tmp_path / "rate_decks"
    old = load_decks(rates)
    rating.write_snapshot(old, snapshots)
    (rates / "cost" / "carrier_b.csv").write_text(deck("1,US,national,0.02,,,,"), "utf-8")
    as_in_a_new_process(monkeypatch)
    new = load_decks(rates, snapshots)
    assert new.version != old.version and new.files != old.files
    assert new.cost.filter(pc.field("carrier_id") == "carrier_b")[
        "rate_per_minute"
    ].to_pylist() == [D("0.02")]

    # The old snapshot under the new version's name (as if the short versions collided) is not
    # read either: its files are not those read.
    shutil.copytree(snapshots / old.version, snapshots / new.version)
    meta_path = snapshots / new.version / "decks.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, "version": new.version}), encoding="utf-8")
    as_in_a_new_process(monkeypatch)
    again = load_decks(rates, snapshots)
    assert again.files == new.files and again.cost.equals(new.cost)


def test_a_snapshot_of_other_lossless_types_is_read_with_the_deck_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates, snapshots = snapshot_rates(tmp_path), tmp_path / "rate_decks"
    parsed = load_decks(rates)
    folder = rating.write_snapshot(parsed, snapshots)
    wider = pa.schema(
        [
            field.with_type(pa.large_string()) if field.type == pa.string() else field
            for field in parsed.cost.schema
        ]
    )
    pq.write_table(parsed.cost.cast(wider), folder / "cost.parquet")
    assert pq.read_table(folder / "cost.parquet").schema.field("prefix").type == pa.large_string()
    as_in_a_new_process(monkeypatch)
    monkeypatch.setattr(rating, "_load_decks", parse_nothing)
    read = load_decks(rates, snapshots)
    assert read.cost.schema.equals(parsed.cost.schema, check_metadata=False)
    assert read.cost.equals(parsed.cost)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_meta(folder: Path, **changes: Any) -> None:
    path = folder / "decks.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**meta, **changes}), encoding="utf-8")


def _other_files(folder: Path) -> None:
    files = json.loads((folder / "decks.json").read_text(encoding="utf-8"))["files"]
    _edit_meta(folder, files={**files, "cost/carrier_a.csv": "0" * 64})


def _float_rates(folder: Path) -> None:
    cost = pq.read_table(folder / "cost.parquet")
    index = cost.schema.get_field_index("rate_per_minute")
    rates = cost.column(index).cast(pa.float64())
    pq.write_table(cost.set_column(index, "rate_per_minute", rates), folder / "cost.parquet")


DAMAGES = {
    "cost.parquet truncated": lambda folder: _truncate(folder / "cost.parquet"),
    "cost.parquet with float rates": _float_rates,
    "retail.parquet missing": lambda folder: (folder / "retail.parquet").unlink(),
    "decks.json truncated": lambda folder: _truncate(folder / "decks.json"),
    "decks.json not an object": lambda folder: (folder / "decks.json").write_text("[]"),
    "decks.json with other files": _other_files,
    "decks.json with a bad markup": lambda folder: _edit_meta(folder, markup="1,5"),
    "decks.json without carriers": lambda folder: _edit_meta(folder, carriers=None),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_snapshot_is_ignored_then_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    rates, snapshots = snapshot_rates(tmp_path), tmp_path / "rate_decks"
    parsed = load_decks(rates)
    DAMAGES[damage](rating.write_snapshot(parsed, snapshots))
    parses: list[Path] = []
    parse = rating._load_decks

    def counted(rates_dir: Path) -> RateDecks:
        parses.append(rates_dir)
        return parse(rates_dir)

    monkeypatch.setattr(rating, "_load_decks", counted)
    as_in_a_new_process(monkeypatch)
    decks = load_decks(rates, snapshots)
    assert parses == [rates]
    assert decks.retail is not None and parsed.retail is not None
    assert decks.cost.equals(parsed.cost) and decks.retail.equals(parsed.retail)
    assert (decks.config, decks.carriers, decks.version) == (
        parsed.config,
        parsed.carriers,
        parsed.version,
    )

    rating.write_snapshot(decks, snapshots)  # repaired
    as_in_a_new_process(monkeypatch)
    assert load_decks(rates, snapshots).cost.equals(parsed.cost)
    assert parses == [rates]


# --------------------------------------------------------------------------------------------
# Property test: rate_calls against an obviously correct reading of the contract
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    prefix: str
    destination: str
    call_type: str  # '' = any
    rate: Decimal
    fee: Decimal
    increment: tuple[int, int]
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class Call:
    digits: str
    call_type: str | None
    start: datetime
    duration: int
    disposition: str | None
    carrier_id: str


@dataclass
class Scenario:
    decimals: int
    markup: Decimal | None
    cost: dict[str, list[Row]]
    retail: list[Row] | None
    calls: list[Call] = field(default_factory=list)


def half_up(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def choose(rows: list[Row], c: Call) -> Row | None:
    """Brute force over every row: the candidates of the contract, longest prefix first, then
    the row with a call_type."""
    candidates = [
        r
        for r in rows
        if c.digits.startswith(r.prefix)
        and (r.call_type == "" or r.call_type == c.call_type)
        and (r.start is None or r.start <= c.start)
        and (r.end is None or c.start < r.end)
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda r: (len(r.prefix), r.call_type != ""))
    assert [(len(r.prefix), r.call_type != "") for r in candidates].count(
        (len(best.prefix), best.call_type != "")
    ) == 1
    return best


def billable(duration: int, increment: tuple[int, int]) -> int:
    a, b = increment
    if duration <= a:
        return a
    steps = -(-(duration - a) // b)
    return a + steps * b


def amount(row: Row, seconds: int, decimals: int) -> Decimal:
    return half_up(row.fee + row.rate * seconds / Decimal(60), decimals)


def reference(s: Scenario, c: Call) -> dict[str, Any]:
    disposition = c.disposition or ("ANSWERED" if c.duration > 0 else "NO_ANSWER")
    nothing = dict.fromkeys(RATING_COLUMNS[:-1])
    if not (disposition == "ANSWERED" and c.duration > 0):
        zero = half_up(Decimal(0), s.decimals)
        return {
            **nothing,
            "billable_seconds": 0,
            "retail_billable_seconds": 0,
            "cost": zero,
            "revenue": zero,
            "margin": zero,
            "rating_status": "unanswered",
        }
    if c.carrier_id not in s.cost:
        return {**nothing, "rating_status": "unknown_carrier"}
    row = choose(s.cost[c.carrier_id], c)
    if row is None:
        return {**nothing, "rating_status": "no_rate"}
    seconds = billable(c.duration, row.increment)
    cost = amount(row, seconds, s.decimals)
    out = {
        **nothing,
        "billable_seconds": seconds,
        "rate_prefix": row.prefix,
        "destination": row.destination,
        "rate_per_minute": row.rate,
        "connection_fee": row.fee,
        "cost": cost,
    }
    retail = choose(s.retail, c) if s.retail is not None else None
    if retail is not None:
        retail_seconds = billable(c.duration, retail.increment)
        revenue = amount(retail, retail_seconds, s.decimals)
        out.update(
            retail_prefix=retail.prefix,
            retail_destination=retail.destination,
            retail_rate_per_minute=retail.rate,
            retail_billable_seconds=retail_seconds,
        )
    elif s.markup is not None:
        revenue = half_up(cost * s.markup, s.decimals)
        out["retail_billable_seconds"] = seconds
    else:
        return {**out, "rating_status": "no_retail_rate"}
    return {**out, "revenue": revenue, "margin": revenue - cost, "rating_status": "rated"}


# Instants around which windows open and close, and at which calls start.
BOUNDS = [datetime(2024, 5, day, 12, tzinfo=UTC) for day in (10, 15, 20)]
STARTS = [
    *BOUNDS,
    *(b - timedelta(microseconds=1) for b in BOUNDS),
    datetime(2024, 1, 1, tzinfo=UTC),
    datetime(2024, 12, 31, tzinfo=UTC),
]
DIGITS = "10"

decimal_text = st.builds(
    lambda units, places: Decimal(units).scaleb(-places),
    st.integers(0, 2_000_000),
    st.integers(0, 6),
) | st.sampled_from(
    [
        Decimal("123456789012345678901.5"),  # units past BIGINT: always the HUGEINT path
        Decimal("4000000000000.5"),  # fits, but only the shortest bills stay in BIGINT
    ]
)


@st.composite
def rows_strategy(draw: st.DrawFn, label: str, min_keys: int = 0) -> list[Row]:
    keys = draw(
        st.lists(
            st.tuples(
                st.text(DIGITS, max_size=3) | st.text(DIGITS, min_size=4, max_size=7),
                st.sampled_from(["", "local", "international"]),
            ),
            min_size=min_keys,
            max_size=10,
            unique=True,
        )
    )
    rows: list[Row] = []
    for prefix, call_type in keys:
        # Disjoint windows by construction: consecutive pieces of a cut timeline, some
        # left out.
        cuts = sorted(draw(st.sets(st.sampled_from(BOUNDS), max_size=2)))
        edges: list[datetime | None] = [None, *cuts, None]
        for start, end in itertools.pairwise(edges):
            if len(edges) > 2 and not draw(st.booleans()):
                continue
            rows.append(
                Row(
                    prefix=prefix,
                    destination=f"{label}-{len(rows)}",
                    call_type=call_type,
                    rate=draw(decimal_text),
                    fee=draw(st.sampled_from([Decimal(0), Decimal("0.05"), Decimal("0.0125")])),
                    increment=draw(st.sampled_from([(60, 60), (1, 1), (30, 6), (6, 30)])),
                    start=start,
                    end=end,
                )
            )
    return rows


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    scenario = Scenario(
        decimals=draw(st.integers(0, 6) | st.just(12)),
        markup=draw(st.none() | st.sampled_from([Decimal("1.5"), Decimal("1.25"), Decimal(0)])),
        cost={
            c: draw(rows_strategy(c, min_keys=3))
            for c in draw(st.sets(st.sampled_from(["a", "b"]), min_size=1))
        },
        retail=draw(st.none() | rows_strategy("retail")),
    )
    prefixes = sorted(
        {r.prefix for rows in scenario.cost.values() for r in rows}
        | {r.prefix for r in scenario.retail or []}
    )
    # Numbers that extend a deck prefix, so that long prefixes get matched too.
    digits = st.text(DIGITS, max_size=8)
    if prefixes:
        digits = digits | st.builds(
            str.__add__, st.sampled_from(prefixes), st.text(DIGITS, max_size=3)
        )
    scenario.calls = draw(
        st.lists(
            st.builds(
                Call,
                digits=digits,
                call_type=st.sampled_from([None, "local", "national", "international"]),
                start=st.sampled_from(STARTS),
                duration=st.sampled_from([0, 1, 5, 6, 7, 29, 30, 31, 36, 37, 59, 60, 61, 3601]),
                disposition=st.sampled_from([None, "ANSWERED", "ANSWERED", "BUSY"]),
                carrier_id=st.sampled_from(["a", "a", "b", "z"]),
            ),
            min_size=1,
            max_size=25,
        )
    )
    return scenario


def instant_text(value: datetime | None, style: int) -> str:
    if value is None:
        return ""
    if style == 0:
        return value.isoformat()  # +00:00
    if style == 1:
        return value.replace(tzinfo=None).isoformat(sep=" ")  # naive = UTC
    return value.astimezone(timezone(timedelta(hours=-5))).isoformat()  # same instant


def deck_text(rows: list[Row]) -> str:
    lines = [HEADER]
    for i, r in enumerate(rows):
        fee = "" if r.fee == 0 and i % 2 else str(r.fee)
        increment = (
            "" if r.increment == (60, 60) and i % 2 else f"{r.increment[0]}/{r.increment[1]}"
        )
        lines.append(
            f"{r.prefix},{r.destination},{r.call_type},{r.rate},{fee},{increment},"
            f"{instant_text(r.start, i % 3)},{instant_text(r.end, (i + 1) % 3)}"
        )
    return "\n".join(lines) + "\n"


def check_against_the_reference(scenario: Scenario) -> None:
    root = Path(tempfile.mkdtemp(prefix="rating-property-"))
    try:
        config = f'currency = "USD"\nmoney_decimals = {scenario.decimals}\n'
        if scenario.markup is not None:
            config += f"markup = {scenario.markup}\n"
        rates = write_rates(
            root,
            {c: deck_text(rows) for c, rows in scenario.cost.items()},
            retail=None if scenario.retail is None else deck_text(scenario.retail),
            config=config,
        )
        decks = load_decks(rates)
        calls = [
            call(
                called_number="+" + c.digits,
                call_type=c.call_type,
                start_time=c.start,
                duration_seconds=c.duration,
                disposition=c.disposition,
                carrier_id=c.carrier_id,
            )
            for c in scenario.calls
        ]
        rows = rate(decks, calls)
    finally:
        shutil.rmtree(root)
    with localcontext() as context:
        context.prec = 60
        for c, row in zip(scenario.calls, rows, strict=True):
            expected = reference(scenario, c)
            actual = {name: row[name] for name in RATING_COLUMNS if name in expected}
            assert actual == expected, c
            for name in ("cost", "revenue", "margin"):
                if row[name] is not None:
                    assert row[name].as_tuple().exponent == -scenario.decimals


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_rate_calls_matches_the_reference(scenario: Scenario) -> None:
    check_against_the_reference(scenario)


# The lookup tables take other shapes on other decks: cost and retail looked up apart (many
# carriers x a large retail deck), and no or a narrow expansion of the short prefixes (many
# carriers), so that every prefix length is a join of its own.
LAYOUTS = {
    "cost and retail apart": {"COMBINE_LIMIT": 0},
    "no short expansion": {"SHORT_DIGITS": 0},
    "short expansion of 2 digits": {"SHORT_DIGITS": 2},
}


@contextmanager
def limits(values: dict[str, int]) -> Iterator[None]:
    saved = {name: getattr(rating, name) for name in values}
    for name, value in values.items():
        setattr(rating, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(rating, name, value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from(sorted(LAYOUTS)))
def test_rate_calls_matches_the_reference_in_every_layout(scenario: Scenario, layout: str) -> None:
    with limits(LAYOUTS[layout]):
        check_against_the_reference(scenario)


def test_prefixes_longer_than_an_integer_key(tmp_path: Path) -> None:
    # 18 digits times five carriers do not fit one BIGINT key, 19 digits are compared as text.
    long18, long19 = "123456789012345678", "1234567890123456789"
    cost = deck(
        "1,One,,0.1,,1/1,,", f"{long18},Eighteen,,0.2,,1/1,,", f"{long19},Nineteen,,0.3,,1/1,,"
    )
    rates = write_rates(tmp_path, {f"c{i}": cost for i in range(5)})
    numbers = {
        f"+{long19}0": "Nineteen",
        f"+{long19}": "Nineteen",
        f"+{long18}0": "Eighteen",
        f"+{long18}": "Eighteen",
        f"+{long18[:-1]}": "One",
        f"+{long19}x": None,  # not '+' and digits: only an empty prefix would match
        "+2": None,
    }
    rows = rate(rates, [call(called_number=n, carrier_id="c3") for n in numbers])
    assert [row["destination"] for row in rows] == list(numbers.values())


# -- the lookup tables, kept for the next process ------------------------------------------

LOOKUP_CALLS = [
    call(start_time=datetime(2024, 2, 1, tzinfo=UTC), duration_seconds=61),
    call(called_number="+447911", duration_seconds=45),
    call(called_number="+15551234567", call_type="national", carrier_id="carrier_b"),
    call(carrier_id="carrier_c"),
    call(carrier_id="nobody"),
]


def rate_with_lookup(decks: RateDecks, lookup: Path) -> list[tuple[Any, ...]]:
    """The calls rated in a new connection (as in a new process) with ``lookup``."""
    with duckdb.connect() as con:
        table = pa.Table.from_pylist(
            [{**c, "call_id": f"{i:03d}"} for i, c in enumerate(LOOKUP_CALLS)], schema=CALL_SCHEMA
        )
        con.register("calls_arrow", table)
        con.execute("CREATE TEMP TABLE calls AS SELECT * FROM calls_arrow")
        return rate_calls(con, "calls", decks, lookup).order("call_id").fetchall()


def test_lookup_tables_kept_by_one_process_price_the_same_in_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decks = load_decks(snapshot_rates(tmp_path))
    lookup = tmp_path / "rate_decks" / decks.version
    built = rate_with_lookup(decks, lookup)
    (kept,) = lookup.glob("*.duckdb")
    # The same prices as a connection without any kept file (call ids aside).
    assert [r[1:] for r in built] == [tuple(r.values())[1:] for r in rate(decks, LOOKUP_CALLS)]

    def build_nothing(*args: object) -> None:
        raise AssertionError("the lookup tables were built again")

    monkeypatch.setattr(rating, "_create_group", build_nothing)
    assert rate_with_lookup(decks, lookup) == built  # read from the kept file
    assert kept.stat().st_size > 0


def test_a_damaged_lookup_file_is_built_and_written_again(tmp_path: Path) -> None:
    decks = load_decks(snapshot_rates(tmp_path))
    lookup = tmp_path / "rate_decks" / decks.version
    built = rate_with_lookup(decks, lookup)
    (kept,) = lookup.glob("*.duckdb")
    kept.write_bytes(kept.read_bytes()[:100])
    assert rate_with_lookup(decks, lookup) == built
    with duckdb.connect(str(kept), read_only=True) as con:  # written again, whole
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] > 3
