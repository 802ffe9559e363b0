"""The contract's refusal reasons, derived fields and flags, row by row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from cdr_assets.lib.numbers import compute_number_facts
from cdr_assets.lib.readers import CANONICAL_FIELDS
from cdr_assets.lib.schemas import RULE_COLUMNS
from cdr_assets.lib.validation import PARSE_SQL, check_rows, find_row_failures, validate_batch

GOOD: dict[str, str | None] = {
    "call_id": "c1",
    "caller_number": "+12025550123",
    "called_number": "+442079460958",
    "start_time": "2026-11-20T10:00:00Z",
    "end_time": "2026-11-20T10:05:30Z",
    "duration_seconds": "330",
    "carrier_id": "carrier_001",
    "call_type": "international",
    "country_code": "GB",
    "disposition": "ANSWERED",
}


def raw_and_facts(
    rows: list[dict[str, Any]], default_region: str | None = None
) -> tuple[pa.Table, pa.Table]:
    """The raw rows of canonical-field dicts, as the readers give them, and their numbers'
    facts."""
    records = []
    for i, row in enumerate(rows, start=1):
        record: dict[str, Any] = {"source_file": "f.csv", "source_row": i}
        record.update({field: row.get(field) for field in CANONICAL_FIELDS})
        record["raw_record"] = ",".join(str(row.get(f) or "") for f in CANONICAL_FIELDS)
        record["malformed"] = bool(row.get("malformed", False))
        records.append(record)
    schema = pa.schema(
        [("source_file", pa.string()), ("source_row", pa.int64())]
        + [(f, pa.string()) for f in CANONICAL_FIELDS]
        + [("raw_record", pa.string()), ("malformed", pa.bool_())]
    )
    raw = pa.Table.from_pylist(records, schema=schema)
    numbers = {
        r[f] for r in records for f in ("caller_number", "called_number") if r[f] is not None
    }
    facts = compute_number_facts(sorted(numbers), default_region)
    return raw, facts


def run_validation(
    rows: list[dict[str, Any]],
    *,
    default_region: str | None = None,
    source_timezone: str = "UTC",
    max_duration_seconds: int = 86_400,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(accepted rows, rejected rows) for rows given as canonical-field dicts."""
    raw, facts = raw_and_facts(rows, default_region)
    with duckdb.connect() as con:
        result = validate_batch(
            con,
            raw,
            facts,
            batch_id="b1",
            source_timezone=source_timezone,
            max_duration_seconds=max_duration_seconds,
        )
        accepted = con.sql("SELECT * FROM validated_rows").to_arrow_table().to_pylist()
        rejected = con.sql("SELECT * FROM rejected_rows").to_arrow_table().to_pylist()
    assert result.rows_read == result.rows_accepted + result.rows_rejected == len(rows)
    return accepted, rejected


def reasons_for(**changes: str | None) -> list[str]:
    _, rejected = run_validation([{**GOOD, **changes}])
    return rejected[0]["reasons"] if rejected else []


def accepted_row(**changes: str | None) -> dict[str, Any]:
    accepted, rejected = run_validation([{**GOOD, **changes}])
    assert not rejected, rejected
    return accepted[0]


def test_a_good_row_is_accepted_typed_and_unflagged() -> None:
    row = accepted_row()
    assert row["called_number"] == "+442079460958"
    assert row["start_time"] == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert row["duration_seconds"] == 330
    assert row["flags"] == []
    assert str(row["call_date"]) == "2026-11-20"


