"""Enrichment from number facts: regions, types, names, time zones, derived call type."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import phonenumbers
import pyarrow as pa
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from cdr_assets.lib import numbers
from cdr_assets.lib.enrichment import enrich_calls
from cdr_assets.lib.numbers import NumberFactsCache, compute_number_facts
from cdr_assets_tests.lib.test_validation import GOOD, run_validation

REGIONS = (
    "US", "GB", "DE", "FR", "AU", "JP", "CN", "IN", "BR", "MX", "ES", "IT", "NL", "SE", "NO",
    "PL", "ZA", "NG", "KE", "EG", "AE", "SG", "HK", "KR", "AR", "CH", "IE", "NZ",
)  # fmt: skip


def example(region: str, kind: int) -> str:
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def enrich(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls (E.164 numbers, start_time, called_country) enriched from freshly parsed facts."""
    numbers_seen = sorted(
        {r[k] for r in rows for k in ("caller_number", "called_number") if r.get(k)}
    )
    facts = compute_number_facts(numbers_seen, None)
    calls = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("caller_number", pa.string()),
                ("called_number", pa.string()),
                ("called_country", pa.string()),
                ("start_time", pa.timestamp("us", "UTC")),
            ]
        ),
    )
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("input_calls", calls)
        return enrich_calls(con, "input_calls", facts).to_arrow_table().to_pylist()


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize(
    ("kind", "type_names"),
    [
        (PhoneNumberType.FIXED_LINE, {"fixed_line", "fixed_line_or_mobile"}),
        (PhoneNumberType.MOBILE, {"mobile", "fixed_line_or_mobile"}),
    ],
)
def test_example_numbers_of_each_region(region: str, kind: int, type_names: set[str]) -> None:
    number = example(region, kind)
    fact = numbers.number_fact(number, None)
    assert fact["e164"] == number
    assert fact["region"] == region
    assert fact["number_type"] in type_names
    (row,) = enrich(
        [
            {
                "caller_number": number,
                "called_number": number,
                "called_country": region,
                "start_time": datetime(2026, 1, 15, 12, tzinfo=UTC),
            }
        ]
    )
    assert row["called_number_type"] == fact["number_type"]
    assert row["called_country_name"]  # an English name for every region
    assert row["caller_timezones"] == fact["timezones"]


@pytest.mark.parametrize(
    ("caller", "called", "call_type"),
    [
        (
            example("GB", PhoneNumberType.FIXED_LINE),
            example("FR", PhoneNumberType.MOBILE),
            "international",
        ),
        (
            example("DE", PhoneNumberType.FIXED_LINE),
            example("DE", PhoneNumberType.MOBILE),
            "national",
        ),
        ("+12025550123", "+12025550199", "local"),  # same US area code
        ("+12025550123", "+14155550100", "national"),
        ("+442079460958", "+442079460000", "local"),
        ("+442079460958", "+441212345678", "national"),
        ("+33142685300", "+33142685301", "local"),
        ("+819012345678", "+81312345678", "national"),  # mobile caller: not geographic
    ],
)
def test_derived_call_type(caller: str, called: str, call_type: str) -> None:
    accepted, _ = run_validation(
        [{**GOOD, "caller_number": caller, "called_number": called, "call_type": None,
          "country_code": None}]
    )  # fmt: skip
    assert accepted[0]["call_type"] == call_type


def test_unknown_caller_has_no_call_type_and_no_caller_facts() -> None:
    accepted, _ = run_validation([{**GOOD, "caller_number": None, "call_type": None}])
    assert accepted[0]["call_type"] is None
    (row,) = enrich(
        [{"caller_number": None, "called_number": "+442079460958", "called_country": "GB",
          "start_time": datetime(2026, 1, 15, tzinfo=UTC)}]
    )  # fmt: skip
    assert row["caller_timezone"] is None and row["local_start_time"] is None
    assert row["caller_timezones"] == []
    assert row["called_region"] == "London"
    assert row["called_country_name"] == "United Kingdom"


@pytest.mark.parametrize(
    ("start", "local"),
    [
        (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), datetime(2026, 3, 29, 0, 30)),  # GMT
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 2, 30)),  # BST
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30)),  # BST
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30)),  # GMT
    ],
)
def test_local_start_time_follows_the_callers_daylight_saving(
    start: datetime, local: datetime
) -> None:
    (row,) = enrich(
        [{"caller_number": "+442079460958", "called_number": "+12025550123",
          "called_country": "US", "start_time": start}]
    )  # fmt: skip
    assert row["caller_timezone"] == "Europe/London"
    assert row["local_start_time"] == local


def test_a_caller_spanning_several_zones_gets_the_list_and_no_local_time() -> None:
    (row,) = enrich(
        [{"caller_number": "+61412345678", "called_number": "+442079460958",
          "called_country": "GB", "start_time": datetime(2026, 1, 15, tzinfo=UTC)}]
    )  # fmt: skip
    assert len(row["caller_timezones"]) > 1 and "Australia/Sydney" in row["caller_timezones"]
    assert row["caller_timezone"] is None
    assert row["local_start_time"] is None
    assert row["caller_number_type"] == "mobile"


