"""Fraud scenarios: days of clean ``cdrs``-shaped traffic, with each rule's pattern injected.

``generate_scenario`` writes ``cdrs/call_date=<day>/scenario.parquet`` for every day of a
scenario straight into a warehouse (the rows look like the pipeline's output: the same
columns and types, E.164 numbers, enrichment and rating filled in) and returns the injected
cases as ground truth. Nothing goes through the landing folder, so a million-row day takes
a few seconds to build and the detection tests run against known answers.

Clean traffic. A population of callers (about one per five calls of a day) in three home
markets (US, GB, DE), each with a time zone (or none, as for a multi-zone US mobile range),
a calling profile (business hours or evenings, in local time), an activity weight (log-
normal: most callers make a call or two a day, a few PBXs make hundreds) and a share of
international calls. Each call picks its caller by weight, a local hour by the caller's
profile (turned into UTC with the zone's offset that day), a domestic number (half of
them the caller's regular contacts) or an international destination by a fixed mix, a
carrier by share, an outcome by the carrier's answer rate and an exponential duration (mean
3 minutes, at most 4 hours). A few domestic calls go to premium-rate numbers (``+..9``
ranges) and a few international ones to Cuba (``+53``, on the default high-risk list), so
those rules see ordinary traffic too. Money is exact: cost per started minute at the
destination's rate, revenue at a 1.5 markup, in ``DECIMAL(38,4)``. Weekends carry 10% less
traffic. The same options give the same rows.

Injected cases (days ``inject_days``, each rule once per day at a different UTC hour, so
three days give three cases per rule at three hours and days):

========================  =================================================================
rule                      pattern
========================  =================================================================
``wangiri``               a new foreign number rings 60-80 distinct numbers of one market,
                          unanswered or answered for at most 3 s, within 20-35 minutes
``irsf``                  a new subscriber makes 8 calls of 15-35 minutes within 40 minutes
                          to ``+881`` (satellite), premium-rate numbers, or ``+252`` (Somalia)
``spend_velocity``        an established business caller (a hacked PBX) makes 20-30
                          ordinary international calls in one hour: at 02:00 and 23:00
                          local (off hours) and, larger, at 11:00 local
``traffic_anomaly``       carrier_002's answer rate collapses for an hour; calls to France
                          surge five-fold for an hour; carrier_003 loses 90% of an hour's
                          calls
``long_call``             a national call of 5, 7 or 13 hours
``self_call``             two calls from a caller to its own number
``negative_margin``       a dozen calls of one carrier priced below cost (revenue 0.8 x cost)
========================  =================================================================

Each case is returned as an :class:`InjectedCase` (rule, subject, day, window); the
detection tests require an alert of the same rule and subject whose window overlaps it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cdr_assets.lib.warehouse import Warehouse

__all__ = [
    "SCENARIO_BATCH",
    "InjectedCase",
    "ScenarioOptions",
    "generate_day",
    "generate_scenario",
]

SCENARIO_BATCH = "scenario"
_EPOCH = dt.date(1970, 1, 1)

# -------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class _Destination:
    key: str  # called_country, or the dialled prefix when the number has no country
    country: str | None
    name: str | None
    cc: str
    digits: int  # national significant number length
    rate_milli: int  # cost per minute, international, in 1/1000 currency units
    weight: float  # share of the clean international calls


_DESTINATIONS: tuple[_Destination, ...] = (
    _Destination("US", "US", "United States", "1", 10, 30, 0.16),
    _Destination("GB", "GB", "United Kingdom", "44", 10, 40, 0.12),
    _Destination("DE", "DE", "Germany", "49", 10, 40, 0.09),
    _Destination("FR", "FR", "France", "33", 9, 40, 0.08),
    _Destination("IN", "IN", "India", "91", 10, 50, 0.10),
    _Destination("CN", "CN", "China", "86", 11, 70, 0.06),
    _Destination("MX", "MX", "Mexico", "52", 10, 60, 0.06),
    _Destination("PH", "PH", "Philippines", "63", 10, 90, 0.05),
    _Destination("NG", "NG", "Nigeria", "234", 10, 100, 0.04),
    _Destination("BR", "BR", "Brazil", "55", 11, 80, 0.04),
    _Destination("ES", "ES", "Spain", "34", 9, 40, 0.05),
    _Destination("IT", "IT", "Italy", "39", 10, 40, 0.05),
    _Destination("PL", "PL", "Poland", "48", 9, 50, 0.04),
    _Destination("JP", "JP", "Japan", "81", 10, 60, 0.03),
    _Destination("AU", "AU", "Australia", "61", 9, 50, 0.02),
    _Destination("CU", "CU", "Cuba", "53", 8, 600, 0.01),
    # Only ever dialled by injected cases.
    _Destination("+881", None, None, "881", 9, 2500, 0.0),
    _Destination("SO", "SO", "Somalia", "252", 8, 1200, 0.0),
    _Destination("SL", "SL", "Sierra Leone", "232", 8, 900, 0.0),
)
_DEST = {d.key: i for i, d in enumerate(_DESTINATIONS)}

_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
)
_ZONE = {z: i for i, z in enumerate(_ZONES)}


@dataclass(frozen=True)
class _Home:
    key: str
    caller_share: float
    zones: tuple[tuple[str, float], ...]
    unknown_zone_share: float  # numbers of a range spanning several zones


_HOMES: tuple[_Home, ...] = (
    _Home(
        "US",
        0.60,
        (("America/New_York", 0.5), ("America/Chicago", 0.3), ("America/Los_Angeles", 0.2)),
        0.10,
    ),
    _Home("GB", 0.25, (("Europe/London", 1.0),), 0.0),
    _Home("DE", 0.15, (("Europe/Berlin", 1.0),), 0.0),
)

_CARRIERS = ("carrier_001", "carrier_002", "carrier_003", "carrier_004")
_CARRIER_SHARE = (0.40, 0.27, 0.28, 0.05)
_CARRIER_ASR = (0.86, 0.84, 0.85, 0.80)
_CARRIER_RATE_PCT = (100, 90, 95, 100)  # carrier_004 has no deck: unknown_carrier
_UNRATED_CARRIER = 3

_DISPOSITIONS = ("ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION")
_UNANSWERED_SHARE = (0.55, 0.25, 0.12, 0.08)  # over _DISPOSITIONS[1:]
_ANSWERED, _NO_ANSWER, _FAILED = 0, 1, 3

_CALL_TYPES = ("local", "national", "international")
_LOCAL, _NATIONAL, _INTERNATIONAL = 0, 1, 2
_LOCAL_RATE_MILLI, _NATIONAL_RATE_MILLI, _PREMIUM_RATE_MILLI = 10, 20, 1500
_PREMIUM_SHARE = 0.001  # of domestic calls
_PREMIUM_BASE = 9_000_000_000  # national numbers 900xxxxxxx

# Relative volume per local hour: offices 8-18 h, households in the evening.
_BUSINESS_HOURS = (
    0.02, 0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.25, 0.80, 1.00, 1.00, 1.00,
    0.80, 1.00, 1.00, 1.00, 0.90, 0.70, 0.30, 0.15, 0.08, 0.05, 0.04, 0.03,
)  # fmt: skip
_HOUSEHOLD_HOURS = (
    0.10, 0.05, 0.03, 0.02, 0.02, 0.03, 0.08, 0.20, 0.35, 0.40, 0.45, 0.50,
    0.55, 0.50, 0.45, 0.45, 0.55, 0.75, 0.95, 1.00, 1.00, 0.85, 0.55, 0.25,
)  # fmt: skip
_BUSINESS_SHARE = 0.35
_CONTACT_SHARE = 0.5  # domestic calls to one of the caller's regular numbers
_CONTACTS = 6
_MEAN_SECONDS = 180.0
_LONGEST_SECONDS = 4 * 3600
_WEEKEND_FACTOR = 0.9
_MARKUP = (3, 2)  # revenue = cost x 3/2, half up


@dataclass(frozen=True)
class ScenarioOptions:
    """What to generate: ``days`` days from ``start_date``, cases on ``inject_days``."""

    start_date: dt.date = dt.date(2026, 11, 2)  # a Monday
    days: int = 10
    rows_per_day: int = 20_000  # weekdays; weekends carry 10% less
    seed: int = 11
    inject_days: tuple[int, ...] = (7, 8, 9)  # offsets from start_date; () for clean days
    callers: int | None = None  # default: rows_per_day // 5

    def __post_init__(self) -> None:
        if self.days < 1 or self.rows_per_day < 100:
            raise ValueError("days must be >= 1 and rows_per_day >= 100")
        if any(not 0 <= d < self.days for d in self.inject_days):
            raise ValueError(f"inject_days must be within [0, {self.days})")

    def day(self, offset: int) -> str:
        return (self.start_date + dt.timedelta(days=offset)).isoformat()


@dataclass(frozen=True)
class InjectedCase:
    """One injected pattern: the alert it must raise (rule, subject) and when it happened."""

    rule: str
    subject_type: str
    subject: str
    day: str
    window_start: dt.datetime
    window_end: dt.datetime
    note: str

    def overlaps(self, start: dt.datetime, end: dt.datetime) -> bool:
        return start <= self.window_end and end >= self.window_start


# ------------------------------------------------------------------------ population


@dataclass(frozen=True)
class _Population:
    number: pa.Array  # E.164
    national: np.ndarray
    home: np.ndarray  # index into _HOMES
    zone: np.ndarray  # index into _ZONES, -1 when unknown
    business: np.ndarray
    weight: np.ndarray  # share of the day's calls
    intl_share: np.ndarray


def _national_numbers(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    """Random national significant numbers of ``digits`` digits, first digit 2-8."""
    low = 2 * 10 ** (digits - 1).astype(np.int64)
    span = 7 * 10 ** (digits - 1).astype(np.int64)
    return low + (rng.random(digits.size) * span).astype(np.int64)


def _e164(dest: np.ndarray, national: np.ndarray) -> pa.Array:
    codes = pa.array(["+" + d.cc for d in _DESTINATIONS])
    return pc.binary_join_element_wise(
        codes.take(pa.array(dest)), pc.cast(pa.array(national), pa.string()), ""
    )


def _population(rng: np.random.Generator, callers: int) -> _Population:
    home = rng.choice(len(_HOMES), size=callers, p=[h.caller_share for h in _HOMES])
    zone = np.full(callers, -1, dtype=np.int8)
    for h, spec in enumerate(_HOMES):
        rows = np.flatnonzero(home == h)
        names = [z for z, _ in spec.zones]
        weights = np.array([w for _, w in spec.zones])
        picked = rng.choice(len(names), size=rows.size, p=weights / weights.sum())
        zone[rows] = np.array([_ZONE[n] for n in names], dtype=np.int8)[picked]
        zone[rows[rng.random(rows.size) < spec.unknown_zone_share]] = -1
    dest = np.array([_DEST[_HOMES[h].key] for h in home])
    digits = np.array([_DESTINATIONS[d].digits for d in dest])
    national = _national_numbers(rng, digits)
    # Distinct numbers: a clash (rare) takes the next number up.
    order = np.lexsort((national, dest))
    clash = np.zeros(callers, dtype=bool)
    clash[order[1:]] = (national[order[1:]] == national[order[:-1]]) & (
        dest[order[1:]] == dest[order[:-1]]
    )
    national[clash] += 1
    weight = rng.lognormal(0.0, 1.0, callers)
    weight /= weight.sum()
    return _Population(
        number=_e164(dest, national),
        national=national,
        home=home.astype(np.int8),
        zone=zone,
        business=rng.random(callers) < _BUSINESS_SHARE,
        weight=weight,
        intl_share=np.clip(rng.beta(1.2, 9.0, callers), 0.0, 0.6),
    )


# ---------------------------------------------------------------------------- calls


@dataclass
class _Calls:
    """One day's calls as arrays; ``build`` turns them into a cdrs-shaped table."""

    start: np.ndarray  # epoch seconds, UTC
    caller: pa.Array  # E.164
    caller_dest: np.ndarray  # the caller's country, as an index into _DESTINATIONS
    zone: np.ndarray  # -1 when unknown
    dest: np.ndarray  # index into _DESTINATIONS
    national: np.ndarray  # called national number
    premium: np.ndarray
    call_type: np.ndarray
    carrier: np.ndarray
    disposition: np.ndarray
    duration: np.ndarray
    markup_pct: np.ndarray  # revenue = cost x markup_pct / 100 (150 for clean calls)
    self_call: np.ndarray

    def __len__(self) -> int:
        return int(self.start.size)

    def take(self, rows: np.ndarray) -> _Calls:
        return _Calls(
            **{
                name: value.take(pa.array(rows)) if isinstance(value, pa.Array) else value[rows]
                for name, value in vars(self).items()
            }
        )