# One row per refusal reason and combinations of them: (changes to GOOD, reasons).
REFUSALS: list[tuple[dict[str, str | None], list[str]]] = [
    ({"call_id": None}, ["missing_field:call_id"]),
    ({"called_number": None}, ["missing_field:called_number"]),
    ({"start_time": None}, ["missing_field:start_time"]),
    ({"carrier_id": None}, ["missing_field:carrier_id"]),
    ({"end_time": None, "duration_seconds": None}, ["missing_field:duration_seconds"]),
    ({"called_number": "abc"}, ["invalid_number:called_number"]),
    ({"called_number": "+999123"}, ["invalid_number:called_number"]),
    ({"called_number": "+4412"}, ["invalid_number:called_number"]),
    ({"called_number": "02079460958"}, ["invalid_number:called_number"]),  # no region
    ({"start_time": "yesterday"}, ["invalid_timestamp:start_time"]),
    ({"start_time": "2026-11-20 1:2:3"}, ["invalid_timestamp:start_time"]),
    ({"start_time": "2023-02-29T00:00:00Z"}, ["invalid_timestamp:start_time"]),
    ({"end_time": "20/11/2026 10:05"}, ["invalid_timestamp:end_time"]),
    ({"end_time": "2026-11-20T09:59:59Z"}, ["end_before_start"]),
    # end before start with no duration given: no invalid_duration for the derived one
    ({"end_time": "2026-11-20T09:00:00Z", "duration_seconds": None}, ["end_before_start"]),
    ({"duration_seconds": "12.5"}, ["invalid_duration"]),
    ({"duration_seconds": "-5"}, ["invalid_duration"]),
    ({"duration_seconds": "3e2"}, ["invalid_duration"]),
    ({"duration_seconds": "86401", "end_time": None}, ["invalid_duration"]),
    ({"duration_seconds": "99999999999999999999999"}, ["invalid_duration"]),
    (
        {"duration_seconds": None, "end_time": "2026-11-21T10:00:01Z"},
        ["invalid_duration"],
    ),
    ({"call_type": "mobile"}, ["invalid_call_type"]),
    ({"country_code": "XX"}, ["invalid_country_code"]),
    ({"country_code": "XK"}, ["invalid_country_code"]),  # user-assigned, not official
    ({"country_code": "GBR"}, ["invalid_country_code"]),
    ({"disposition": "HUNG_UP"}, ["invalid_disposition"]),
    (
        {"call_id": None, "carrier_id": None, "call_type": "x", "disposition": "y"},
        [
            "missing_field:call_id",
            "missing_field:carrier_id",
            "invalid_call_type",
            "invalid_disposition",
        ],
    ),
]


@pytest.mark.parametrize(("changes", "reasons"), REFUSALS)
def test_each_refusal_reason(changes: dict[str, str | None], reasons: list[str]) -> None:
    assert reasons_for(**changes) == reasons


def test_a_malformed_row_gets_only_malformed_record() -> None:
    accepted, rejected = run_validation([{"malformed": True}])
    assert accepted == []
    assert rejected[0]["reasons"] == ["malformed_record"]
    assert rejected[0]["detail"] == "f.csv row 1: malformed_record"


def test_refused_rows_keep_file_row_and_raw_text() -> None:
    accepted, rejected = run_validation([GOOD, {**GOOD, "call_id": None}, GOOD])
    assert [r["source_row"] for r in accepted] == [1, 3]
    assert rejected[0]["source_file"] == "f.csv"
    assert rejected[0]["source_row"] == 2
    assert rejected[0]["raw_record"].startswith(",+12025550123,")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"end_time": None}, {"end_time": datetime(2026, 11, 20, 10, 5, 30, tzinfo=UTC)}),
        ({"duration_seconds": "0000000000000000000330"}, {"duration_seconds": 330}),
        (
            {"duration_seconds": None, "end_time": "2026-11-20T10:05:30.900Z"},
            {"duration_seconds": 330},  # the fraction is dropped
        ),
        ({"disposition": None}, {"disposition": "ANSWERED"}),
        (
            {"disposition": None, "duration_seconds": "0", "end_time": None},
            {"disposition": "NO_ANSWER"},
        ),
        ({"disposition": "busy"}, {"disposition": "BUSY"}),
        ({"call_type": "NATIONAL", "called_number": "+12025550199"}, {"call_type": "national"}),
        ({"country_code": "gb"}, {"country_code": "GB"}),
        ({"country_code": None}, {"country_code": "GB"}),
        ({"call_type": None}, {"call_type": "international"}),
        ({"call_type": None, "called_number": "+12025550199"}, {"call_type": "local"}),
        ({"call_type": None, "called_number": "+14155550100"}, {"call_type": "national"}),
        ({"call_type": None, "caller_number": None}, {"call_type": None}),
        ({"called_number": "00442079460958"}, {"called_number": "+442079460958"}),
        ({"called_number": "+44 20 7946-0958"}, {"called_number": "+442079460958"}),
        (
            {"start_time": "2026-11-20T12:00:00+02:00", "end_time": None},
            {"start_time": datetime(2026, 11, 20, 10, 0, tzinfo=UTC)},
        ),
        (
            {"start_time": "2026-11-20T00:30:00+02:00", "end_time": None},
            {"call_date": "2026-11-19"},  # the UTC date, not the local one
        ),
    ],
)
def test_derived_and_normalised_fields(
    changes: dict[str, str | None], expected: dict[str, Any]
) -> None:
    row = accepted_row(**changes)
    for key, value in expected.items():
        actual = str(row[key]) if key == "call_date" else row[key]
        assert actual == value, key


def test_naive_timestamps_are_read_in_the_source_time_zone() -> None:
    accepted, _ = run_validation(
        [{**GOOD, "start_time": "2026-07-01T12:00:00", "end_time": None}],
        source_timezone="Europe/Berlin",
    )
    assert accepted[0]["start_time"] == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)


