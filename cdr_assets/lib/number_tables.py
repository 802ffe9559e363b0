"""Number facts without calling phonenumbers per number: its metadata as regex tables.

phonenumbers decides what a number is from data: per region, a regular expression and a set
of lengths per number type, the region's national prefix, its formatting rules, and prefix
tables for the geocoder, the carrier names and the time zones. This module evaluates that
same data over whole Arrow arrays: the patterns with Arrow's RE2 kernels (every pattern is
anchored as phonenumbers anchors it), the prefix tables as longest-prefix look-ups. It
follows phonenumbers' own code path step by step (``parse`` for a ``+`` number, then
``is_possible_number``, ``region_code_for_number``, ``number_type``,
``length_of_geographical_area_code``, ``geocoder.description_for_number``,
``carrier.name_for_number`` and ``timezone.time_zones_for_number``), so that its facts are
those of :func:`cdr_assets.lib.numbers.number_fact`.

Where a step is not reproduced, the number is handed back undecided, for the per-number
path: a string other than ``+`` (or ``00``) and ASCII digits, a national-format number
(with a default region), a number whose digits after the country code start with the
country's national prefix (``parse`` may strip it), an Argentine geographic number after
the mobile token 9 (the geocoder parses it again), and every number of a country whose
patterns RE2 refuses. ``cdr_assets_tests/lib/test_number_tables.py`` compares every fact
with phonenumbers' on 100,000 numbers of every region.

The prefix tables are built once per phonenumbers version and, given a folder, kept there
as Parquet, so that a later process does not load phonenumbers' prefix modules again.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from phonenumbers import PhoneMetadata, PhoneNumberType, phonenumberutil

# Bumped whenever the engine or its tables change, so old tables are never read.
ENGINE_VERSION = 1

UNKNOWN = int(PhoneNumberType.UNKNOWN)
FIXED_LINE = int(PhoneNumberType.FIXED_LINE)
MOBILE = int(PhoneNumberType.MOBILE)
FIXED_LINE_OR_MOBILE = int(PhoneNumberType.FIXED_LINE_OR_MOBILE)
PAGER = int(PhoneNumberType.PAGER)
# _number_type_helper's order: the first description that matches gives the type.
_SPECIAL_TYPES = (
    ("premium_rate", int(PhoneNumberType.PREMIUM_RATE)),
    ("toll_free", int(PhoneNumberType.TOLL_FREE)),
    ("shared_cost", int(PhoneNumberType.SHARED_COST)),
    ("voip", int(PhoneNumberType.VOIP)),
    ("personal_number", int(PhoneNumberType.PERSONAL_NUMBER)),
    ("pager", PAGER),
    ("uan", int(PhoneNumberType.UAN)),
    ("voicemail", int(PhoneNumberType.VOICEMAIL)),
)
TYPE_NAMES = {
    int(value): name.lower()
    for name, value in vars(PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}
_CARRIER_TYPES = (MOBILE, FIXED_LINE_OR_MOBILE, PAGER)  # carrier._is_mobile
_UNKNOWN_ZONE = "Etc/Unknown"
_MAX_INPUT = 250  # phonenumberutil._MAX_INPUT_STRING_LENGTH
_MIN_NSN = 2  # _MIN_LENGTH_FOR_NSN
_MAX_NSN = 17  # _MAX_LENGTH_FOR_NSN
_REGIONS_OF_CODE: dict[int, tuple[str, ...]] = phonenumberutil.COUNTRY_CODE_TO_REGION_CODE
_GEO_MOBILE: frozenset[int] = frozenset(phonenumberutil._GEO_MOBILE_COUNTRIES)
_MOBILE_WITHOUT_AREA: frozenset[int] = frozenset(
    phonenumberutil._GEO_MOBILE_COUNTRIES_WITHOUT_MOBILE_AREA_CODES
)
_AREA_WITHOUT_PREFIX: frozenset[int] = frozenset(
    getattr(phonenumberutil, "_COUNTRIES_WITHOUT_NATIONAL_PREFIX_WITH_AREA_CODES")  # noqa: B009
)
_MOBILE_TOKENS: dict[int, str] = dict(phonenumberutil._MOBILE_TOKEN_MAPPINGS)

PREFIX_TABLES = ("geocoder", "carrier", "timezone")


# ------------------------------------------------------------------ prefix tables


def _english_names(data: dict[str, dict[str, str]]) -> pa.Table:
    """Prefix -> the name ``prefix._find_lang(.., 'en', None, None)`` returns; prefixes
    without one are left out, since the look-up then goes on to a shorter prefix."""
    prefixes, names = [], []
    for prefix, by_lang in data.items():
        name = by_lang.get("en")
        if name is not None:
            prefixes.append(prefix)
            names.append(name)
    return pa.table({"prefix": prefixes, "name": names})


def build_prefix_tables() -> dict[str, pa.Table]:
    """phonenumbers' geocoder, carrier and time-zone prefix data as Arrow tables."""
    from phonenumbers.carrierdata import CARRIER_DATA
    from phonenumbers.geodata import GEOCODE_DATA
    from phonenumbers.tzdata import TIMEZONE_DATA

    zones = [[z for z in value if z != _UNKNOWN_ZONE] for value in TIMEZONE_DATA.values()]
    return {
        "geocoder": _english_names(GEOCODE_DATA),
        "carrier": _english_names(CARRIER_DATA),
        "timezone": pa.table(
            {
                "prefix": pa.array(list(TIMEZONE_DATA), pa.string()),
                "zones": pa.array(zones, pa.list_(pa.string())),
            }
        ),
    }