def _concat(parts: Sequence[_Calls]) -> _Calls:
    first = parts[0]
    return _Calls(
        **{
            name: pa.concat_arrays([getattr(p, name) for p in parts])
            if isinstance(value, pa.Array)
            else np.concatenate([getattr(p, name) for p in parts])
            for name, value in vars(first).items()
        }
    )


def _zone_offsets(day: dt.date) -> np.ndarray:
    """UTC offset of each zone at noon UTC of ``day``, in seconds."""
    noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
    out = []
    for name in _ZONES:
        offset = noon.astimezone(ZoneInfo(name)).utcoffset()
        out.append(int(offset.total_seconds()) if offset is not None else 0)
    return np.array(out, dtype=np.int64)


def _day_start(day: dt.date) -> int:
    return (day - _EPOCH).days * 86_400


def _clean_calls(pop: _Population, day: dt.date, rows: int, rng: np.random.Generator) -> _Calls:
    callers = len(pop.national)
    # How many calls each caller makes (rows in caller order; start times are drawn below).
    caller = np.repeat(np.arange(callers), rng.multinomial(rows, pop.weight))
    business = pop.business[caller]
    local_hour = np.empty(rows, dtype=np.int64)
    for profile, shape in ((True, _BUSINESS_HOURS), (False, _HOUSEHOLD_HOURS)):
        idx = np.flatnonzero(business == profile)
        weights = np.asarray(shape) / sum(shape)
        local_hour[idx] = rng.choice(24, size=idx.size, p=weights)
    zone = pop.zone[caller]
    offsets = _zone_offsets(day)
    # A caller without a known zone still lives somewhere: the first zone of its home.
    home = pop.home[caller]
    home_zone = np.array([_ZONE[h.zones[0][0]] for h in _HOMES])[home]
    offset = offsets[np.where(zone >= 0, zone, home_zone)]
    local_seconds = local_hour * 3600 + rng.integers(0, 3600, rows)
    start = _day_start(day) + (local_seconds - offset) % 86_400

    home_dest = np.array([_DEST[h.key] for h in _HOMES])[home]
    weights = np.array([d.weight for d in _DESTINATIONS])
    foreign = rng.choice(len(_DESTINATIONS), size=rows, p=weights / weights.sum())
    international = (rng.random(rows) < pop.intl_share[caller]) & (foreign != home_dest)
    dest = np.where(international, foreign, home_dest)
    premium = ~international & (rng.random(rows) < _PREMIUM_SHARE)
    digits = np.array([d.digits for d in _DESTINATIONS])[dest]
    national = _national_numbers(rng, digits)
    contact = ~international & ~premium & (rng.random(rows) < _CONTACT_SHARE)
    slot = rng.integers(0, _CONTACTS, rows)
    span = 7 * 10 ** (digits - 1).astype(np.int64)
    hashed = (pop.national[caller] * 7_919 + slot * 104_729) % span + 2 * 10 ** (digits - 1)
    national = np.where(contact, hashed, national)
    national = np.where(premium, _PREMIUM_BASE + rng.integers(0, 10**7, rows), national)
    call_type = np.where(
        international, _INTERNATIONAL, np.where(rng.random(rows) < 0.4, _LOCAL, _NATIONAL)
    ).astype(np.int8)

    carrier = rng.choice(len(_CARRIERS), size=rows, p=_CARRIER_SHARE).astype(np.int8)
    answered = rng.random(rows) < np.asarray(_CARRIER_ASR)[carrier]
    unanswered = 1 + rng.choice(len(_UNANSWERED_SHARE), size=rows, p=_UNANSWERED_SHARE)
    disposition = np.where(answered, _ANSWERED, unanswered).astype(np.int8)
    mean = np.where(premium, 150.0, _MEAN_SECONDS)
    seconds = np.clip(np.rint(rng.exponential(1.0, rows) * mean), 1, _LONGEST_SECONDS)
    duration = np.where(answered, seconds, 0).astype(np.int64)
    return _Calls(
        start=start.astype(np.int64),
        caller=pop.number.take(pa.array(caller)),
        caller_dest=np.array([_DEST[h.key] for h in _HOMES], dtype=np.int16)[home],
        zone=zone,
        dest=dest.astype(np.int16),
        national=national.astype(np.int64),
        premium=premium,
        call_type=call_type,
        carrier=carrier,
        disposition=disposition,
        duration=duration,
        markup_pct=np.full(rows, 150, dtype=np.int64),
        self_call=np.zeros(rows, dtype=bool),
    )