def test_national_numbers_need_the_default_region() -> None:
    row = {**GOOD, "called_number": "020 7946 0958"}
    accepted, rejected = run_validation([row], default_region="GB")
    assert accepted[0]["called_number"] == "+442079460958"
    _, rejected = run_validation([row])
    assert rejected[0]["reasons"] == ["invalid_number:called_number"]


def test_duration_limit_is_configurable() -> None:
    _, rejected = run_validation([GOOD], max_duration_seconds=300)
    assert rejected[0]["reasons"] == ["invalid_duration"]


@pytest.mark.parametrize(
    ("changes", "flags"),
    [
        ({"duration_seconds": "336"}, ["duration_mismatch"]),  # 6 s apart
        ({"duration_seconds": "335"}, []),  # 5 s apart is not a mismatch
        ({"end_time": "2026-11-20T10:05:35.5Z", "duration_seconds": "330"}, ["duration_mismatch"]),
        ({"country_code": "FR"}, ["country_mismatch"]),
        ({"call_type": "national"}, ["call_type_mismatch"]),
        (
            {"call_type": "international", "called_number": "+12025550199", "country_code": None},
            ["call_type_mismatch"],
        ),
        ({"call_type": "local", "caller_number": None}, []),  # caller country unknown
        ({"caller_number": "garbage"}, ["caller_unparsed"]),
        ({"caller_number": None}, []),
        ({"called_number": "+441000000000"}, ["called_number_unallocated"]),
        (
            {"caller_number": "+442079460958", "call_type": "local"},
            ["self_call"],
        ),
    ],
)
def test_flags(changes: dict[str, str | None], flags: list[str]) -> None:
    assert accepted_row(**changes)["flags"] == flags


def test_unparsed_caller_is_kept_as_given() -> None:
    assert accepted_row(caller_number="anonymous")["caller_number"] == "anonymous"


def test_reasons_follow_each_rows_row_idx_not_its_position() -> None:
    """Validation hands pandera the parsed rows in no particular order, with ``row_idx``."""
    rows = [GOOD, {**GOOD, "call_id": None}, {**GOOD, "disposition": "x"}, GOOD]
    with duckdb.connect() as con:
        con.register("cases", pa.Table.from_pylist(rows))
        parsed = con.sql(
            """SELECT row_idx, false AS malformed, call_id, carrier_id,
                called_number AS called_raw, true AS called_possible,
                start_time AS start_raw, CAST(start_time AS TIMESTAMPTZ) AS start_ts,
                end_time AS end_raw, CAST(end_time AS TIMESTAMPTZ) AS end_ts,
                duration_seconds AS duration_raw, CAST(duration_seconds AS BIGINT)
                    AS duration_given, NULL::BIGINT AS derived_duration,
                call_type AS call_type_raw, call_type, country_code AS country_code_raw,
                country_code, disposition AS disposition_raw, disposition
            FROM (SELECT *, row_number() OVER () - 1 AS row_idx FROM cases)"""
        ).pl()
    in_order = find_row_failures(parsed.drop("row_idx"), 86_400)
    reversed_rows = find_row_failures(parsed.reverse(), 86_400)
    assert in_order.rows() == [(1, ["missing_field:call_id"]), (2, ["invalid_disposition"])]
    assert sorted(reversed_rows.rows()) == in_order.rows()


@pytest.mark.parametrize("materialize", [True, False])
def test_the_rules_give_the_same_reasons_from_presence_as_from_the_text(
    materialize: bool,
) -> None:
    """check_rows hands pandera the columns the rules read only for presence as booleans
    and, streaming, a parse without the caller's facts: every refusal case gets the reasons
    the parsed text itself gets."""
    rows = [GOOD, *({**GOOD, **changes} for changes, _ in REFUSALS), {"malformed": True}]
    raw, facts = raw_and_facts(rows)
    raw = raw.append_column("row_idx", pa.array(range(len(rows)), pa.int64()))
    with duckdb.connect() as con:
        con.register("raw_batch", raw)
        con.register("number_facts", facts)
        text = con.sql(f"SELECT row_idx, {', '.join(RULE_COLUMNS)} FROM ({PARSE_SQL})").pl()
        from_text = find_row_failures(text, 86_400)
        failures = check_rows(
            con, source_timezone="UTC", max_duration_seconds=86_400, materialize=materialize
        )
    assert sorted(failures.rows()) == sorted(from_text.rows())
    assert failures.height == len(rows) - 1  # every row but GOOD is refused
    expected = [reasons for _, reasons in REFUSALS] + [["malformed_record"]]
    assert [r for _, r in sorted(failures.rows())] == expected
