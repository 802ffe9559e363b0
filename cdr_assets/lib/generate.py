"""Synthetic CDR data: realistic call detail records and the files that carry them.

This module owns the sample data of the project: `generate_cdrs` builds a table of
calls in the input shape of the data contract (every canonical field as text, as a
CSV file would carry it), `write_landing_files` puts such a table into the landing
folder the way a well-behaved upstream system does (complete files renamed into
place), and `generate_sample` composes the small mixed batch a new user sees on
first start. The same core serves benchmarks at millions of rows, so every per-row
step is a numpy or pyarrow operation; Python loops run per number of a distinct
number pool, per region, per kind of defect, per chunk of rows or per file only.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from phonenumbers import PhoneNumberType

from cdr_assets.lib.readers import CANONICAL_FIELDS

__all__ = [
    "CANONICAL_FIELDS",
    "FORMATS",
    "SCHEMA",
    "GeneratorOptions",
    "generate_cdrs",
    "generate_sample",
    "write_landing_files",
]

SCHEMA = pa.schema([pa.field(name, pa.string()) for name in CANONICAL_FIELDS])

_BASE_FORMATS = ("csv", "json", "ndjson", "jsonl", "parquet")
FORMATS: tuple[str, ...] = _BASE_FORMATS + tuple(f"{fmt}.gz" for fmt in _BASE_FORMATS)

# Regions of the numbers. The first three are the home markets most callers live in;
# the rest make the international traffic and the destination reports look real.
_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "CA", "FR", "AU", "JP", "CN", "IN", "BR", "MX", "ES", "IT",
    "NL", "SE", "NO", "PL", "ZA", "NG", "KE", "EG", "AE", "SA", "SG", "HK", "KR",
    "PH", "ID", "AR", "CH", "IE", "NZ", "AT", "BE", "DK", "PT", "TR", "TH", "MY",
    "VN", "IL", "CO", "CL", "FI",
)  # fmt: skip
_HOME_CALLER_WEIGHTS = {"US": 0.40, "GB": 0.25, "DE": 0.20}
_HOME_CALLED_WEIGHTS = {"US": 0.12, "GB": 0.10, "DE": 0.08}
_MOBILE_SHARE = 0.6
_RANDOM_DIGITS = 4
_DOMESTIC_SHARE = 0.70
_ZERO_ZERO_SHARE = 0.12  # numbers written 0044... instead of +44...
_CALLER_ABSENT_SHARE = 0.02

_CARRIERS = ("carrier_001", "carrier_002", "carrier_003", "carrier_004")
# carrier_004 has no cost deck, so a few calls show `unknown_carrier` in the UI.
_CARRIER_WEIGHTS = (0.40, 0.27, 0.28, 0.05)

_DISPOSITIONS = ("ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION")
_UNANSWERED_WEIGHTS = (0.0, 0.55, 0.25, 0.12, 0.08)  # over _DISPOSITIONS
_DISPOSITION_STYLE_WEIGHTS = (0.88, 0.06, 0.06)  # upper case, lower case, absent

_CALL_TYPES = ("local", "national", "international")
_CALL_TYPE_GIVEN_SHARE = 0.6
_COUNTRY_STYLE_WEIGHTS = (0.45, 0.05, 0.50)  # upper case, lower case, absent

# Which of end_time / duration_seconds a source sends: both, end only, duration only.
_TIME_FIELDS_WEIGHTS = (0.80, 0.10, 0.10)
_BOTH, _END_ONLY, _DURATION_ONLY = 0, 1, 2

# How a row writes its instants: (suffix, offset from UTC in seconds, weight). The
# offset rows carry the same instant on a local clock; the bare one is read in the
# source's time zone, UTC by default.
_TIME_STYLES: tuple[tuple[str, int, float], ...] = (
    ("Z", 0, 0.60),
    ("+00:00", 0, 0.25),
    ("", 0, 0.07),
    ("+01:00", 3600, 0.02),
    ("+05:30", 19800, 0.02),
    ("-05:00", -18000, 0.02),
    ("+09:00", 32400, 0.02),
)

# Relative call volume per UTC hour: quiet nights, a business-day plateau 9-18h.
_HOURLY_TRAFFIC = (
    0.15, 0.10, 0.08, 0.07, 0.08, 0.12, 0.25, 0.45, 0.75, 1.00, 1.00, 1.00,
    0.95, 1.00, 1.00, 1.00, 0.98, 0.95, 0.90, 0.65, 0.50, 0.40, 0.30, 0.20,
)  # fmt: skip

_MEAN_ANSWERED_SECONDS = 180.0
_LONGEST_CALL_SECONDS = 4 * 3600

# Kinds of refused rows. Each bad row breaks exactly one rule, so it maps to one reason.
_BAD_KINDS: tuple[str, ...] = (
    "missing_field:call_id",
    "missing_field:called_number",
    "missing_field:start_time",
    "missing_field:carrier_id",
    "missing_field:duration_seconds",
    "invalid_number:called_number/text",
    "invalid_number:called_number/impossible",
    "invalid_timestamp:start_time",
    "invalid_timestamp:end_time",
    "end_before_start",
    "invalid_duration/fraction",
    "invalid_duration/over_max",
    "invalid_call_type",
    "invalid_country_code",
    "invalid_disposition",
)
_KIND = {name: code for code, name in enumerate(_BAD_KINDS)}
_GOOD = -1

# (column, kind, texts cycled over the rows of that kind); () makes the value absent.
_BAD_VALUES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("call_id", "missing_field:call_id", ()),
    ("called_number", "missing_field:called_number", ()),
    ("start_time", "missing_field:start_time", ()),
    ("carrier_id", "missing_field:carrier_id", ()),
    ("end_time", "missing_field:duration_seconds", ()),
    ("duration_seconds", "missing_field:duration_seconds", ()),
    ("called_number", "invalid_number:called_number/text", ("abc", "not-a-number")),
    ("called_number", "invalid_number:called_number/impossible", ("+999123", "+4412")),
    ("start_time", "invalid_timestamp:start_time", ("yesterday", "2024-02-30T10:00:00Z")),
    ("end_time", "invalid_timestamp:end_time", ("soon", "31/12/2024 25:00")),
    ("duration_seconds", "end_before_start", ()),
    ("duration_seconds", "invalid_duration/fraction", ("12.5",)),
    ("duration_seconds", "invalid_duration/over_max", ("90000", "86401")),
    ("call_type", "invalid_call_type", ("mobile",)),
    ("country_code", "invalid_country_code", ("XX",)),
    ("disposition", "invalid_disposition", ("HUNG_UP",)),
)

_CHUNK_ROWS = 1 << 20  # text is built a chunk at a time: cache-friendly, bounded scratch


def _default_start_date() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=3)


@dataclass(frozen=True)
class GeneratorOptions:
    """What to generate. Row, bad-row and duplicate counts are exact (shares of `rows`,
    rounded); the unanswered share is sampled per row."""

    rows: int = 2_000  # rows of the generated table, spread over `days`
    seed: int = 7
    start_date: datetime.date = field(default_factory=_default_start_date)
    days: int = 3
    distinct_callers: int = 500
    distinct_called: int = 2_000
    unanswered_share: float = 0.15
    bad_row_share: float = 0.02
    duplicate_share: float = 0.01

    def __post_init__(self) -> None:
        if self.rows < 0:
            raise ValueError(f"rows must be >= 0, got {self.rows}")
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")
        if self.distinct_callers < 1 or self.distinct_called < 1:
            raise ValueError("distinct_callers and distinct_called must be >= 1")
        for name in ("unanswered_share", "bad_row_share", "duplicate_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {share}")
        if self.bad_row_share + self.duplicate_share >= 1.0:
            raise ValueError("bad_row_share + duplicate_share must stay below 1")


# --------------------------------------------------------------------------- sampling


def _categorical(
    rng: np.random.Generator, weights: Sequence[float] | np.ndarray, size: int
) -> np.ndarray:
    """`size` draws of indices with probability proportional to `weights` (alias method).

    `rng.choice(p=...)` binary-searches a CDF per draw, which costs ~0.5 s per ten
    million rows; the alias table needs one uniform and two lookups per draw.
    """
    w = np.asarray(weights, dtype=np.float64)
    k = len(w)
    prob = list(w * (k / w.sum()))
    alias = list(range(k))
    small = [i for i in range(k) if prob[i] < 1.0]
    large = [i for i in range(k) if prob[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        alias[s] = g
        prob[g] -= 1.0 - prob[s]
        (small if prob[g] < 1.0 else large).append(g)
    for i in small + large:
        prob[i] = 1.0
    x = rng.random(size) * k
    column = np.minimum(x.astype(np.int32), k - 1)
    keep = (x - column) < np.asarray(prob)[column]
    return np.where(keep, column, np.asarray(alias, dtype=np.int32)[column]).astype(np.int32)


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Split `total` into integer parts proportional to `weights` (largest remainder)."""
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    rest = total - int(counts.sum())
    if rest:
        counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def _region_weights(home: dict[str, float]) -> np.ndarray:
    others = [r for r in _REGIONS if r not in home]
    share = (1.0 - sum(home.values())) / len(others)
    return np.array([home.get(r, share) for r in _REGIONS])