def _new_calls(
    start: np.ndarray,
    caller: str | pa.Array,
    *,
    caller_dest: int,
    zone: int,
    dest: int | np.ndarray,
    national: np.ndarray,
    call_type: int,
    duration: np.ndarray,
    disposition: np.ndarray | None = None,
    carrier: np.ndarray | None = None,
    premium: bool = False,
    self_call: bool = False,
    rng: np.random.Generator,
) -> _Calls:
    """Injected calls: arrays of one value each, unless given per call."""
    n = start.size
    callers = caller if isinstance(caller, pa.Array) else pa.array([caller] * n, pa.string())
    if disposition is None:
        disposition = np.where(duration > 0, _ANSWERED, _NO_ANSWER)
    if carrier is None:
        carrier = rng.choice(3, size=n, p=[0.4, 0.3, 0.3])
    return _Calls(
        start=start.astype(np.int64),
        caller=callers,
        caller_dest=np.full(n, caller_dest, dtype=np.int16),
        zone=np.full(n, zone, dtype=np.int8),
        dest=np.broadcast_to(np.asarray(dest, dtype=np.int16), (n,)).copy(),
        national=national.astype(np.int64),
        premium=np.full(n, premium),
        call_type=np.full(n, call_type, dtype=np.int8),
        carrier=np.asarray(carrier, dtype=np.int8),
        disposition=np.asarray(disposition, dtype=np.int8),
        duration=duration.astype(np.int64),
        markup_pct=np.full(n, 150, dtype=np.int64),
        self_call=np.full(n, self_call),
    )