def tables_folder(root: Path) -> Path:
    """Where the prefix tables of this phonenumbers version and engine are kept."""
    return root / f"phonenumbers={phonenumbers.__version__}" / f"engine={ENGINE_VERSION}"


def load_prefix_tables(folder: Path | None) -> dict[str, pa.Table]:
    """The prefix tables, read from ``folder`` or built (and written there)."""
    if folder is None:
        return _built_tables()
    paths = {name: folder / f"{name}.parquet" for name in PREFIX_TABLES}
    if all(path.exists() for path in paths.values()):
        return {name: pq.read_table(path) for name, path in paths.items()}
    tables = build_prefix_tables()
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, paths[name])
    return tables


@functools.lru_cache(maxsize=1)
def _built_tables() -> dict[str, pa.Table]:
    return build_prefix_tables()


@dataclass(frozen=True)
class _PrefixIndex:
    """A prefix table ready for longest-prefix look-ups: its keys by length."""

    keys: pa.Array
    longest: int
    by_length: dict[int, tuple[pa.Array, np.ndarray]]  # length -> (keys, their rows)

    @classmethod
    def of(cls, table: pa.Table) -> _PrefixIndex:
        keys = table["prefix"].combine_chunks()
        lengths = pc.utf8_length(keys).to_numpy(zero_copy_only=False)
        by_length = {}
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            by_length[int(length)] = (keys.take(pa.array(rows)), rows)
        return cls(keys, int(lengths.max(initial=0)), by_length)

    def lookup(self, digits: pa.Array) -> np.ndarray:
        """Row of the longest key that starts ``digits``, or -1: ``prefix.py`` and
        ``timezone.py`` try ``digits[:k]`` for k from the longest key length down; a ``k``
        past the end of ``digits`` finds what ``k = len(digits)`` finds, so each length
        need only be looked up among the keys of that length."""
        found = np.full(len(digits), -1, dtype=np.int64)
        sizes = pc.utf8_length(digits).to_numpy(zero_copy_only=False)
        for length in range(self.longest, 0, -1):
            if length not in self.by_length:
                continue
            todo = (found < 0) & (sizes >= length)
            if not todo.any():
                continue
            keys, rows = self.by_length[length]
            where = np.flatnonzero(todo)
            heads = pc.utf8_slice_codeunits(digits.take(pa.array(where)), 0, length)
            hit = pc.fill_null(pc.index_in(heads, value_set=keys), -1)
            hit = hit.to_numpy(zero_copy_only=False)
            found[where] = np.where(hit >= 0, rows[np.maximum(hit, 0)], -1)
        return found


