"""Tests for cdr_assets.lib.generate: synthetic CDR tables, landing files and the sample."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import phonenumbers
import pyarrow as pa
import pyarrow.parquet as pq
import pycountry
import pytest

from cdr_assets.lib.generate import (
    CANONICAL_FIELDS,
    GeneratorOptions,
    generate_cdrs,
    generate_sample,
    write_landing_files,
)
from cdr_assets_tests.contract import REASON_CODES

TODAY = dt.date(2024, 5, 4)
START = dt.date(2024, 5, 1)
CALL_TYPES = {"local", "national", "international"}
DISPOSITIONS = {"ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION"}
# Every reason code of the contract's "Refused rows" table, with the field it names.
ALL_REASONS = set(REASON_CODES)

Row = dict[str, Any]


# --- simple, obvious predicates over one row, in the contract's words -----------------


def _number(text: str) -> phonenumbers.PhoneNumber | None:
    normalised = "+" + text[2:] if text.startswith("00") else text
    try:
        return phonenumbers.parse(normalised, None)
    except phonenumbers.NumberParseException:
        return None


def _instant(text: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def reasons(row: Row | list[str]) -> set[str]:
    """The reasons the contract gives a row; a list is a CSV record of the wrong width."""
    if isinstance(row, list):
        return {"malformed_record"}
    found = set()
    for name in ("call_id", "called_number", "start_time", "carrier_id"):
        if row.get(name) is None:
            found.add(f"missing_field:{name}")
    end, duration = row.get("end_time"), row.get("duration_seconds")
    if end is None and duration is None:
        found.add("missing_field:duration_seconds")
    called = row.get("called_number")
    if called is not None:
        parsed = _number(called)
        if parsed is None or not phonenumbers.is_possible_number(parsed):
            found.add("invalid_number:called_number")
    start = row.get("start_time")
    start_at = _instant(start) if start is not None else None
    end_at = _instant(end) if end is not None else None
    if start is not None and start_at is None:
        found.add("invalid_timestamp:start_time")
    if end is not None and end_at is None:
        found.add("invalid_timestamp:end_time")
    if start_at is not None and end_at is not None and end_at < start_at:
        found.add("end_before_start")
    if duration is not None and (not duration.isdigit() or int(duration) > 86_400):
        found.add("invalid_duration")
    call_type = row.get("call_type")
    if call_type is not None and call_type.lower() not in CALL_TYPES:
        found.add("invalid_call_type")
    country = row.get("country_code")
    if country is not None and pycountry.countries.get(alpha_2=country.upper()) is None:
        found.add("invalid_country_code")
    disposition = row.get("disposition")
    if disposition is not None and disposition.upper() not in DISPOSITIONS:
        found.add("invalid_disposition")
    return found


def _rows(table: pa.Table) -> list[Row]:
    return table.to_pylist()


def _valid_rows(rows: list[Row]) -> list[Row]:
    return [row for row in rows if not reasons(row)]


def _repeats(valid: list[Row]) -> list[int]:
    """Positions of the valid rows whose call_id an earlier valid row already had."""
    seen: set[str] = set()
    found = []
    for position, row in enumerate(valid):
        if row["call_id"] in seen:
            found.append(position)
        seen.add(row["call_id"])
    return found


def read_file(path: Path) -> list[Row | list[str]]:
    """Rows of a landing file as dicts of non-empty strings; a broken CSV line as a list."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    if ".parquet" in path.name:
        return pq.read_table(pa.BufferReader(data)).to_pylist()
    text = data.decode("utf-8")
    if ".csv" not in path.name:
        # JSON leaves out the keys of absent values.
        objects = (
            json.loads(text)
            if re.search(r"\.json(\.gz)?$", path.name)
            else [json.loads(line) for line in text.splitlines()]
        )
        return [{name: obj.get(name) for name in CANONICAL_FIELDS} for obj in objects]
    records = list(csv.reader(io.StringIO(text)))
    header, body = records[0], records[1:]
    return [
        {k: v or None for k, v in zip(header, record, strict=True)}
        if len(record) == len(header)
        else record
        for record in body
    ]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return generate_cdrs(GeneratorOptions(rows=20_000, seed=11, start_date=START))