# ---------------------------------------------------------------------------- table


def _decimal(units: np.ndarray, scale: int, valid: np.ndarray) -> pa.Array:
    """A DECIMAL(38, scale) array of ``units`` x 10^-scale, built from its 128-bit words."""
    words = np.empty((units.size, 2), dtype="<i8")
    words[:, 0] = units
    words[:, 1] = units >> 63
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.Array.from_buffers(
        pa.decimal128(38, scale), units.size, [bitmap, pa.py_buffer(words.tobytes())]
    )


def _strings(
    values: Sequence[str | None], index: np.ndarray, valid: np.ndarray | None = None
) -> pa.Array:
    """A dictionary-encoded string column (Parquet stores it as strings, DuckDB reads VARCHAR)."""
    codes = np.asarray(index, dtype=np.int32)
    present = np.array([v is not None for v in values])[codes]
    if valid is not None:
        present &= valid
    dictionary = pa.array([v or "" for v in values], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes, mask=~present), dictionary)


def _constant(value: str, n: int) -> pa.Array:
    return _strings([value], np.zeros(n, dtype=np.int32))


def _build(calls: _Calls, day: dt.date) -> pa.Table:
    """The cdrs-shaped table: the pipeline's columns and types, sorted by start time."""
    order = np.lexsort((np.arange(len(calls)), calls.start))
    c = calls.take(order)
    n = len(c)
    dest = c.dest.astype(np.int64)
    answered = (c.disposition == _ANSWERED) & (c.duration > 0)
    priced = c.carrier != _UNRATED_CARRIER  # unanswered calls are priced at 0
    minutes = np.where(answered, (c.duration + 59) // 60, 0)
    rate_milli = np.where(
        c.premium,
        _PREMIUM_RATE_MILLI,
        np.select(
            [c.call_type == _LOCAL, c.call_type == _NATIONAL],
            [_LOCAL_RATE_MILLI, _NATIONAL_RATE_MILLI],
            np.array([d.rate_milli for d in _DESTINATIONS])[dest],
        ),
    )
    rate_e5 = rate_milli * np.asarray(_CARRIER_RATE_PCT)[c.carrier]  # 1/100000 per minute
    cost = (rate_e5 * minutes + 5) // 10  # 1/10000, half up
    revenue = (cost * c.markup_pct * 2 + 100) // 200
    margin = revenue - cost
    status = np.where(
        ~answered, 0, np.where(c.carrier == _UNRATED_CARRIER, 1, 2)
    )  # unanswered, unknown_carrier, rated
    start_us = c.start * 1_000_000
    zone_offsets = _zone_offsets(day)
    known_zone = c.zone >= 0
    local_us = start_us + zone_offsets[np.where(known_zone, c.zone, 0)] * 1_000_000
    called = _e164(c.dest, c.national)
    called = pc.if_else(pa.array(c.self_call), c.caller, called)
    country = _strings([d.country for d in _DESTINATIONS], dest)
    caller_country = _strings([d.country for d in _DESTINATIONS], c.caller_dest.astype(np.int64))
    called_type = np.where(
        c.premium, 2, np.where(np.asarray([d.key == "US" for d in _DESTINATIONS])[dest], 3, 0)
    )
    called_type = np.where((called_type == 0) & (c.national % 10 >= 6), 1, called_type)
    flags = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(c.self_call)]).astype(np.int32)),
        pa.array(["self_call"] * int(c.self_call.sum()), pa.string()),
    )
    empty_lists = pa.ListArray.from_arrays(
        pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string())
    )
    zone_names = _strings(_ZONES, np.where(known_zone, c.zone, 0), known_zone)
    zone_lists = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(known_zone)]).astype(np.int32)),
        pa.array(list(_ZONES), pa.string()).take(pa.array(c.zone[known_zone].astype(np.int32))),
    )
    seq = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), 7, "0")
    label = f"fs-{day.strftime('%Y%m%d')}-"
    nulls = pa.nulls(n, pa.string())
    columns: dict[str, pa.Array] = {
        "call_id": pc.binary_join_element_wise(pa.scalar(label), seq, ""),
        "caller_number": c.caller,
        "called_number": called,
        "start_time": pa.array(start_us, pa.timestamp("us", tz="UTC")),
        "end_time": pa.array(start_us + c.duration * 1_000_000, pa.timestamp("us", tz="UTC")),
        "duration_seconds": pa.array(c.duration, pa.int64()),
        "carrier_id": _strings(_CARRIERS, c.carrier.astype(np.int64)),
        "call_type": _strings(_CALL_TYPES, c.call_type.astype(np.int64)),
        "country_code": country,
        "disposition": _strings(_DISPOSITIONS, c.disposition.astype(np.int64)),
        "call_date": pa.array(np.full(n, (day - _EPOCH).days, dtype=np.int32), pa.date32()),
        "called_country": country,
        "caller_country": caller_country,
        "flags": flags,
        "derived_fields": empty_lists,
        "source_file": _constant(f"{SCENARIO_BATCH}.parquet", n),
        "source_row": pa.array(np.arange(1, n + 1), pa.int64()),
        "batch_id": _constant(SCENARIO_BATCH, n),
        "billable_seconds": pa.array(minutes * 60, pa.int64(), mask=~priced),
        "rate_prefix": _strings([d.cc for d in _DESTINATIONS], dest, answered & priced),
        "destination": _strings([d.name or d.key for d in _DESTINATIONS], dest, answered & priced),
        "rate_per_minute": _decimal(rate_e5, 5, answered & priced),
        "connection_fee": _decimal(np.zeros(n, np.int64), 5, answered & priced),
        "cost": _decimal(np.where(answered, cost, 0), 4, priced),
        "retail_prefix": nulls,
        "retail_destination": nulls,
        "retail_rate_per_minute": _decimal(np.zeros(n, np.int64), 5, np.zeros(n, bool)),
        "retail_billable_seconds": pa.array(minutes * 60, pa.int64(), mask=~priced),
        "revenue": _decimal(np.where(answered, revenue, 0), 4, priced),
        "margin": _decimal(np.where(answered, margin, 0), 4, priced),
        "rating_status": _strings(("unanswered", "unknown_carrier", "rated"), status),
        "deck_version": _constant(SCENARIO_BATCH, n),
        "called_country_name": _strings([d.name for d in _DESTINATIONS], dest),
        "called_number_type": _strings(
            ("fixed_line", "mobile", "premium_rate", "fixed_line_or_mobile"), called_type
        ),
        "called_region": nulls,
        "called_carrier": nulls,
        "caller_number_type": _constant("mobile", n),
        "caller_region": nulls,
        "caller_carrier": nulls,
        "caller_timezones": zone_lists,
        "caller_timezone": zone_names,
        "local_start_time": pa.array(local_us, pa.timestamp("us"), mask=~known_zone),
        "batch_seq": pa.array(np.ones(n, dtype=np.int64), pa.int64()),
    }
    return pa.table(columns)