# ------------------------------------------------------------------ regex evaluation


def _noncapturing(pattern: str) -> str:
    """``pattern`` with every capturing group made non-capturing (Arrow's extract kernel
    takes named groups only)."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            out.append(char)
            i += 1
            # A ']' right after '[' or '[^' is a literal.
            if pattern[i : i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i : i + 1] == "]":
                out.append("]")
                i += 1
            continue
        elif char == "(" and pattern[i + 1 : i + 2] != "?":
            out.append("(?:")
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _subset(values: pa.Array, mask: np.ndarray) -> pa.Array:
    return values if mask.all() else values.filter(pa.array(mask))


def _regex(values: pa.Array, pattern: str, within: np.ndarray) -> np.ndarray:
    """``within`` and RE2 ``pattern`` (searched) matches the value."""
    out = within.copy()
    if not within.any():
        return out
    hits = pc.match_substring_regex(_subset(values, within), pattern)
    out[within] = hits.to_numpy(zero_copy_only=False)
    return out


def full_match(values: pa.Array, pattern: str, within: np.ndarray) -> np.ndarray:
    """phonenumbers' ``fullmatch``: ``^(?:pattern)$``."""
    return _regex(values, f"^(?:{pattern})$", within)


def prefix_match(values: pa.Array, pattern: str, within: np.ndarray) -> np.ndarray:
    """Python's ``re.match``: a match starting at the first character."""
    return _regex(values, f"^(?:{pattern})", within)


def _desc_match(nsn: pa.Array, lengths: np.ndarray, desc: Any, within: np.ndarray) -> np.ndarray:
    """phonenumberutil._is_number_matching_desc."""
    if desc is None or not desc.national_number_pattern:
        return np.zeros(len(nsn), dtype=bool)
    mask = within.copy()
    if len(desc.possible_length) > 0:
        mask &= np.isin(lengths, np.array(desc.possible_length))
    return full_match(nsn, desc.national_number_pattern, mask)


def number_types(
    nsn: pa.Array, lengths: np.ndarray, metadata: Any, within: np.ndarray | None = None
) -> np.ndarray:
    """phonenumberutil._number_type_helper over an array (``UNKNOWN`` outside ``within``)."""
    out = np.full(len(nsn), UNKNOWN, dtype=np.int16)
    todo = np.ones(len(nsn), dtype=bool) if within is None else within.copy()
    todo = _desc_match(nsn, lengths, metadata.general_desc, todo)
    for attr, number_type in _SPECIAL_TYPES:
        if not todo.any():
            return out
        hit = _desc_match(nsn, lengths, getattr(metadata, attr), todo)
        out[hit] = number_type
        todo &= ~hit
    fixed = _desc_match(nsn, lengths, metadata.fixed_line, todo)
    same = bool(metadata.same_mobile_and_fixed_line_pattern)
    if same:
        out[fixed] = FIXED_LINE_OR_MOBILE
    else:
        both = _desc_match(nsn, lengths, metadata.mobile, fixed)
        out[both] = FIXED_LINE_OR_MOBILE
        out[fixed & ~both] = FIXED_LINE
    todo &= ~fixed
    if not same:
        out[_desc_match(nsn, lengths, metadata.mobile, todo)] = MOBILE
    return out


def _metadata(code: int, region: str) -> Any:
    return PhoneMetadata.metadata_for_region_or_calling_code(code, region)


# ------------------------------------------------------------------ per country code