@pytest.fixture(scope="module")
def valid(table: pa.Table) -> list[Row]:
    """The rows of `table` that the contract accepts (duplicates included)."""
    return _valid_rows(_rows(table))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_sample(tmp_path_factory.mktemp("landing"), seed=7, today=TODAY)


# --- generate_cdrs ----------------------------------------------------------------------


def test_same_seed_gives_the_same_table_and_another_seed_another() -> None:
    options = GeneratorOptions(rows=3_000, seed=5, start_date=START)
    first = generate_cdrs(options)
    assert generate_cdrs(options).equals(first)
    other = generate_cdrs(GeneratorOptions(rows=3_000, seed=6, start_date=START))
    assert not other.equals(first)
    assert other.num_rows == 3_000


def test_rows_and_columns_follow_the_contract(table: pa.Table) -> None:
    assert table.num_rows == 20_000
    assert table.column_names == list(CANONICAL_FIELDS)
    assert table.column_names[:3] == ["call_id", "caller_number", "called_number"]
    assert {field.type for field in table.schema} == {pa.string()}
    ids = [v for v in table["call_id"].to_pylist() if v is not None]
    assert all(re.fullmatch(r"c-202405(01|02|03)-\d{5}", v) for v in ids)
    assert ids[0] == "c-20240501-00001"


def test_zero_rows_gives_an_empty_table_with_the_columns() -> None:
    empty = generate_cdrs(GeneratorOptions(rows=0, start_date=START))
    assert empty.num_rows == 0
    assert empty.column_names == list(CANONICAL_FIELDS)


def test_default_start_date_is_three_days_before_today() -> None:
    today = dt.datetime.now(dt.UTC).date()
    assert GeneratorOptions().start_date == today - dt.timedelta(days=3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rows": -1},
        {"days": 0},
        {"unanswered_share": 1.5},
        {"bad_row_share": 0.6, "duplicate_share": 0.5},
    ],
)
def test_impossible_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GeneratorOptions(**kwargs)


def test_bad_rows_are_exactly_the_requested_share_one_reason_each(table: pa.Table) -> None:
    found = [reasons(row) for row in _rows(table)]
    bad = [r for r in found if r]
    assert len(bad) == 400  # 2 % of 20,000
    assert all(len(r) == 1 for r in bad)
    counts = Counter(reason for r in bad for reason in r)
    # Every row-level reason occurs; malformed records are the CSV writer's business.
    assert set(counts) == ALL_REASONS - {"malformed_record"}
    assert min(counts.values()) >= 26  # 400 rows over 15 kinds of defect


def test_duplicates_are_exactly_the_requested_share_some_identical(valid: list[Row]) -> None:
    repeats = _repeats(valid)
    assert len(repeats) == 200  # 1 % of 20,000
    first: dict[str, Row] = {}
    for row in valid:
        first.setdefault(row["call_id"], row)
    identical = sum(valid[p] == first[valid[p]["call_id"]] for p in repeats)
    assert 40 <= identical <= 100  # about a third are identical, the rest changed
    changed = [valid[p] for p in repeats if valid[p] != first[valid[p]["call_id"]]]
    changed_fields = Counter(
        name
        for row in changed
        for name in CANONICAL_FIELDS
        if row[name] != first[row["call_id"]][name]
    )
    # Re-sent under another carrier, or with a corrected duration (and end time).
    assert set(changed_fields) <= {"carrier_id", "duration_seconds", "end_time", "disposition"}
    assert changed_fields["carrier_id"] > 30
    assert changed_fields["duration_seconds"] + changed_fields["end_time"] > 30


def _unanswered_share(rows: list[Row]) -> float:
    """Share of unanswered calls among valid rows that give a disposition."""
    given = [row["disposition"].upper() for row in rows if row["disposition"]]
    return sum(1 for d in given if d != "ANSWERED") / len(given)