# ---------------------------------------------------------------------------- cases


@dataclass
class _Day:
    """What an injector may look at and change: one day's clean calls, in array form."""

    date: dt.date
    ordinal: int  # 0, 1, 2, ... among the injected days
    calls: _Calls
    pop: _Population
    rng: np.random.Generator
    reserved: set[int] = field(default_factory=set)  # callers already used by a case
    extra: list[_Calls] = field(default_factory=list)
    cases: list[InjectedCase] = field(default_factory=list)

    @property
    def start(self) -> int:
        return _day_start(self.date)

    def at(self, hour: int, minute: int = 0) -> int:
        return self.start + hour * 3600 + minute * 60

    def add(self, calls: _Calls, case: InjectedCase) -> None:
        self.extra.append(calls)
        self.cases.append(case)

    def case(self, rule: str, subject_type: str, subject: str, calls: _Calls, note: str) -> None:
        end = calls.start + calls.duration
        self.add(
            calls,
            InjectedCase(
                rule,
                subject_type,
                subject,
                self.date.isoformat(),
                _instant(int(calls.start.min())),
                _instant(int(end.max())),
                note,
            ),
        )

    def pick_caller(
        self, home: str, *, zone: str | None = None, busiest: bool = False, business: bool = False
    ) -> int:
        """An established caller of ``home`` (the busiest free one, or a random free one)."""
        pop = self.pop
        ok = pop.home == next(i for i, h in enumerate(_HOMES) if h.key == home)
        ok &= pop.zone == _ZONE[zone] if zone else pop.zone >= 0
        if business:
            ok &= pop.business
        candidates = np.flatnonzero(ok)
        candidates = candidates[~np.isin(candidates, list(self.reserved))]
        if busiest:
            pick = int(candidates[np.argmax(pop.weight[candidates])])
        else:
            # Ordinary callers: between the median and the 90th percentile of activity.
            w = pop.weight[candidates]
            mid = candidates[(w >= np.quantile(w, 0.5)) & (w <= np.quantile(w, 0.9))]
            pick = int(mid[self.rng.integers(0, mid.size)])
        self.reserved.add(pick)
        return pick