@dataclass
class _Group:
    """One country calling code's numbers: their national numbers and what is decided."""

    code: int
    nsn: pa.Array
    lengths: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.nsn)
        self.parsed = np.ones(n, dtype=bool)  # False: phonenumbers.parse fails
        self.fallback = np.zeros(n, dtype=bool)
        self.possible = np.zeros(n, dtype=bool)
        self.region = np.full(n, -1, dtype=np.int16)  # index into the code's regions
        self.type = np.full(n, UNKNOWN, dtype=np.int16)
        self.area_length = np.zeros(n, dtype=np.int64)


def _national_prefix_ahead(group: _Group, metadata: Any) -> np.ndarray:
    """Numbers whose digits after the country code start with what the country's
    ``national_prefix_for_parsing`` matches (``parse`` may strip it)."""
    pattern = metadata.national_prefix_for_parsing
    everything = np.ones(len(group.nsn), dtype=bool)
    if not pattern:
        return ~everything
    if re.match(pattern, "") is None:
        # Every match is non-empty.
        return prefix_match(group.nsn, pattern, everything)
    # An empty match strips nothing (and leaves the number as it is); a longer one may.
    found = pc.extract_regex(group.nsn, f"^(?P<m>{_noncapturing(pattern)})")
    length = pc.utf8_length(pc.struct_field(found, "m"))
    return pc.fill_null(pc.greater(length, 0), False).to_numpy(zero_copy_only=False)


def _decide_group(group: _Group) -> None:
    code = group.code
    regions = _REGIONS_OF_CODE[code]
    main = _metadata(code, regions[0])
    group.fallback |= _national_prefix_ahead(group, main)
    # parse: too short or too long a national number is no number.
    group.parsed &= (group.lengths >= _MIN_NSN) & (group.lengths <= _MAX_NSN)
    live = group.parsed & ~group.fallback
    # is_possible_number: the main region's lengths, local-only lengths included.
    general = main.general_desc
    lengths = [x for x in (*general.possible_length, *general.possible_length_local_only) if x > 0]
    group.possible = live & np.isin(group.lengths, np.array(lengths or [-1]))
    # region_code_for_number, then number_type in that region.
    if len(regions) == 1:
        group.region[live] = 0
        group.type = number_types(group.nsn, group.lengths, main, live)
    else:
        todo = live.copy()
        for index, region in enumerate(regions):
            if not todo.any():
                break
            metadata = PhoneMetadata.metadata_for_region(region, None)
            if metadata is None:
                continue
            if metadata.leading_digits is not None:
                hit = prefix_match(group.nsn, metadata.leading_digits, todo)
                types = number_types(group.nsn, group.lengths, metadata, hit)
            else:
                types = number_types(group.nsn, group.lengths, metadata, todo)
                hit = types != UNKNOWN
            group.region[hit] = index
            group.type[hit] = types[hit]
            todo &= ~hit
    valid = group.possible & (group.type != UNKNOWN)
    group.type[~valid] = UNKNOWN
    # geocoder.description_for_valid_number parses an Argentine number again after its
    # mobile token: left to phonenumbers.
    token = _MOBILE_TOKENS.get(code)
    if token:
        geographic = _geographic(code, group.type)
        starts = pc.starts_with(group.nsn, token).to_numpy(zero_copy_only=False)
        group.fallback |= valid & geographic & starts
    _area_lengths(group, main, valid & ~group.fallback)


def _geographic(code: int, types: np.ndarray) -> np.ndarray:
    """phonenumberutil.is_number_type_geographical."""
    geographic = (types == FIXED_LINE) | (types == FIXED_LINE_OR_MOBILE)
    if code in _GEO_MOBILE:
        geographic |= types == MOBILE
    return geographic


