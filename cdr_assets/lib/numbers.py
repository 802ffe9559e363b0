"""Number facts: what phonenumbers says about each distinct number string, parsed once ever.

Validation (is the called number possible?), call-type derivation and enrichment all read
the same facts, joined in SQL by the number as written in the file (stripped) or by its
E.164 form. Facts are cached in the warehouse per phonenumbers version, facts layout and
default region, so a number string is parsed once, whatever the number of rows, batches or
runs that carry it. A large set of new numbers is parsed on every core.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import phonenumbers
import phonenumbers.carrier
import phonenumbers.geocoder
import phonenumbers.timezone
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from phonenumbers import PhoneNumberType

NUMBER_FACTS_SCHEMA = pa.schema(
    [
        ("number", pa.string()),
        ("e164", pa.string()),
        ("possible", pa.bool_()),
        ("valid", pa.bool_()),
        ("region", pa.string()),
        ("country_calling_code", pa.int32()),
        ("number_type", pa.string()),
        ("geographic", pa.bool_()),
        ("area_code", pa.string()),
        ("description", pa.string()),
        ("carrier_name", pa.string()),
        ("timezones", pa.list_(pa.string())),
    ]
)
# Bumped whenever the columns above change, so an old cache is never read as a new one.
FACTS_LAYOUT = 2
PARALLEL_THRESHOLD = 20_000

_TYPE_NAMES = {
    value: name.lower()
    for name, value in vars(PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}


def _parse(number: str, default_region: str | None) -> phonenumbers.PhoneNumber | None:
    # '00' is the international prefix the contract accepts from every source, whatever the
    # default region's own international prefix is.
    text = "+" + number[2:] if number.startswith("00") else number
    if not text.startswith("+") and default_region is None:
        return None
    try:
        return phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None


def number_fact(number: str, default_region: str | None) -> dict[str, object]:
    """The facts of one number string (the only place phonenumbers is called per number)."""
    parsed = _parse(number, default_region)
    if parsed is None:
        return {"number": number, "possible": False, "valid": False}
    possible = phonenumbers.is_possible_number(parsed)
    valid = possible and phonenumbers.is_valid_number(parsed)
    region = phonenumbers.region_code_for_number(parsed)
    area_code = None
    geographic = False
    description = carrier_name = None
    timezones: list[str] = []
    if possible:
        zones = phonenumbers.timezone.time_zones_for_number(parsed)
        timezones = [z for z in zones if z != "Etc/Unknown"]
    if valid:
        description = phonenumbers.geocoder.description_for_number(parsed, "en") or None
        carrier_name = phonenumbers.carrier.name_for_number(parsed, "en") or None
        geographic = phonenumbers.is_number_geographical(parsed)
        area_length = phonenumbers.length_of_geographical_area_code(parsed)
        if area_length > 0:
            area_code = phonenumbers.national_significant_number(parsed)[:area_length]
    return {
        "number": number,
        "e164": (
            phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            if possible
            else None
        ),
        "possible": possible,
        "valid": valid,
        "region": region if region not in (None, "ZZ") else None,
        "country_calling_code": parsed.country_code,
        "number_type": _TYPE_NAMES.get(phonenumbers.number_type(parsed)) if valid else None,
        "geographic": geographic,
        "area_code": area_code,
        "description": description,
        "carrier_name": carrier_name,
        "timezones": timezones,
    }


def _facts_rows(args: tuple[list[str], str | None]) -> list[dict[str, object]]:
    numbers, default_region = args
    return [number_fact(n, default_region) for n in numbers]


def compute_number_facts(numbers: Iterable[str], default_region: str | None) -> pa.Table:
    """Facts of each number; a large set is split over every core (phonenumbers is pure
    Python, tens of microseconds a number)."""
    numbers = list(numbers)
    workers = os.cpu_count() or 1
    if len(numbers) < PARALLEL_THRESHOLD or workers == 1:
        rows = _facts_rows((numbers, default_region))
    else:
        size = -(-len(numbers) // (workers * 4))
        chunks = [(numbers[i : i + size], default_region) for i in range(0, len(numbers), size)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = [row for part in pool.map(_facts_rows, chunks) for row in part]
    return pa.Table.from_pylist(rows, schema=NUMBER_FACTS_SCHEMA)


class NumberFactsCache:
    """Parquet cache of number facts, one folder per phonenumbers version, facts layout and
    default region.

    A new phonenumbers release can change what a number is, so its facts live in a new
    folder and are parsed again; old folders are never read.
    """

    def __init__(self, root: Path, default_region: str | None) -> None:
        self.root = root
        version = phonenumbers.__version__
        self.folder = (
            root / f"phonenumbers={version}" / f"default_region={default_region or 'none'}"
        )
        self.default_region = default_region

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet")) if self.folder.exists() else []

    def facts_for(self, numbers: pa.Array | pa.ChunkedArray) -> pa.Table:
        """Facts of every distinct non-null string in ``numbers``, parsing only the misses."""
        wanted = pc.unique(pc.drop_null(numbers))
        known = self._read_known(wanted)
        missing = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=known["number"])))
        if len(missing) == 0:
            return known
        fresh = compute_number_facts(missing.to_pylist(), self.default_region)
        self._append(fresh)
        return pa.concat_tables([known, fresh])

    def facts_by_e164(self, e164: pa.Array | pa.ChunkedArray) -> pa.Table:
        """Cached facts of numbers already parsed (by validation), found by E.164 form."""
        files = self.files()
        if not files:
            return NUMBER_FACTS_SCHEMA.empty_table()
        table = pq.read_table(files, schema=NUMBER_FACTS_SCHEMA)
        return table.filter(pc.is_in(table["e164"], value_set=pc.unique(pc.drop_null(e164))))

    def _read_known(self, wanted: pa.Array) -> pa.Table:
        files = self.files()
        if not files:
            return NUMBER_FACTS_SCHEMA.empty_table()
        table = pq.read_table(files, schema=NUMBER_FACTS_SCHEMA)
        return table.filter(pc.is_in(table["number"], value_set=wanted))

    def _append(self, fresh: pa.Table) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{len(self.files()):06d}-{os.getpid()}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(fresh, tmp)
        os.replace(tmp, self.folder / name)