def _instant(epoch_seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC)


def _inject_wangiri(day: _Day) -> None:
    hour = (3, 14, 21)[day.ordinal % 3]
    rng = day.rng
    calls = int(rng.integers(60, 81))
    span = int(rng.integers(20, 36)) * 60
    start = day.at(hour, 5) + np.sort(rng.integers(0, span, calls))
    market = _DEST[("GB", "US", "DE")[day.ordinal % 3]]
    national = _national_numbers(rng, np.full(calls, _DESTINATIONS[market].digits))
    duration = np.where(rng.random(calls) < 0.15, rng.integers(1, 4, calls), 0)
    caller = f"+232{76_000_000 + int(rng.integers(0, 999_999)):08d}"
    injected = _new_calls(
        start,
        caller,
        caller_dest=_DEST["SL"],
        zone=-1,
        dest=market,
        national=national,
        call_type=_INTERNATIONAL,
        duration=duration,
        rng=rng,
    )
    day.case("wangiri", "caller", caller, injected, f"{calls} one-ring calls in {span // 60} min")


def _inject_irsf(day: _Day) -> None:
    hour = (10, 16, 19)[day.ordinal % 3]
    kind = ("+881", "premium", "SO")[day.ordinal % 3]
    rng = day.rng
    calls = 8
    start = day.at(hour, 2) + np.sort(rng.integers(0, 40 * 60, calls))
    duration = rng.integers(15 * 60, 35 * 60, calls)
    caller = f"+1{int(rng.integers(2_020_000_000, 8_990_000_000))}"
    if kind == "premium":
        dest = _DEST["US"]
        national = _PREMIUM_BASE + rng.integers(0, 10**7, calls)
        call_type = _NATIONAL
    else:
        dest = _DEST[kind]
        national = _national_numbers(rng, np.full(calls, _DESTINATIONS[dest].digits))
        call_type = _INTERNATIONAL
    injected = _new_calls(
        start,
        caller,
        caller_dest=_DEST["US"],
        zone=_ZONE["America/New_York"],
        dest=dest,
        national=national,
        call_type=call_type,
        duration=duration,
        premium=kind == "premium",
        rng=rng,
    )
    day.case("irsf", "caller", caller, injected, f"8 long calls to {kind}")