def test_unanswered_share_is_near_the_option(valid: list[Row]) -> None:
    assert 0.13 <= _unanswered_share(valid) <= 0.17
    unanswered = [
        row for row in valid if row["disposition"] and row["disposition"].upper() != "ANSWERED"
    ]
    durations = Counter(row["duration_seconds"] for row in unanswered)
    assert set(durations) <= {"0", None}
    assert durations["0"] > 0.7 * len(unanswered)
    answered_durations = [
        int(row["duration_seconds"])
        for row in valid
        if (row["disposition"] or "").upper() == "ANSWERED" and row["duration_seconds"]
    ]
    mean = sum(answered_durations) / len(answered_durations)
    assert 165 <= mean <= 200  # exponential with a mean of about 180 s


def test_shares_follow_other_options() -> None:
    options = GeneratorOptions(
        rows=10_000,
        seed=3,
        start_date=START,
        unanswered_share=0.5,
        bad_row_share=0.1,
        duplicate_share=0.05,
    )
    rows = _rows(generate_cdrs(options))
    found = [reasons(row) for row in rows]
    assert sum(1 for r in found if r) == 1_000
    valid = [row for row, r in zip(rows, found, strict=True) if not r]
    assert len(_repeats(valid)) == 500
    assert 0.47 <= _unanswered_share(valid) <= 0.53


def test_timestamps_stay_in_the_days_and_follow_the_business_day(valid: list[Row]) -> None:
    starts = [_instant(row["start_time"]) for row in valid]
    assert all(s is not None for s in starts)
    utc = [s.astimezone(dt.UTC) for s in starts if s is not None]
    assert {s.date() for s in utc} == {
        START,
        START + dt.timedelta(days=1),
        START + dt.timedelta(days=2),
    }
    hours = Counter(s.hour for s in utc)
    assert hours[10] > 5 * hours[3]
    suffixes = Counter(
        "Z"
        if r["start_time"].endswith("Z")
        else "+00:00"
        if r["start_time"].endswith("+00:00")
        else "other"
        for r in valid
    )
    assert suffixes["Z"] + suffixes["+00:00"] > 0.8 * len(valid)
    assert suffixes["other"] > 0


def test_end_time_and_duration_agree_where_both_are_given(valid: list[Row]) -> None:
    both = [row for row in valid if row["end_time"] and row["duration_seconds"]]
    end_only = [row for row in valid if row["end_time"] and not row["duration_seconds"]]
    duration_only = [row for row in valid if not row["end_time"] and row["duration_seconds"]]
    assert len(both) > 0.7 * len(valid)
    assert len(end_only) > 0.05 * len(valid)
    assert len(duration_only) > 0.05 * len(valid)
    for row in both[:2_000]:
        start, end = _instant(row["start_time"]), _instant(row["end_time"])
        assert start is not None and end is not None
        assert (end - start).total_seconds() == int(row["duration_seconds"])


def test_optional_fields_are_sometimes_given_and_sometimes_left_to_derive(
    valid: list[Row],
) -> None:
    for name in ("call_type", "country_code", "disposition"):
        given = sum(1 for row in valid if row[name] is not None)
        assert 0.3 * len(valid) < given < len(valid)
    dispositions = Counter(row["disposition"] for row in valid if row["disposition"])
    assert dispositions["ANSWERED"] > dispositions["answered"] > 0
    carriers = Counter(row["carrier_id"] for row in valid)
    assert set(carriers) == {"carrier_001", "carrier_002", "carrier_003", "carrier_004"}
    assert 0.02 < carriers["carrier_004"] / len(valid) < 0.08