def _zipf_weights(size: int, exponent: float) -> np.ndarray:
    return 1.0 / np.arange(1, size + 1, dtype=np.float64) ** exponent


# --------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class _NumberPool:
    e164: list[str]  # grouped by region, shuffled within a region
    region: np.ndarray  # index into _REGIONS
    area: np.ndarray  # id of the geographic area code, -1 when the number has none
    region_start: np.ndarray  # offset of each region's block, len(_REGIONS) + 1 entries


def _number_templates(region: str) -> list[tuple[int, str]]:
    """(country code, national prefix) per number type, from the library's examples."""
    templates: list[tuple[int, str]] = []
    for number_type in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
        example = phonenumbers.example_number_for_type(region, number_type)
        if example is None or example.country_code is None:
            continue
        national = phonenumbers.national_significant_number(example)
        template = (example.country_code, national[:-_RANDOM_DIGITS])
        # Regions such as US/CA share one example for both types.
        if template not in templates:
            templates.append(template)
    return templates


def _region_numbers(rng: np.random.Generator, region: str, needed: int) -> list[str]:
    """`needed` distinct valid E.164 numbers of `region` (fewer if the region runs out)."""
    templates = _number_templates(region)
    if not templates or needed <= 0:
        return []
    weights = np.array([_MOBILE_SHARE] + [1.0 - _MOBILE_SHARE] * (len(templates) - 1))
    numbers: list[str] = []
    space = 10**_RANDOM_DIGITS
    for (country_code, prefix), count in zip(templates, _allocate(needed, weights), strict=True):
        # Draw a margin over the count because the validity check may drop some.
        draw = min(space, int(count * 1.2) + 8)
        kept = 0
        for suffix in rng.choice(space, size=draw, replace=False).tolist():
            if kept == count:
                break
            text = f"+{country_code}{prefix}{suffix:0{_RANDOM_DIGITS}d}"
            parsed = phonenumbers.parse(text, None)
            if (
                phonenumbers.is_valid_number(parsed)
                and phonenumbers.region_code_for_number(parsed) == region
            ):
                numbers.append(text)
                kept += 1
    return [numbers[i] for i in rng.permutation(len(numbers))]