_ORDINARY_FOREIGN = ("PH", "NG", "BR", "MX", "IN", "CN", "JP", "PL")


def _inject_spend_velocity(day: _Day) -> None:
    # (home, zone, local hour, calls, minutes per call): off hours twice, office hours once.
    home, zone, local_hour, calls, minutes = (
        ("US", "America/New_York", 2, 22, 12),
        ("GB", "Europe/London", 11, 30, 16),
        ("DE", "Europe/Berlin", 23, 24, 12),
    )[day.ordinal % 3]
    rng = day.rng
    victim = day.pick_caller(home, zone=zone, busiest=True, business=True)
    offset = int(_zone_offsets(day.date)[_ZONE[zone]])
    hour = ((local_hour * 3600 - offset) % 86_400) // 3600
    start = day.at(int(hour), 3) + np.sort(rng.integers(0, 45 * 60, calls))
    dest = rng.choice([_DEST[k] for k in _ORDINARY_FOREIGN], size=calls)
    digits = np.array([_DESTINATIONS[d].digits for d in dest])
    duration = minutes * 60 + rng.integers(-120, 120, calls)
    injected = _new_calls(
        start,
        day.pop.number.take(pa.array(np.full(calls, victim))),
        caller_dest=_DEST[home],
        zone=_ZONE[zone],
        dest=dest,
        national=_national_numbers(rng, digits),
        call_type=_INTERNATIONAL,
        duration=duration,
        rng=rng,
    )
    subject = str(day.pop.number[victim])
    day.case(
        "spend_velocity", "caller", subject, injected, f"{calls} calls at {local_hour}:00 local"
    )


def _inject_traffic_anomaly(day: _Day) -> None:
    kind = ("asr", "surge", "drop")[day.ordinal % 3]
    hour = (15, 12, 9)[day.ordinal % 3]
    calls, rng = day.calls, day.rng
    in_hour = (calls.start >= day.at(hour)) & (calls.start < day.at(hour + 1))
    lo, hi = _instant(day.at(hour)), _instant(day.at(hour + 1) - 1)
    if kind == "asr":
        carrier = 1
        hit = np.flatnonzero(in_hour & (calls.carrier == carrier) & (calls.disposition == 0))
        hit = hit[rng.random(hit.size) < 0.9]
        calls.disposition[hit] = _FAILED
        calls.duration[hit] = 0
        subject_type, subject, note = "carrier", _CARRIERS[carrier], "answer rate collapses"
    elif kind == "drop":
        carrier = 2
        lost = in_hour & (calls.carrier == carrier) & (rng.random(len(calls)) < 0.9)
        day.calls = calls.take(np.flatnonzero(~lost))
        subject_type, subject, note = "carrier", _CARRIERS[carrier], "90% of calls lost"
    else:
        dest = _DEST["FR"]
        usual = int((in_hour & (calls.dest == dest)).sum())
        extra = max(60, 4 * usual)
        donors = np.flatnonzero(in_hour & (calls.call_type == _INTERNATIONAL))
        rows = rng.choice(donors, size=extra, replace=True)
        surge = calls.take(rows)
        surge.dest[:] = dest
        surge.national = _national_numbers(rng, np.full(extra, _DESTINATIONS[dest].digits))
        surge.start = day.at(hour) + rng.integers(0, 3600, extra)
        day.extra.append(surge)
        subject_type, subject, note = "destination", "FR", f"{extra} extra calls to FR"
    day.cases.append(
        InjectedCase("traffic_anomaly", subject_type, subject, day.date.isoformat(), lo, hi, note)
    )