def _area_lengths(group: _Group, main: Any, valid: np.ndarray) -> None:
    """length_of_geographical_area_code for the valid numbers."""
    code = group.code
    regions = _REGIONS_OF_CODE[code]
    wanted = valid & _geographic(code, group.type)
    if code in _MOBILE_WITHOUT_AREA:
        wanted &= group.type != MOBILE
    if code not in _AREA_WITHOUT_PREFIX:
        leading_zero = pc.starts_with(group.nsn, "0").to_numpy(zero_copy_only=False)
        with_prefix = np.zeros(len(group.nsn), dtype=bool)
        for index, region in enumerate(regions):
            metadata = PhoneMetadata.metadata_for_region(region, None)
            if metadata is not None and metadata.national_prefix is not None:
                with_prefix |= group.region == index
        wanted &= with_prefix | leading_zero
    # metadata_for_region(region_code_for_number) is None for non-geographic entities.
    wanted &= np.array([r != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY for r in regions])[
        np.maximum(group.region, 0)
    ]
    if not wanted.any():
        return
    # length_of_national_destination_code: the first digit group of the international
    # format (the main region's rules), with the mobile token's group for a mobile.
    formats = list(main.intl_number_format) or list(main.number_format)
    todo = wanted.copy()
    for rule in formats:
        if not todo.any():
            break
        hit = todo
        if len(rule.leading_digits_pattern) > 0:
            hit = prefix_match(group.nsn, rule.leading_digits_pattern[-1], hit)
        hit = full_match(group.nsn, rule.pattern, hit)
        if not hit.any():
            continue
        todo = todo & ~hit
        formatted = pc.replace_substring_regex(
            _subset(group.nsn, hit), pattern=rule.pattern, replacement=rule.format
        )
        group.area_length[hit] = _first_group_lengths(
            formatted, group.type[hit] == MOBILE, _MOBILE_TOKENS.get(code, "")
        )


def _first_group_lengths(formatted: pa.Array, mobile: np.ndarray, token: str) -> np.ndarray:
    """The NDC length of formatted national numbers: ``re.split(NON_DIGITS, '+cc ' + f)``
    must give more than 3 groups; then the length of group 2 (plus group 3 for a mobile
    of a country with a mobile token)."""
    parts = pc.extract_regex(formatted, r"^\D*(?P<a>\d+)(?P<rest>\D\D*(?P<b>\d*).*)?$")
    first = pc.fill_null(pc.utf8_length(pc.struct_field(parts, "a")), 0)
    rest = pc.fill_null(pc.utf8_length(pc.struct_field(parts, "rest")), 0)
    second = pc.fill_null(pc.utf8_length(pc.struct_field(parts, "b")), 0)
    first_n = first.to_numpy(zero_copy_only=False).astype(np.int64)
    second_n = second.to_numpy(zero_copy_only=False).astype(np.int64)
    several = rest.to_numpy(zero_copy_only=False) > 0
    lengths = np.where(several, first_n, 0)
    if token:
        lengths = np.where(several & mobile, first_n + second_n, lengths)
    return lengths


def _region_name(region: str) -> str:
    return str(phonenumbers.geocoder._region_display_name(region, "en"))


# Every region of a calling code, and 'ZZ': their ids index REGIONS and REGION_NAMES.
REGIONS: tuple[str, ...] = (
    *sorted({region for regions in _REGIONS_OF_CODE.values() for region in regions}),
    "ZZ",
)
_REGION_ID = {region: index for index, region in enumerate(REGIONS)}
_NO_REGION = -1


@functools.lru_cache(maxsize=1)
def _region_names() -> pa.Array:
    """geocoder._region_display_name(region, 'en') of each of REGIONS."""
    return pa.array([_region_name(region) for region in REGIONS], pa.string())


def _region_ids(code: int) -> np.ndarray:
    """Ids (in REGIONS) of the code's regions, in the code's order."""
    return np.array([_REGION_ID[region] for region in _REGIONS_OF_CODE[code]], dtype=np.int64)