def _area_key(number: str) -> str:
    """Geographic area code as the pipeline derives `local` calls, '' when there is none."""
    parsed = phonenumbers.parse(number, None)
    if not phonenumbers.is_number_geographical(parsed):
        return ""
    length = phonenumbers.length_of_geographical_area_code(parsed)
    if length <= 0:
        return ""
    return f"{parsed.country_code}:{phonenumbers.national_significant_number(parsed)[:length]}"


def _number_pools(
    rng: np.random.Generator, callers: int, called: int
) -> tuple[_NumberPool, _NumberPool]:
    """Disjoint caller and called pools; validity is checked here, once per distinct number."""
    caller_counts = _allocate(callers, _region_weights(_HOME_CALLER_WEIGHTS))
    called_counts = _allocate(called, _region_weights(_HOME_CALLED_WEIGHTS))
    caller_lists: list[list[str]] = []
    called_lists: list[list[str]] = []
    for region, n_caller, n_called in zip(_REGIONS, caller_counts, called_counts, strict=True):
        numbers = _region_numbers(rng, region, int(n_caller + n_called))
        caller_lists.append(numbers[: int(n_caller)])
        called_lists.append(numbers[int(n_caller) :])
    area_ids: dict[str, int] = {}

    def pool(lists: list[list[str]]) -> _NumberPool:
        e164 = [number for numbers in lists for number in numbers]
        sizes = [len(numbers) for numbers in lists]
        keys = [_area_key(number) for number in e164]
        area = [area_ids.setdefault(key, len(area_ids)) if key else -1 for key in keys]
        return _NumberPool(
            e164,
            np.repeat(np.arange(len(_REGIONS), dtype=np.int32), sizes),
            np.array(area, dtype=np.int32),
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        )

    return pool(caller_lists), pool(called_lists)


def _pick_callers(rng: np.random.Generator, pool: _NumberPool, rows: int) -> np.ndarray:
    region_weight = _region_weights(_HOME_CALLER_WEIGHTS)
    weights = np.zeros(len(pool.e164))
    for r in range(len(_REGIONS)):
        lo, hi = int(pool.region_start[r]), int(pool.region_start[r + 1])
        if hi > lo:
            # A few callers in each region make most of the calls.
            zipf = _zipf_weights(hi - lo, 0.6)
            weights[lo:hi] = region_weight[r] * zipf / zipf.sum()
    return _categorical(rng, weights, rows)


def _pick_called(
    rng: np.random.Generator, pool: _NumberPool, caller_region: np.ndarray
) -> np.ndarray:
    rows = len(caller_region)
    sizes = np.diff(pool.region_start)
    available = sizes > 0
    dest_weights = np.where(available, _region_weights(_HOME_CALLED_WEIGHTS), 0.0)
    dest = caller_region.copy()
    international = (rng.random(rows) >= _DOMESTIC_SHARE) | ~available[dest]
    todo = np.flatnonzero(international)
    # A few redraws settle almost every clash with the caller's own country; the rest
    # stay domestic, which only nudges the domestic share.
    for _ in range(8):
        if todo.size == 0:
            break
        drawn = _categorical(rng, dest_weights, todo.size)
        clash = drawn == dest[todo]
        dest[todo[~clash]] = drawn[~clash]
        todo = todo[clash]
    called = np.empty(rows, dtype=np.int32)
    order = np.argsort(dest, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(dest, minlength=len(_REGIONS)))])
    for r in range(len(_REGIONS)):
        lo, hi = int(bounds[r]), int(bounds[r + 1])
        if hi > lo:
            # Popular destinations: a Zipf-like share of the calls per number.
            picks = _categorical(rng, _zipf_weights(int(sizes[r]), 1.0), hi - lo)
            called[order[lo:hi]] = pool.region_start[r] + picks
    return called