def _inject_long_call(day: _Day) -> None:
    hour, hours = ((2, 5), (9, 7), (16, 13))[day.ordinal % 3]
    home = ("GB", "DE", "US")[day.ordinal % 3]
    caller = day.pick_caller(home)
    rng = day.rng
    injected = _new_calls(
        np.array([day.at(hour, int(rng.integers(0, 50)))]),
        day.pop.number.take(pa.array([caller])),
        caller_dest=_DEST[home],
        zone=int(day.pop.zone[caller]),
        dest=_DEST[home],
        national=_national_numbers(rng, np.array([_DESTINATIONS[_DEST[home]].digits])),
        call_type=_NATIONAL,
        duration=np.array([hours * 3600 + int(rng.integers(60, 900))]),
        rng=rng,
    )
    day.case("long_call", "caller", str(day.pop.number[caller]), injected, f"{hours} h call")


def _inject_self_call(day: _Day) -> None:
    hour = (5, 13, 20)[day.ordinal % 3]
    home = ("DE", "US", "GB")[day.ordinal % 3]
    caller = day.pick_caller(home)
    rng = day.rng
    start = day.at(hour, 10) + np.sort(rng.integers(0, 1800, 2))
    injected = _new_calls(
        start,
        day.pop.number.take(pa.array([caller, caller])),
        caller_dest=_DEST[home],
        zone=int(day.pop.zone[caller]),
        dest=_DEST[home],
        national=np.full(2, day.pop.national[caller]),
        call_type=_LOCAL,
        duration=rng.integers(5, 60, 2),
        self_call=True,
        rng=rng,
    )
    day.case("self_call", "caller", str(day.pop.number[caller]), injected, "2 calls to itself")


def _inject_negative_margin(day: _Day) -> None:
    hour = (8, 17, 4)[day.ordinal % 3]
    carrier = day.ordinal % 3
    calls = day.calls
    in_hour = (calls.start >= day.at(hour)) & (calls.start < day.at(hour + 1))
    rows = np.flatnonzero(in_hour & (calls.carrier == carrier) & (calls.duration >= 60))
    rows = np.sort(day.rng.choice(rows, size=min(12, rows.size), replace=False))
    calls.markup_pct[rows] = 80
    end = calls.start[rows] + calls.duration[rows]
    day.cases.append(
        InjectedCase(
            "negative_margin",
            "carrier",
            _CARRIERS[carrier],
            day.date.isoformat(),
            _instant(int(calls.start[rows].min())),
            _instant(int(end.max())),
            f"{rows.size} calls sold at 0.8 x cost",
        )
    )


# Modifying injectors first (they change clean rows), then those that add rows.
INJECTORS: dict[str, Callable[[_Day], None]] = {
    "traffic_anomaly": _inject_traffic_anomaly,
    "negative_margin": _inject_negative_margin,
    "wangiri": _inject_wangiri,
    "irsf": _inject_irsf,
    "spend_velocity": _inject_spend_velocity,
    "long_call": _inject_long_call,
    "self_call": _inject_self_call,
}


# --------------------------------------------------------------------------- driver


def _rows_for(options: ScenarioOptions, day: dt.date) -> int:
    factor = _WEEKEND_FACTOR if day.isoweekday() >= 6 else 1.0
    return round(options.rows_per_day * factor)


def generate_day(
    options: ScenarioOptions, offset: int, pop: _Population | None = None
) -> tuple[pa.Table, list[InjectedCase]]:
    """Day ``offset`` of the scenario as a cdrs-shaped table, and the cases injected in it."""
    if pop is None:
        pop = _population(np.random.default_rng([options.seed, 0]), _callers(options))
    day = options.start_date + dt.timedelta(days=offset)
    rng = np.random.default_rng([options.seed, 1, offset])
    calls = _clean_calls(pop, day, _rows_for(options, day), rng)
    cases: list[InjectedCase] = []
    if offset in options.inject_days:
        state = _Day(day, options.inject_days.index(offset), calls, pop, rng)
        for inject in INJECTORS.values():
            inject(state)
        calls = _concat([state.calls, *state.extra])
        cases = state.cases
    return _build(calls, day), cases


def _callers(options: ScenarioOptions) -> int:
    return options.callers or max(50, options.rows_per_day // 5)


def generate_scenario(
    warehouse: Warehouse, options: ScenarioOptions | None = None
) -> list[InjectedCase]:
    """Write every day of the scenario into ``warehouse``'s cdrs; returns the injected cases.

    Each day is one file, ``cdrs/call_date=<day>/scenario.parquet`` (replaced if present).
    """
    options = options or ScenarioOptions()
    pop = _population(np.random.default_rng([options.seed, 0]), _callers(options))
    cases: list[InjectedCase] = []
    for offset in range(options.days):
        table, day_cases = generate_day(options, offset, pop)
        path = warehouse.cdrs_file(options.day(offset), SCENARIO_BATCH)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        cases += day_cases
    return cases