def _country_names(group: _Group, wanted: np.ndarray) -> np.ndarray:
    """geocoder.country_name_for_number(.., 'en') of the ``wanted`` numbers, as the id in
    REGIONS whose name it is (-1 for none: valid in several regions)."""
    regions = _REGIONS_OF_CODE[group.code]
    ids = _region_ids(group.code)
    out = np.full(len(group.nsn), _NO_REGION, dtype=np.int64)
    if len(regions) == 1:
        out[wanted] = ids[0]
        return out
    # The one region where the number is valid; none if several; 'ZZ' if none at all.
    count = np.zeros(len(group.nsn), dtype=np.int64)
    where = np.full(len(group.nsn), _REGION_ID["ZZ"], dtype=np.int64)
    for index, region in enumerate(regions):
        metadata = _metadata(group.code, region)
        if metadata is None:
            continue
        valid = number_types(group.nsn, group.lengths, metadata, wanted) != UNKNOWN
        count += valid
        where[valid] = ids[index]
    out[wanted] = np.where(count > 1, _NO_REGION, where)[wanted]
    return out


def _take(values: pa.Array, rows: np.ndarray) -> pa.Array:
    """``values[rows]``, null where a row is negative."""
    return values.take(pa.array(np.maximum(rows, 0), mask=rows < 0))


def _empty_as_null(values: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)