def test_called_numbers_parse_and_cover_many_regions(valid: list[Row]) -> None:
    distinct = sorted({row["called_number"] for row in valid})
    assert len(distinct) > 300
    regions: Counter[str | None] = Counter()
    for number in distinct[:: max(1, len(distinct) // 1_500)]:
        parsed = _number(number)
        assert parsed is not None and phonenumbers.is_valid_number(parsed), number
        regions[phonenumbers.region_code_for_number(parsed)] += 1
    assert len(regions) >= 30
    assert {"US", "GB", "DE", "FR", "JP", "IN", "BR", "ZA", "NG", "SG"} <= set(regions)
    zero_zero = sum(1 for row in valid if row["called_number"].startswith("00"))
    assert 0.05 < zero_zero / len(valid) < 0.2


def test_calls_are_mostly_domestic_from_home_regions(valid: list[Row]) -> None:
    with_caller = [row for row in valid if row["caller_number"]][:3_000]
    pairs = []
    for row in with_caller:
        caller, called = _number(row["caller_number"]), _number(row["called_number"])
        assert caller is not None and called is not None
        pairs.append(
            (
                phonenumbers.region_code_for_number(caller),
                phonenumbers.region_code_for_number(called),
            )
        )
    international = sum(1 for a, b in pairs if a != b) / len(pairs)
    assert 0.25 <= international <= 0.35
    homes = sum(1 for a, _ in pairs if a in ("US", "GB", "DE")) / len(pairs)
    assert homes > 0.75
    # The call type given agrees with the countries of the two numbers.
    for row, (a, b) in zip(with_caller, pairs, strict=True):
        if row["call_type"] is not None:
            assert (row["call_type"] == "international") == (a != b)


def test_called_numbers_are_skewed_toward_popular_ones(valid: list[Row]) -> None:
    counts = Counter(row["called_number"].lstrip("+0") for row in valid)
    ranked = sorted(counts.values(), reverse=True)
    top = sum(ranked[: len(ranked) // 10])
    assert top > 0.3 * sum(ranked)


# --- write_landing_files ----------------------------------------------------------------


def test_write_landing_files_round_trips_every_format(tmp_path: Path) -> None:
    source = generate_cdrs(GeneratorOptions(rows=1_200, seed=2, start_date=START))
    formats = ("csv", "csv.gz", "json", "ndjson", "jsonl", "parquet", "ndjson.gz", "json.gz")
    paths = write_landing_files(source, tmp_path, prefix="bench", formats=formats, files=8)
    assert [p.name for p in paths] == [f"bench_{i:04d}.{fmt}" for i, fmt in enumerate(formats)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]
    back: list[Row | list[str]] = []
    for path in paths:
        back.extend(read_file(path))
    assert back == source.to_pylist()


def test_json_files_leave_out_null_keys_and_write_strings(tmp_path: Path) -> None:
    source = pa.table(
        {
            "call_id": ['a"1', "b\\2"],
            "caller_number": [None, "+441212345678"],
            "duration_seconds": ["60", None],
        }
    )
    (path,) = write_landing_files(source, tmp_path, formats=("json",))
    assert json.loads(path.read_text()) == [
        {"call_id": 'a"1', "duration_seconds": "60"},
        {"call_id": "b\\2", "caller_number": "+441212345678"},
    ]
    (lines,) = write_landing_files(source, tmp_path, prefix="nd", formats=("ndjson",))
    assert lines.read_text().splitlines()[0] == '{"call_id":"a\\"1","duration_seconds":"60"}'


def test_csv_quotes_only_when_a_value_needs_it(tmp_path: Path) -> None:
    plain = pa.table({"call_id": ["c1"], "carrier_id": [None]})
    (path,) = write_landing_files(plain, tmp_path, prefix="plain")
    assert path.read_text() == "call_id,carrier_id\nc1,\n"
    tricky = pa.table({"call_id": ['c,"1"'], "carrier_id": ["x"]})
    (path,) = write_landing_files(tricky, tmp_path, prefix="tricky")
    assert list(csv.reader(io.StringIO(path.read_text()))) == [
        ["call_id", "carrier_id"],
        ['c,"1"', "x"],
    ]


def test_gzip_files_are_byte_for_byte_deterministic(tmp_path: Path) -> None:
    source = generate_cdrs(GeneratorOptions(rows=500, seed=4, start_date=START))
    (one,) = write_landing_files(source, tmp_path / "a", formats=("csv.gz",))
    (two,) = write_landing_files(source, tmp_path / "b", formats=("csv.gz",))
    assert one.read_bytes() == two.read_bytes()
    assert one.read_bytes()[4:8] == b"\x00\x00\x00\x00"  # no time in the gzip header


def test_unknown_format_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="xml"):
        write_landing_files(pa.table({"call_id": ["x"]}), tmp_path, formats=("xml",))
    assert list(tmp_path.iterdir()) == []


# --- generate_sample --------------------------------------------------------------------


def test_sample_files_exist_with_their_suffixes_and_no_temporary_files(
    sample: list[Path],
) -> None:
    assert [p.name for p in sample] == [
        "sample_0000.csv",
        "sample_0001.csv.gz",
        "sample_0002.json",
        "sample_0003.ndjson",
        "sample_0004.csv.gz",
        "sample_0005.parquet",
    ]
    folder = sample[0].parent
    assert sorted(p.name for p in folder.iterdir()) == [p.name for p in sample]
    assert all(p.is_file() and p.stat().st_size > 1_000 for p in sample)


def test_sample_replays_one_file_byte_for_byte(sample: list[Path]) -> None:
    assert sample[4].read_bytes() == sample[1].read_bytes()
    others = [p.read_bytes() for i, p in enumerate(sample) if i != 4]
    assert len(set(others)) == 5


def test_sample_has_1500_calls_and_every_rejection_reason(sample: list[Path]) -> None:
    rows = [row for i, path in enumerate(sample) if i != 4 for row in read_file(path)]
    assert len(rows) == 1_501  # 1,500 calls and one broken CSV line
    found = [reasons(row) for row in rows]
    assert sum(1 for r in found if r) == 31  # 2 % of 1,500 and the broken line
    assert set().union(*found) == ALL_REASONS
    broken = [row for row in read_file(sample[0]) if isinstance(row, list)]
    assert len(broken) == 1 and len(broken[0]) != len(CANONICAL_FIELDS)


def test_sample_has_duplicates_within_and_across_files(sample: list[Path]) -> None:
    first_file: dict[str, int] = {}
    within = across = 0
    for number, path in enumerate(sample):
        if number == 4:  # the replay: every row repeats, tested on its own
            continue
        for row in read_file(path):
            if isinstance(row, list) or reasons(row):
                continue
            if row["call_id"] not in first_file:
                first_file[row["call_id"]] = number
            elif first_file[row["call_id"]] == number:
                within += 1
            else:
                across += 1
    assert within + across == 15  # 1 % of 1,500
    assert within > 0 and across > 0


def test_sample_spreads_over_three_days_with_late_cdrs_in_the_last_file(
    sample: list[Path],
) -> None:
    def days(path: Path) -> Counter[dt.date]:
        found: Counter[dt.date] = Counter()
        for row in read_file(path):
            if not isinstance(row, list) and not reasons(row):
                start = _instant(row["start_time"])
                assert start is not None
                found[start.astimezone(dt.UTC).date()] += 1
        return found

    first_day = TODAY - dt.timedelta(days=3)
    assert set(days(sample[0])) == {first_day}
    last = days(sample[-1])
    assert max(last) == TODAY - dt.timedelta(days=1)
    assert 10 <= last[first_day] <= 15  # late CDRs for the first day
    assert sum(last.values()) - last[first_day] > 250


def test_sample_is_deterministic_for_seed_and_today(tmp_path: Path, sample: list[Path]) -> None:
    again = generate_sample(tmp_path, seed=7, today=TODAY)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in sample]
    other = generate_sample(tmp_path / "other", seed=8, today=TODAY)
    assert other[0].read_bytes() != sample[0].read_bytes()


def test_sample_calls_reach_at_least_30_countries(sample: list[Path]) -> None:
    called = {
        row["called_number"]
        for path in sample
        for row in read_file(path)
        if not isinstance(row, list) and not reasons(row)
    }
    regions = set()
    for number in sorted(called):
        parsed = _number(number)
        assert parsed is not None and phonenumbers.is_valid_number(parsed), number
        regions.add(phonenumbers.region_code_for_number(parsed))
    assert len(regions) >= 30
    assert {"US", "GB", "DE"} <= regions