# ----------------------------------------------------------------------------- text

_CLOCK_TEXT = pa.array(
    [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)] + [""]
)
_NO_CLOCK = 86_400  # index of the empty entry, for rows whose whole text is a bad value
_SUFFIX_TEXT = pa.array([suffix for suffix, _, _ in _TIME_STYLES] + [""])
_NO_SUFFIX = len(_TIME_STYLES)


@dataclass(frozen=True)
class _BadText:
    """Bad texts of one column: row rows[i] reads texts[codes[i]]."""

    rows: np.ndarray  # ascending
    codes: np.ndarray
    texts: list[str]

    @classmethod
    def of(cls, pairs: Sequence[tuple[np.ndarray, tuple[str, ...]]]) -> _BadText:
        rows, codes = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        texts: list[str] = []
        for kind_rows, kind_texts in pairs:
            rows.append(kind_rows)
            codes.append(len(texts) + np.arange(kind_rows.size) % len(kind_texts))
            texts.extend(kind_texts)
        all_rows, all_codes = np.concatenate(rows), np.concatenate(codes)
        order = np.argsort(all_rows, kind="stable")
        return cls(all_rows[order], all_codes[order], texts)

    def within(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = np.searchsorted(self.rows, [lo, hi])
        return self.rows[a:b] - lo, self.codes[a:b]


@dataclass(frozen=True)
class _Lookup:
    """A text column as values[index], null where `absent`, bad texts in the table."""

    values: pa.Array
    index: np.ndarray
    absent: np.ndarray

    @classmethod
    def of(
        cls, values: Sequence[str], index: np.ndarray, absent: np.ndarray, bad: _BadText
    ) -> _Lookup:
        index = index.astype(np.int32)
        index[bad.rows] = len(values) + bad.codes
        return cls(pa.array([*values, *bad.texts], pa.string()), index, absent)

    def chunk(self, lo: int, hi: int) -> pa.Array:
        return self.values.take(pa.array(self.index[lo:hi], mask=self.absent[lo:hi]))


@dataclass(frozen=True)
class _Instants:
    """ISO 8601 text of instants, joined from a date, a clock time and a suffix part.

    Formatting each row with strftime costs about a second per million rows; taking
    from a table of the 86,400 clock times and the few dates costs a tenth of that.
    """

    local: np.ndarray  # wall-clock seconds since the epoch, offset already applied
    style: np.ndarray  # index into _TIME_STYLES
    absent: np.ndarray
    bad: _BadText
    first_day: int  # epoch day of dates[0]
    dates: pa.Array  # 'YYYY-MM-DDT' per day from first_day, then the bad texts

    def chunk(self, lo: int, hi: int) -> pa.Array:
        local = self.local[lo:hi]
        date = (local // 86_400 - self.first_day).astype(np.int32)
        clock = (local % 86_400).astype(np.int32)
        suffix = self.style[lo:hi].astype(np.int32)
        rows, codes = self.bad.within(lo, hi)
        date[rows] = len(self.dates) - len(self.bad.texts) + codes
        clock[rows] = _NO_CLOCK
        suffix[rows] = _NO_SUFFIX
        return pc.binary_join_element_wise(
            self.dates.take(pa.array(date, mask=self.absent[lo:hi])),
            _CLOCK_TEXT.take(pa.array(clock)),
            _SUFFIX_TEXT.take(pa.array(suffix)),
            "",
        )


def _day_labels(first_day: int, last_day: int, bad: _BadText) -> pa.Array:
    epoch = datetime.date(1970, 1, 1)
    days = [
        (epoch + datetime.timedelta(days=d)).isoformat() + "T"
        for d in range(first_day, last_day + 1)
    ]
    return pa.array(days + bad.texts, pa.string())


# ------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class _Generated:
    table: pa.Table
    kind: np.ndarray  # _GOOD or an index into _BAD_KINDS
    duplicate: np.ndarray  # row repeats the call_id of an earlier good row
    duplicate_source: np.ndarray  # row is repeated later
    day: np.ndarray  # UTC day of start_time relative to start_date


def _generate(options: GeneratorOptions) -> _Generated:
    rng = np.random.default_rng(options.seed)
    n = options.rows
    n_bad = round(n * options.bad_row_share)
    n_dup = round(n * options.duplicate_share)
    epoch_day = (options.start_date - datetime.date(1970, 1, 1)).days

    # Rows in time order; duplicates later take their source's values wholesale.
    start = (
        (epoch_day + rng.integers(0, options.days, n)) * 86_400
        + _categorical(rng, _HOURLY_TRAFFIC, n).astype(np.int64) * 3600
        + rng.integers(0, 3600, n)
    )
    start.sort()

    # Which rows are refused and which repeat an earlier call.
    picked = rng.choice(n, size=n_bad + n_dup, replace=False) if n else np.empty(0, np.int64)
    kind = np.full(n, _GOOD, dtype=np.int8)
    # Shuffled rows cycle through the kinds, so each kind occurs once rows allow.
    kind[picked[:n_bad]] = np.arange(n_bad) % len(_BAD_KINDS)
    duplicate = np.zeros(n, dtype=bool)
    duplicate[picked[n_bad:]] = True
    good = (kind == _GOOD) & ~duplicate
    last_good = np.maximum.accumulate(np.where(good, np.arange(n), -1))
    dup_rows = np.flatnonzero(duplicate)
    # Half the repeats follow closely (same file), half up to a day's traffic later.
    near = rng.integers(1, 21, dup_rows.size)
    far = rng.integers(1, max(2, n // options.days), dup_rows.size)
    delay = np.where(rng.random(dup_rows.size) < 0.5, near, far)
    source = last_good[np.maximum(dup_rows - delay, 0)]
    orphan = source < 0  # nothing good before it: it stays an ordinary call
    duplicate[dup_rows[orphan]] = False
    dup_rows, source = dup_rows[~orphan], source[~orphan]
    duplicate_source = np.zeros(n, dtype=bool)
    duplicate_source[source] = True
    del good, last_good, picked

    # call_id numbers count the calls of each UTC day, repeats excluded.
    day = (start // 86_400 - epoch_day).astype(np.int32)
    counted = np.cumsum(~duplicate)
    day_first = np.searchsorted(day, np.arange(options.days + 1))
    before_day = np.concatenate([[0], counted])[day_first]
    seq = (counted - before_day[np.minimum(day, options.days)]).astype(np.int32)
    del counted

    caller_pool, called_pool = _number_pools(rng, options.distinct_callers, options.distinct_called)
    caller = _pick_callers(rng, caller_pool, n)
    called = _pick_called(rng, called_pool, caller_pool.region[caller])

    answered = rng.random(n) >= options.unanswered_share
    disposition = np.where(answered, 0, _categorical(rng, _UNANSWERED_WEIGHTS, n)).astype(np.int8)
    seconds = np.clip(np.rint(rng.exponential(_MEAN_ANSWERED_SECONDS, n)), 1, _LONGEST_CALL_SECONDS)
    duration = np.where(answered, seconds, 0).astype(np.int32)
    del answered, seconds
    carrier = _categorical(rng, _CARRIER_WEIGHTS, n).astype(np.int8)
    time_fields = _categorical(rng, _TIME_FIELDS_WEIGHTS, n).astype(np.int8)
    time_style = _categorical(rng, [w for _, _, w in _TIME_STYLES], n).astype(np.int8)
    caller_style = (rng.random(n) < _ZERO_ZERO_SHARE).astype(np.int32)
    called_style = (rng.random(n) < _ZERO_ZERO_SHARE).astype(np.int32)
    caller_absent = rng.random(n) < _CALLER_ABSENT_SHARE
    call_type_absent = rng.random(n) >= _CALL_TYPE_GIVEN_SHARE
    country_style = _categorical(rng, _COUNTRY_STYLE_WEIGHTS, n).astype(np.int8)
    disposition_style = _categorical(rng, _DISPOSITION_STYLE_WEIGHTS, n).astype(np.int8)
    # Changed repeats: re-sent under another carrier, or with a corrected duration.
    change = rng.integers(0, 3, dup_rows.size)  # 0: identical, 1: carrier, 2: duration
    duration_fix = rng.integers(10, 120, dup_rows.size)
    end_gap = rng.integers(1, 600, n_bad)  # for end_before_start rows

    by_row = [
        start, day, seq, caller, called, disposition, duration, carrier, time_fields,
        time_style, caller_style, called_style, caller_absent, call_type_absent,
        country_style, disposition_style,
    ]  # fmt: skip
    for values in by_row:
        values[dup_rows] = values[source]
    del by_row
    carrier[dup_rows] = np.where(change == 1, (carrier[dup_rows] + 1) % 3, carrier[dup_rows])
    duration[dup_rows] += np.where(change == 2, duration_fix, 0).astype(np.int32)
    # A corrected duration of an unanswered call makes it answered.
    disposition[dup_rows[change == 2]] = 0

    end = start + duration
    ebs = np.flatnonzero(kind == _KIND["end_before_start"])
    end[ebs] = start[ebs] - end_gap[: ebs.size]
    time_fields[ebs] = _END_ONLY  # the derived duration is then the only one

    caller_region = caller_pool.region[caller]
    called_region = called_pool.region[called]
    caller_area = caller_pool.area[caller]
    local = (caller_area >= 0) & (caller_area == called_pool.area[called])
    call_type = np.where(caller_region != called_region, 2, np.where(local, 0, 1)).astype(np.int8)
    del caller_area, local, caller_region
    # Without a caller the pipeline cannot derive a type, and a source could not either.
    call_type_absent |= caller_absent

    # Refused rows: absent values go into the null masks and bad texts into the value
    # tables, so no column is copied once per kind of defect.
    absent = {name: np.zeros(n, dtype=bool) for name in CANONICAL_FIELDS}
    absent["caller_number"] = caller_absent
    absent["end_time"] = time_fields == _DURATION_ONLY
    absent["duration_seconds"] = time_fields == _END_ONLY
    absent["call_type"] = call_type_absent
    absent["country_code"] = country_style == 2
    absent["disposition"] = disposition_style == 2
    pairs: dict[str, list[tuple[np.ndarray, tuple[str, ...]]]] = {}
    for column, kind_name, texts in _BAD_VALUES:
        rows = np.flatnonzero(kind == _KIND[kind_name])
        absent[column][rows] = not texts
        if texts:
            pairs.setdefault(column, []).append((rows, texts))
    bad = {name: _BadText.of(pairs.get(name, [])) for name in CANONICAL_FIELDS}

    def lookup(name: str, values: Sequence[str], index: np.ndarray) -> _Lookup:
        return _Lookup.of(values, index, absent[name], bad[name])

    caller_text = caller_pool.e164 + ["00" + s[1:] for s in caller_pool.e164]
    called_text = called_pool.e164 + ["00" + s[1:] for s in called_pool.e164]
    lookups = {
        "caller_number": lookup(
            "caller_number", caller_text, caller + caller_style * len(caller_pool.e164)
        ),
        "called_number": lookup(
            "called_number", called_text, called + called_style * len(called_pool.e164)
        ),
        "duration_seconds": lookup(
            "duration_seconds", [str(s) for s in range(int(duration.max(initial=0)) + 1)], duration
        ),
        "carrier_id": lookup("carrier_id", _CARRIERS, carrier),
        "call_type": lookup("call_type", _CALL_TYPES, call_type),
        "country_code": lookup(
            "country_code",
            list(_REGIONS) + [r.lower() for r in _REGIONS],
            called_region + (country_style == 1) * len(_REGIONS),
        ),
        "disposition": lookup(
            "disposition",
            list(_DISPOSITIONS) + [d.lower() for d in _DISPOSITIONS],
            disposition + (disposition_style == 1) * len(_DISPOSITIONS),
        ),
    }
    del caller, called, carrier, call_type, called_region, disposition, duration
    del caller_style, called_style, country_style, disposition_style

    offsets = np.array([o for _, o, _ in _TIME_STYLES], dtype=np.int64)[time_style]
    first_day = epoch_day - 1  # local clocks reach back into the day before the first
    last_day = int(end.max(initial=0) + offsets.max(initial=0)) // 86_400
    instants = {
        name: _Instants(
            values + offsets,
            time_style,
            absent[name],
            bad[name],
            first_day,
            _day_labels(first_day, max(last_day, epoch_day + options.days), bad[name]),
        )
        for name, values in (("start_time", start), ("end_time", end))
    }
    del offsets, end

    id_labels = pa.array(
        [
            "c-" + (options.start_date + datetime.timedelta(days=d)).strftime("%Y%m%d") + "-"
            for d in range(options.days)
        ]
    )
    width = max(5, len(str(int(seq.max(initial=0)))))

    def text_chunk(lo: int, hi: int) -> dict[str, pa.Array]:
        chunk = {name: column.chunk(lo, hi) for name, column in (lookups | instants).items()}
        chunk["call_id"] = pc.binary_join_element_wise(
            id_labels.take(pa.array(day[lo:hi], mask=absent["call_id"][lo:hi])),
            pc.utf8_lpad(pc.cast(pa.array(seq[lo:hi]), pa.string()), width, "0"),
            "",
        )
        return chunk

    chunks = [text_chunk(lo, min(lo + _CHUNK_ROWS, n)) for lo in range(0, n, _CHUNK_ROWS)]
    table = pa.Table.from_arrays(
        [pa.chunked_array([c[name] for c in chunks], pa.string()) for name in CANONICAL_FIELDS],
        schema=SCHEMA,
    )
    return _Generated(table, kind, duplicate, duplicate_source, day)


def generate_cdrs(options: GeneratorOptions) -> pa.Table:
    """All columns pa.string() (the canonical fields of the contract, in contract order),
    as they would appear in a CSV file; an absent value is null.

    Rows come in start-time order, except the repeats, which follow their original.
    The same options (seed and start_date included) give the same table.
    """
    return _generate(options).table


# ------------------------------------------------------------------------ the files

_JSON_BATCH_ROWS = 1 << 17
_CSV_STRUCTURAL = r'[",\r\n]'
_JSON_UNSAFE = r"[\x00-\x1f]"


def _split_format(fmt: str) -> tuple[str, bool]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    base, _, compression = fmt.partition(".")
    return base, compression == "gz"


def _any_match(column: pa.Array | pa.ChunkedArray, pattern: str) -> bool:
    return bool(pc.any(pc.match_substring_regex(column, pattern)).as_py())


def _text_bytes(array: pa.Array) -> pa.Buffer:
    """The concatenated UTF-8 of a string array, straight from its data buffer."""
    _, offsets_buffer, data = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)
    lo, hi = int(offsets[array.offset]), int(offsets[array.offset + len(array)])
    return pa.py_buffer(b"") if data is None else data.slice(lo, hi - lo)


def _json_escape(column: pa.Array) -> pa.Array:
    if _any_match(column, _JSON_UNSAFE):
        # Control characters never come from the generator; take the exact slow path.
        return pa.array(
            [None if v is None else json.dumps(v)[1:-1] for v in column.to_pylist()], pa.string()
        )
    escaped = pc.replace_substring(column, "\\", "\\\\")
    return pc.replace_substring(escaped, '"', '\\"')


def _json_objects(batch: pa.RecordBatch) -> pa.Array:
    """One JSON object per row, every value a JSON string, null values left out."""
    parts = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        text = _json_escape(pc.cast(column, pa.string()))
        parts.append(pc.binary_join_element_wise(json.dumps(name) + ':"', text, '"', ""))
    if not parts:
        return pa.array(["{}"] * batch.num_rows, pa.string())
    body = pc.binary_join_element_wise(*parts, ",", null_handling="skip")
    return pc.binary_join_element_wise("{", body, "}", "")


def _write_json(table: pa.Table, sink: pa.NativeFile, *, array: bool) -> None:
    if array:
        sink.write(b"[\n" if table.num_rows else b"[]\n")
    written = 0
    for batch in table.to_batches(max_chunksize=_JSON_BATCH_ROWS):
        objects = _json_objects(batch)
        written += batch.num_rows
        if not array:
            sink.write(_text_bytes(pc.binary_join_element_wise(objects, "\n", "")))
        elif written < table.num_rows:
            sink.write(_text_bytes(pc.binary_join_element_wise(objects, ",\n", "")))
        else:
            # Every object but the very last one is followed by a comma.
            head = objects.slice(0, len(objects) - 1)
            sink.write(_text_bytes(pc.binary_join_element_wise(head, ",\n", "")))
            sink.write(objects[len(objects) - 1].as_py().encode() + b"\n]\n")


def _write_csv(table: pa.Table, sink: pa.NativeFile) -> None:
    # Quote only when some value needs it: plain rows look like what people expect
    # of a CSV export, and pyarrow would otherwise quote every string.
    needs_quotes = any(
        _any_match(pc.cast(column, pa.string()), _CSV_STRUCTURAL) for column in table.columns
    )
    sink.write((",".join(table.schema.names) + "\n").encode())
    if table.num_rows:
        pacsv.write_csv(
            table,
            sink,
            pacsv.WriteOptions(
                include_header=False, quoting_style="needed" if needs_quotes else "none"
            ),
        )


def _write_content(table: pa.Table, sink: pa.NativeFile, base: str, trailer: bytes) -> None:
    if base == "csv":
        _write_csv(table, sink)
    elif base == "parquet":
        pq.write_table(table, sink)
    else:
        _write_json(table, sink, array=base == "json")
    sink.write(trailer)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


def _write_file(table: pa.Table, path: Path, fmt: str, *, trailer: bytes = b"") -> Path:
    """Write `table` as `fmt` under a dot name, then rename it to `path` once complete."""
    base, compressed = _split_format(fmt)
    temporary = _temporary(path)
    try:
        if compressed:
            # No file name and a zero time in the header: the same table always gives
            # the same bytes. Level 6 is gzip's own default; Arrow's codec would use 9,
            # four times slower for a tenth less size.
            with (
                open(temporary, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
                pa.PythonFile(gz, mode="w") as sink,
            ):
                _write_content(table, sink, base, trailer)
        else:
            with pa.OSFile(str(temporary), "wb") as sink:
                _write_content(table, sink, base, trailer)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_landing_files(
    table: pa.Table,
    landing_dir: Path,
    *,
    prefix: str = "sample",
    formats: Sequence[str] = ("csv",),
    files: int = 1,
) -> list[Path]:
    """Split the table into `files` consecutive chunks and write each as
    `{prefix}_{i:04d}.{fmt}`, the formats taken in turn from `formats`
    (csv, json, ndjson, jsonl, parquet, each optionally .gz).

    Each file is written under a temporary name starting with '.' and renamed into
    place when complete, since the landing sensor ignores dot files. JSON and NDJSON
    carry every value as a JSON string and leave out keys whose value is null; a JSON
    file is an array of objects. A chunk without rows (more files than rows) gives a
    CSV header, `[]` or an empty NDJSON file. Returns the paths in name order.
    """
    if files < 1:
        raise ValueError(f"files must be >= 1, got {files}")
    if not formats:
        raise ValueError("formats must name at least one format")
    for fmt in formats:
        _split_format(fmt)
    landing_dir = Path(landing_dir)
    landing_dir.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, files + 1).round().astype(np.int64)
    paths = []
    for i in range(files):
        fmt = formats[i % len(formats)]
        chunk = table.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
        paths.append(_write_file(chunk, landing_dir / f"{prefix}_{i:04d}.{fmt}", fmt))
    return paths


# ----------------------------------------------------------------------- the sample

_SAMPLE_ROWS = 1_500
_SAMPLE_DAYS = 3
_SAMPLE_LATE_ROWS = 12
# (format, chunk of the table, or None for the replay of file _SAMPLE_REPLAYED)
_SAMPLE_FILES: tuple[tuple[str, int | None], ...] = (
    ("csv", 0),
    ("csv.gz", 1),
    ("json", 2),
    ("ndjson", 3),
    ("csv.gz", None),
    ("parquet", 4),
)
_SAMPLE_REPLAYED = 1
_SAMPLE_MALFORMED = 0  # the file that ends with a line of the wrong column count
_MALFORMED_CSV_LINE = b"c-malformed-1,+442071838000,2024-01-01T00:00:00Z\n"


def _with_flagged_rows(table: pa.Table, plain: np.ndarray, seed: int) -> pa.Table:
    """A few usable but odd calls, so the sample shows every flag of the contract that the
    generated traffic does not already produce: a self call, an unparseable caller, a
    country code that is not the called number's, a duration 30 s off its end time."""
    columns = {name: table[name].to_pylist() for name in table.column_names}
    has_both = [
        i
        for i in plain
        if columns["end_time"][i] and columns["duration_seconds"][i] not in (None, "0")
    ]
    rng = np.random.default_rng([seed, 2])
    picks = rng.choice(np.array(has_both), size=8, replace=False)
    for i in picks[0:2]:
        columns["caller_number"][i] = columns["called_number"][i]
        columns["call_type"][i] = None
    for i in picks[2:4]:
        columns["caller_number"][i] = "anonymous"
        columns["call_type"][i] = None
    for i in picks[4:6]:
        columns["country_code"][i] = "AQ"
    for i in picks[6:8]:
        columns["duration_seconds"][i] = str(int(columns["duration_seconds"][i]) + 30)
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def generate_sample(
    landing_dir: Path, *, seed: int = 7, today: datetime.date | None = None
) -> list[Path]:
    """The sample a new user gets: six files with 1,500 calls over the 3 UTC days before
    `today` (default: today in UTC), in mixed formats (csv, csv.gz, json, ndjson, parquet).

    It shows late CDRs (calls of the first day at the end of the last file),
    duplicates within and across files, one replayed file (the same bytes as an
    earlier file under another name), bad rows of every rejection reason and, at the
    end of the first CSV file, one line with the wrong number of fields. Existing
    files of the same names are replaced. Returns the paths written, in landing
    (name) order.
    """
    if today is None:
        today = datetime.datetime.now(datetime.UTC).date()
    options = GeneratorOptions(
        rows=_SAMPLE_ROWS,
        seed=seed,
        start_date=today - datetime.timedelta(days=_SAMPLE_DAYS),
        days=_SAMPLE_DAYS,
    )
    generated = _generate(options)
    plain = (generated.kind == _GOOD) & ~generated.duplicate & ~generated.duplicate_source
    table = _with_flagged_rows(generated.table, np.flatnonzero(plain), seed)

    # Late CDRs: a few plain calls of the first day move to the end of the last file.
    candidates = np.flatnonzero(plain & (generated.day == 0))
    rng = np.random.default_rng([seed, 1])
    late = np.sort(
        rng.choice(candidates, size=min(_SAMPLE_LATE_ROWS, candidates.size), replace=False)
    )
    on_time = np.setdiff1d(np.arange(table.num_rows), late)
    chunk_count = sum(1 for _, chunk in _SAMPLE_FILES if chunk is not None)
    bounds = np.linspace(0, on_time.size, chunk_count + 1).round().astype(np.int64)
    parts = [on_time[bounds[i] : bounds[i + 1]] for i in range(chunk_count)]
    parts[-1] = np.concatenate([parts[-1], late])

    landing_dir = Path(landing_dir)
    landing_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for number, (fmt, chunk) in enumerate(_SAMPLE_FILES):
        path = landing_dir / f"sample_{number:04d}.{fmt}"
        if chunk is None:
            temporary = _temporary(path)
            temporary.write_bytes(paths[_SAMPLE_REPLAYED].read_bytes())
            os.replace(temporary, path)
        else:
            trailer = _MALFORMED_CSV_LINE if number == _SAMPLE_MALFORMED else b""
            _write_file(table.take(pa.array(parts[chunk])), path, fmt, trailer=trailer)
        paths.append(path)
    return paths