def _scatter(n: int, parts: list[tuple[np.ndarray, pa.Array]], kind: pa.DataType) -> pa.Array:
    """An array of ``n`` values: each part's values at its rows, null elsewhere."""
    if not parts:
        return pa.nulls(n, kind)
    rows = np.concatenate([part_rows for part_rows, _ in parts])
    values = pa.concat_arrays([part_values.cast(kind) for _, part_values in parts])
    position = np.full(n, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    return _take(values, position)


# ------------------------------------------------------------------ the engine


class FactsEngine:
    """Vectorised :func:`~cdr_assets.lib.numbers.number_fact` for the numbers it can
    decide exactly; :meth:`facts` hands the others back."""

    def __init__(self, tables_root: Path | None = None) -> None:
        """``tables_root``: where prefix tables are kept (per phonenumbers version and
        engine), or None to build them in memory once per process."""
        tables = load_prefix_tables(None if tables_root is None else tables_folder(tables_root))
        self.geocoder = _PrefixIndex.of(tables["geocoder"])
        self.geocoder_names = tables["geocoder"]["name"].combine_chunks()
        self.geocoder_blank = pc.equal(self.geocoder_names, "").to_numpy(zero_copy_only=False)
        self.carrier = _PrefixIndex.of(tables["carrier"])
        self.carrier_names = tables["carrier"]["name"].combine_chunks()
        self.timezone = _PrefixIndex.of(tables["timezone"])
        self.zones = tables["timezone"]["zones"].combine_chunks()

    def facts(
        self, numbers: pa.Array | pa.ChunkedArray, default_region: str | None
    ) -> tuple[pa.Table, pa.Array]:
        """(facts of the numbers decided here, in NUMBER_FACTS_SCHEMA, in no particular
        order; the distinct numbers left undecided). ``numbers``: distinct, non-null."""
        from cdr_assets.lib.numbers import NUMBER_FACTS_SCHEMA

        if isinstance(numbers, pa.ChunkedArray):
            numbers = numbers.combine_chunks()
        numbers = numbers.cast(pa.string())
        # numbers._parse: '00' is an international prefix; without a default region only
        # a '+' number parses.
        doubled = pc.starts_with(numbers, "00")
        text = pc.if_else(
            doubled, pc.binary_join_element_wise("+", pc.utf8_slice_codeunits(numbers, 2), ""),
            numbers,
        )  # fmt: skip
        plus = pc.starts_with(text, "+").to_numpy(zero_copy_only=False)
        simple = pc.match_substring_regex(text, r"^\+[0-9]+$").to_numpy(zero_copy_only=False)
        if default_region is None:
            unparsed = ~plus
            fallback = plus & ~simple
        else:
            unparsed = np.zeros(len(numbers), dtype=bool)
            fallback = ~simple
        parts = [self._unparsed(numbers.filter(pa.array(unparsed)), NUMBER_FACTS_SCHEMA)]
        left = [numbers.filter(pa.array(fallback))]
        if simple.any():
            table, undecided = self._plus_numbers(
                numbers.filter(pa.array(simple)), text.filter(pa.array(simple))
            )
            parts.append(table.cast(NUMBER_FACTS_SCHEMA))
            left.append(undecided)
        return pa.concat_tables(parts), pa.concat_arrays(left)

    @staticmethod
    def _unparsed(numbers: pa.Array, schema: pa.Schema) -> pa.Table:
        """Rows of numbers phonenumbers cannot parse: not possible, not valid, no facts."""
        n = len(numbers)
        columns = {
            field.name: pa.nulls(n, field.type)
            for field in schema
            if field.name not in ("number", "possible", "valid")
        }
        false = pa.array(np.zeros(n, dtype=bool))
        return pa.table({"number": numbers, "possible": false, "valid": false, **columns}).select(
            schema.names
        )

    def _plus_numbers(self, numbers: pa.Array, text: pa.Array) -> tuple[pa.Table, pa.Array]:
        n = len(numbers)
        digits = pc.utf8_slice_codeunits(text, 1)
        size = pc.utf8_length(digits).to_numpy(zero_copy_only=False).astype(np.int64)
        # parse: at least 3 digits after '+', at most 250 characters, a known country code
        # (its first 1, 2 or 3 digits); a leading 0 is none.
        code = np.zeros(n, dtype=np.int64)
        codes = pa.array(sorted(_REGIONS_OF_CODE), pa.int64())
        for width in (3, 2, 1):
            head = pc.cast(pc.utf8_slice_codeunits(digits, 0, width), pa.int64())
            known = pc.is_in(head, value_set=codes).to_numpy(zero_copy_only=False)
            known &= size >= width
            code = np.where(known, head.to_numpy(zero_copy_only=False), code)
        leading_zero = pc.starts_with(digits, "0").to_numpy(zero_copy_only=False)
        parsed = (size >= 3) & (size < _MAX_INPUT) & (code > 0) & ~leading_zero
        code[~parsed] = 0
        code_width = np.where(parsed, np.where(code >= 100, 3, np.where(code >= 10, 2, 1)), 0)

        parsed_at = np.flatnonzero(parsed)
        order = parsed_at[np.argsort(code[parsed_at], kind="stable")]
        sorted_codes = code[order]
        bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
        starts = np.concatenate([[0], bounds]) if len(order) else np.array([], np.int64)
        ends = np.concatenate([bounds, [len(order)]]) if len(order) else np.array([], np.int64)

        # Per row, filled group by group.
        fallback = np.zeros(n, dtype=bool)
        possible = np.zeros(n, dtype=bool)
        region = np.full(n, _NO_REGION, dtype=np.int64)
        types = np.full(n, UNKNOWN, dtype=np.int16)
        area_length = np.zeros(n, dtype=np.int64)
        groups: list[tuple[np.ndarray, _Group]] = []
        for start, end in zip(starts, ends, strict=True):
            rows = order[start:end]
            group_code = int(code[rows[0]])
            take = pa.array(rows)
            nsn = pc.utf8_slice_codeunits(digits.take(take), int(code_width[rows[0]]))
            group = _Group(group_code, nsn, size[rows] - code_width[rows])
            try:
                _decide_group(group)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                # A pattern RE2 does not take: the whole country goes to phonenumbers.
                fallback[rows] = True
                continue
            parsed[rows] = group.parsed
            fallback[rows] = group.fallback
            possible[rows] = group.possible
            region[rows] = np.where(group.region >= 0, _region_ids(group_code)[group.region], -1)
            types[rows] = group.type
            area_length[rows] = group.area_length
            groups.append((rows, group))
        parsed &= ~fallback
        possible &= parsed
        region[~parsed] = _NO_REGION
        valid = possible & (types != UNKNOWN)
        types[~valid] = UNKNOWN
        geographic = valid & np.isin(types, [FIXED_LINE, FIXED_LINE_OR_MOBILE])
        geographic |= valid & (types == MOBILE) & np.isin(code, list(_GEO_MOBILE))

        # Geocoder: the longest prefix with an English name for a geographic number; the
        # country's name where there is none (or it is empty) and for other types.
        # description: a row of the geocoder's names, or len(names) + a region id.
        geo_names = self.geocoder_names
        description = np.full(n, -1, dtype=np.int64)
        if geographic.any():
            found = self.geocoder.lookup(digits.filter(pa.array(geographic)))
            named = found >= 0
            named[named] = self.geocoder_blank[found[named]] == 0
            description[geographic] = np.where(named, found, -1)
        needs_country = valid & (description < 0)
        for rows, group in groups:
            wanted = needs_country[rows]
            if wanted.any():
                ids = _country_names(group, wanted)[wanted]
                description[rows[wanted]] = np.where(ids >= 0, len(geo_names) + ids, -1)
        described = _take(pa.concat_arrays([geo_names, _region_names()]), description)

        # Carrier: mobile-ish types only.
        carrier_row = np.full(n, -1, dtype=np.int64)
        mobile = valid & np.isin(types, list(_CARRIER_TYPES))
        if mobile.any():
            carrier_row[mobile] = self.carrier.lookup(digits.filter(pa.array(mobile)))

        # Time zones: by prefix for a geographic number, the country's for another valid
        # one, none otherwise (phonenumbers' 'Etc/Unknown' is dropped).
        zone_row = np.full(n, -1, dtype=np.int64)
        if geographic.any():
            zone_row[geographic] = self.timezone.lookup(digits.filter(pa.array(geographic)))
        country_zones = valid & ~geographic
        if country_zones.any():
            unique, inverse = np.unique(code[country_zones], return_inverse=True)
            rows_of_code = np.array([self._country_zones_row(int(c)) for c in unique])
            zone_row[country_zones] = rows_of_code[inverse]
        zones = _take(self.zones, zone_row)
        zones = pc.if_else(pa.array(zone_row >= 0), zones, pa.scalar([], pa.list_(pa.string())))
        zones = pc.if_else(pa.array(parsed), zones, pa.scalar(None, pa.list_(pa.string())))

        # The area code: the first area_length digits of the national number.
        areas: list[tuple[np.ndarray, pa.Array]] = []
        for width in np.unique(code_width[valid]):
            for length in np.unique(area_length[valid & (code_width == width)]):
                rows = valid & (code_width == width) & (area_length == length)
                if length > 0:
                    heads = pc.utf8_slice_codeunits(
                        digits.filter(pa.array(rows)), int(width), int(width + length)
                    )
                    areas.append((np.flatnonzero(rows), heads))

        type_names = pa.array([TYPE_NAMES.get(t) for t in range(UNKNOWN + 1)], pa.string())
        table = pa.table(
            {
                "number": numbers,
                "e164": pc.if_else(pa.array(possible), text, pa.scalar(None, pa.string())),
                "possible": pa.array(possible),
                "valid": pa.array(valid),
                "region": _take(
                    pa.array(REGIONS), np.where(region == _REGION_ID["ZZ"], -1, region)
                ),
                "country_calling_code": pa.array(code, pa.int32(), mask=~parsed),
                "number_type": _take(type_names, np.where(valid, types, -1)),
                "geographic": pa.array(geographic, mask=~parsed),
                "area_code": _scatter(n, areas, pa.string()),
                "description": _empty_as_null(described),
                "carrier_name": _empty_as_null(_take(self.carrier_names, carrier_row)),
                "timezones": zones,
            }
        )
        return table.filter(pa.array(~fallback)), numbers.filter(pa.array(fallback))

    def _country_zones_row(self, code: int) -> int:
        """Row of the time-zone table ``timezone._country_level_time_zones_for_number``
        returns for ``code``, or -1 ('Etc/Unknown')."""
        text = str(code)
        keys = self.timezone.keys
        for length in range(self.timezone.longest, 0, -1):
            index = pc.index(keys, text[: 1 + length]).as_py()
            if index >= 0:
                return int(index)
        return -1