def test_each_number_is_parsed_once_and_a_new_phonenumbers_version_parses_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = numbers.fresh_number_facts

    def counting(
        wanted: pa.Array | pa.ChunkedArray, region: str | None, tables: Path | None
    ) -> pa.Table:
        calls.extend(wanted.to_pylist())
        return real(wanted, region, tables)

    monkeypatch.setattr(numbers, "fresh_number_facts", counting)
    wanted = pa.array(["+442079460958", "+12025550123", "+442079460958", None])
    cache = NumberFactsCache(tmp_path, None)
    assert cache.facts_for(wanted).num_rows == 2
    assert NumberFactsCache(tmp_path, None).facts_for(wanted).num_rows == 2
    assert sorted(calls) == ["+12025550123", "+442079460958"]  # the second look parsed none
    source = NumberFactsCache(tmp_path, None).source_sql()  # what enrichment reads
    assert source is not None
    found = duckdb.sql(f"SELECT number FROM {source} WHERE e164 = '+12025550123'").fetchall()
    assert found == [("+12025550123",)]

    monkeypatch.setattr(phonenumbers, "__version__", "0.0.0-next")
    assert NumberFactsCache(tmp_path, None).facts_for(wanted).num_rows == 2
    assert len(calls) == 4  # a new release: facts parsed again, in a new folder
    assert len(list(tmp_path.glob("phonenumbers=*"))) == 2
    assert len(list((tmp_path / "prefix_tables").glob("phonenumbers=*"))) == 2


def test_the_cache_has_the_facts_number_fact_gives(tmp_path: Path) -> None:
    """Engine-decided and per-number facts land in the cache alike."""
    wanted = ["+442079460958", "+4402079460958", "0044 20 7946 0958", "+5491123456789", "x"]
    cached = NumberFactsCache(tmp_path, None).facts_for(pa.array(wanted)).to_pylist()
    assert sorted(cached, key=lambda row: row["number"]) == sorted(
        compute_number_facts(wanted, None).to_pylist(), key=lambda row: row["number"]
    )


def test_slices_side_by_side_decide_each_new_number_once_with_the_same_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's numbers are looked up and decided a slice a thread; the engine's leftovers
    are decided together afterwards and the new facts cached as one part."""
    known = ["+442079460958", "+12025550123"]
    NumberFactsCache(tmp_path, None).facts_for(pa.array(known))
    engine_calls: list[list[str]] = []
    leftovers: list[str] = []
    real_facts = numbers.FactsEngine.facts
    real_compute = numbers.compute_number_facts

    def engine_facts(
        self: numbers.FactsEngine, wanted: pa.Array, region: str | None
    ) -> tuple[pa.Table, pa.Array]:
        engine_calls.append(wanted.to_pylist())
        return real_facts(self, wanted, region)

    def compute(wanted: list[str], region: str | None) -> pa.Table:
        leftovers.extend(wanted)
        return real_compute(wanted, region)

    monkeypatch.setattr(numbers.FactsEngine, "facts", engine_facts)
    monkeypatch.setattr(numbers, "compute_number_facts", compute)
    new = ["+4402079460958", "+5491123456789", "+61291234567", "x", "+33142685300"]
    # Repeated and null strings too: every distinct one is in exactly one slice.
    given = pa.chunked_array([[*known, new[0], None, new[1]], [new[0], *new[2:], known[0]]])
    cache = NumberFactsCache(tmp_path, None)
    facts = cache.facts_for_slices(given, 2, ["e164", "valid", "number_type"])

    assert sorted(facts["number"].to_pylist()) == sorted([*known, *new])
    assert len(engine_calls) > 1  # more than one slice had new numbers
    decided = [n for call in engine_calls for n in call]
    assert sorted(decided) == sorted(new)  # each new number once, none the cache knew
    assert set(leftovers) <= set(decided) and leftovers  # "+4402..." and "+5491..." are left
    assert len(cache.files()) == 2  # the known numbers' part and one new part
    one_by_one = compute_number_facts([*known, *new], None).select(facts.column_names)
    assert sorted(facts.to_pylist(), key=lambda row: row["number"]) == sorted(
        one_by_one.to_pylist(), key=lambda row: row["number"]
    )
    engine_calls.clear()
    again = NumberFactsCache(tmp_path, None).facts_for_slices(given, 2, ["e164"])
    assert again.num_rows == len(known) + len(new) and not engine_calls  # all cached now


def test_many_new_numbers_are_parsed_on_every_core_with_the_same_facts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample = [f"+4420794{i:05d}" for i in range(200)] + ["abc", "+999123"]
    sequential = compute_number_facts(sample, None)
    monkeypatch.setattr(numbers, "PARALLEL_THRESHOLD", 10)
    assert compute_number_facts(sample, None).equals(sequential)
