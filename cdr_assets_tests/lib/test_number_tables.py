"""The vectorised number-facts engine against phonenumbers itself, fact by fact.

100,000 number strings over every region and non-geographic entity phonenumbers supports:
the example number of each type, the same with random digits changed, added or dropped,
with a national prefix after the country code, in '00' form, plus malformed strings; and
national-format numbers read with a default region. Every fact the engine decides must be
the one ``number_fact`` gives; the numbers it leaves undecided go to ``number_fact`` anyway.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberFormat, PhoneNumberType

from cdr_assets.lib.number_tables import FactsEngine, tables_folder
from cdr_assets.lib.numbers import NUMBER_FACTS_SCHEMA, compute_number_facts, number_fact

TYPES = [
    value
    for name, value in vars(PhoneNumberType).items()
    if name.isupper() and isinstance(value, int) and value != PhoneNumberType.UNKNOWN
]
ODD = [
    "", "+", "++44", "+0", "+00", "+1", "+12", "+123", "+999", "+99912345678", "00", "0044",
    "abc", "+44 20 7946 0958", "+44-20-7946-0958", "+44 (0)20 7946 0958", "tel:+442079460958",
    "+442079460958 ext. 12", "+442079460958x12", "+44207946095\uff18", "+\uff14\uff142079460958",
    "+1800FLOWERS", " +442079460958", "+442079460958 ", "0044 20 7946 0958", "+44.20.7946",
    "+" + "4" * 30, "+" + "1" * 300, "+80012345678", "+800123456789", "+882123456789",
    "+3906698", "+390669812345", "+3931234567890", "+7800", "+78001234567",
    "+5491123456789", "+54111512345678", "+541151234567", "+5493512345678",
]  # fmt: skip
SIZE = 100_000


def _nsn_variants(rng: random.Random, nsn: str) -> list[str]:
    """The national number with random digits changed, one added or dropped."""
    out = [nsn]
    for _ in range(6):
        digits = list(nsn)
        for _ in range(rng.randint(1, 3)):
            digits[rng.randrange(len(digits))] = rng.choice("0123456789")
        out.append("".join(digits))
    out.append(nsn + rng.choice("0123456789"))
    out.append(nsn[:-1])
    out.append(nsn[: rng.randint(1, max(1, len(nsn) - 1))])
    out.append(nsn[: -rng.randint(1, 3)] + "".join(rng.choices("0123456789", k=rng.randint(1, 4))))
    return out


def _examples() -> list[tuple[int, str, str | None]]:
    """(country code, national number, national prefix) of every example number."""
    found: list[tuple[int, str, str | None]] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = PhoneMetadata.metadata_for_region(region)
        prefix = metadata.national_prefix if metadata else None
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                nsn = phonenumbers.national_significant_number(number)
                found.append((number.country_code, nsn, prefix))
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            found.append((code, phonenumbers.national_significant_number(number), None))
    return found


def international_numbers(size: int, seed: int = 20261125) -> list[str]:
    rng = random.Random(seed)
    examples = _examples()
    numbers: set[str] = set(ODD)
    # Every example number and a few variants of each first, then random variants.
    for code, nsn, prefix in examples:
        for variant in _nsn_variants(rng, nsn)[:4]:
            numbers.add(f"+{code}{variant}")
        if prefix:
            numbers.add(f"+{code}{prefix}{nsn}")
        numbers.add(f"00{code}{nsn}")
    while len(numbers) < size:
        code, nsn, prefix = rng.choice(examples)
        variant = rng.choice(_nsn_variants(rng, nsn))
        form = rng.random()
        if form < 0.05 and prefix:
            numbers.add(f"+{code}{prefix}{variant}")
        elif form < 0.10:
            numbers.add(f"00{code}{variant}")
        elif form < 0.12:
            numbers.add(f"+{rng.randint(1, 999)}{variant}")
        else:
            numbers.add(f"+{code}{variant}")
    return sorted(numbers)[:size]


def national_numbers(region: str, size: int, seed: int = 7) -> list[str]:
    """National-format numbers of ``region`` (and some of elsewhere) for a default region."""
    rng = random.Random(seed)
    found = []
    for kind in TYPES:
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None:
            found.append(phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL))
    numbers: set[str] = set(found) | {"+442079460958", "0044 20 7946 0958", "12", "abc"}
    while len(numbers) < size:
        text = list(rng.choice(found))
        spots = [i for i, c in enumerate(text) if c.isdigit()]
        for _ in range(rng.randint(0, 2)):
            text[rng.choice(spots)] = rng.choice("0123456789")
        numbers.add("".join(text).replace(" ", "") if rng.random() < 0.5 else "".join(text))
    return sorted(numbers)


def compare(numbers: list[str], default_region: str | None) -> tuple[int, int]:
    """(decided by the engine, left to number_fact); fails listing every differing number."""
    decided, undecided = FactsEngine().facts(pa.array(numbers, pa.string()), default_region)
    assert decided.schema == NUMBER_FACTS_SCHEMA
    got = decided.to_pylist()
    assert len(got) + len(undecided) == len(numbers)
    assert {row["number"] for row in got} | set(undecided.to_pylist()) == set(numbers)
    expected = {
        row["number"]: row
        for row in compute_number_facts([row["number"] for row in got], default_region).to_pylist()
    }
    differences: list[str] = []
    for row in got:
        want = expected[row["number"]]
        for column, value in row.items():
            if value != want[column]:
                differences.append(
                    f"{row['number']!r} {column}: engine {value!r}, phonenumbers {want[column]!r}"
                )
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences[:200])
    return len(got), len(undecided)


def test_engine_agrees_with_phonenumbers_on_100k_numbers_of_every_region() -> None:
    numbers = international_numbers(SIZE - 5 * 400)
    decided, undecided = compare(numbers, None)
    # The shortcut must decide nearly every number, or it is no shortcut.
    assert decided > 0.9 * len(numbers), (decided, undecided)
    for region in ("GB", "US", "DE", "AR", "IT"):
        compare(national_numbers(region, 400), region)


def test_the_engine_decides_the_example_numbers_of_every_region() -> None:
    examples = [f"+{code}{nsn}" for code, nsn, _ in _examples()]
    decided, undecided = FactsEngine().facts(pa.array(examples), None)
    assert len(undecided) < 0.05 * len(examples), undecided.to_pylist()
    assert pc.sum(decided["valid"]).as_py() >= 0.95 * decided.num_rows


@pytest.mark.parametrize(
    ("number", "facts"),
    [
        ("+442079460958", {"region": "GB", "area_code": "20", "description": "London"}),
        ("00442079460958", {"e164": "+442079460958", "timezones": ["Europe/London"]}),
        ("+12025550123", {"region": "US", "number_type": "fixed_line_or_mobile"}),
        ("+999123", {"possible": False, "timezones": None, "country_calling_code": None}),
    ],
)
def test_known_numbers(number: str, facts: dict[str, Any]) -> None:
    (row,) = FactsEngine().facts(pa.array([number]), None)[0].to_pylist()
    assert row == {field.name: None for field in NUMBER_FACTS_SCHEMA} | number_fact(number, None)
    for key, value in facts.items():
        assert row[key] == value


def test_prefix_tables_are_kept_per_phonenumbers_version(tmp_path: Path) -> None:
    engine = FactsEngine(tmp_path)
    folder = tables_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "carrier.parquet", "geocoder.parquet", "timezone.parquet",
    ]  # fmt: skip
    again = FactsEngine(tmp_path)  # read back, not built
    assert again.geocoder.keys.equals(engine.geocoder.keys)
    assert again.zones.equals(engine.zones)
