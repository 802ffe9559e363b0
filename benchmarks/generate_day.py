"""A realistic day of CDRs as landing CSV files, and large rate decks, for the pipeline bench.

One UTC day of calls in the contract's input fields (``call_id``, ``caller_number``,
``called_number``, ``start_time``, ``end_time``, ``duration_seconds``, ``carrier_id``,
``call_type``, ``country_code``, ``disposition``), every value written as a source would:

* numbers in E.164 from disjoint caller and called pools (``common.synthesise_numbers``:
  numbers valid for phonenumbers in 44 regions, 41 country calling codes); by default about
  200,000 distinct callers and 2,000,000 distinct called numbers (a fifth of the rows each,
  at most those), every number of a pool used at least once; callers are skewed (some call
  much more than others), 60% of the other calls stay in the caller's country;
* start times following a day's traffic curve (quiet nights, a business-day plateau), in
  four ISO 8601 styles (``Z``, ``+00:00``, ``+02:00`` on a local clock, no offset);
  80% of rows give both ``end_time`` and ``duration_seconds``, 10% only one of them;
* 15% of calls unanswered (``NO_ANSWER``, ``BUSY``, ``FAILED``, ``CONGESTION``, duration 0),
  answered calls lasting about 3 minutes on average (exponential, at most 4 hours);
* five carriers (``carrier_001`` ... ``carrier_005``, one deck each) and 1% of calls on a
  carrier without a deck (``carrier_999``: ``unknown_carrier``);
* ``call_type`` given on 60% of rows, ``country_code`` on 50%, ``disposition`` on 97%,
  some in lower case; 2% of rows without a caller;
* 2% refused rows cycling through every refusal reason of the contract (each bad row breaks
  exactly one rule), plus ``--malformed-per-file`` lines with the wrong number of fields in
  each file (``malformed_record``; they count among the rows);
* 2% duplicates: rows that repeat the ``call_id`` of an earlier accepted row of the day (half
  within about 20 rows, half anywhere earlier), a third of them with another carrier or a
  corrected duration, the rest identical.

Every per-row step is a numpy or pyarrow operation. The same seed gives the same files. The
day's rows come in start-time order, split into ``--files`` consecutive CSV files.

The rates folder holds ``config.toml`` (markup 1.5), ``carriers.csv``, five cost decks and a
retail deck of ``--prefixes`` rows each (``common.write_rates``: country codes of the 44
regions extended by 1-5 digits, weighted by traffic; some typed rows, 5% of rates changing at
noon of the day).

Besides the day, ``--incremental-rows`` writes one more file of the same day (new calls from
the same number pools) and ``--batching-rows`` one table written twice: as one file and as
``--batching-files`` files. ``manifest.json`` lists every file and the counts the pipeline
must report (rows read, accepted, rejected, duplicate, kept).

    python benchmarks/generate_day.py --rows 1000000 --out DIR
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from common import (
    HOME_CALLED_SHARES,
    HOME_CALLER_SHARES,
    REGIONS,
    allocate,
    carrier_ids,
    region_shares,
    spot_check,
    synthesise_numbers,
    write_rates,
)

from cdr_assets.lib.readers import CANONICAL_FIELDS

# The contract's input fields, in the order the files are written.
FIELDS: tuple[str, ...] = CANONICAL_FIELDS
DEFAULT_DAY = datetime.date(2026, 11, 24)
MAX_CALLERS = 200_000
MAX_CALLED = 2_000_000
DOMESTIC_SHARE = 0.6
CALLER_ABSENT_SHARE = 0.02
CALL_TYPE_GIVEN_SHARE = 0.6
COUNTRY_GIVEN_SHARE = 0.5
DISPOSITION_ABSENT_SHARE = 0.03
LOWER_CASE_SHARE = 0.05
MEAN_ANSWERED_SECONDS = 180.0
LONGEST_CALL_SECONDS = 4 * 3600
UNKNOWN_CARRIER = "carrier_999"
CARRIER_WEIGHTS = (0.30, 0.25, 0.20, 0.15, 0.09)  # the decked carriers; 1% unknown
UNKNOWN_CARRIER_SHARE = 0.01

# Relative call volume per UTC hour: quiet nights, a business-day plateau 9-18h.
HOURLY_TRAFFIC = (
    0.15, 0.10, 0.08, 0.07, 0.08, 0.12, 0.25, 0.45, 0.75, 1.00, 1.00, 1.00,
    0.95, 1.00, 1.00, 1.00, 0.98, 0.95, 0.90, 0.65, 0.50, 0.40, 0.30, 0.20,
)  # fmt: skip

UNANSWERED = ("NO_ANSWER", "BUSY", "FAILED", "CONGESTION")
UNANSWERED_WEIGHTS = (0.55, 0.25, 0.12, 0.08)

# How a row writes its instants: (suffix, offset of its clock from UTC in seconds, weight).
TIME_STYLES: tuple[tuple[str, int, float], ...] = (
    ("Z", 0, 0.70),
    ("+00:00", 0, 0.20),
    ("+02:00", 7200, 0.05),
    ("", 0, 0.05),  # read in the source's time zone, UTC by default
)
BOTH, END_ONLY, DURATION_ONLY = 0, 1, 2
TIME_FIELDS_WEIGHTS = (0.80, 0.10, 0.10)

# Refused rows: (kind, column, texts cycled over the rows of that kind; () = absent).
# Each breaks exactly one rule of the contract; the kind names the reason code.
BAD_KINDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("missing_field:call_id", "call_id", ()),
    ("missing_field:called_number", "called_number", ()),
    ("missing_field:start_time", "start_time", ()),
    ("missing_field:carrier_id", "carrier_id", ()),
    ("missing_field:duration_seconds", "duration_seconds", ()),
    ("invalid_number:called_number", "called_number", ("abc", "+999123", "+4412")),
    ("invalid_timestamp:start_time", "start_time", ("yesterday", "2026-02-30T10:00:00Z")),
    ("invalid_timestamp:end_time", "end_time", ("soon", "31/12/2026 25:00")),
    ("end_before_start", "duration_seconds", ()),  # end_time set before start_time
    ("invalid_duration", "duration_seconds", ("12.5", "90000", "-5")),
    ("invalid_call_type", "call_type", ("mobile", "premium")),
    ("invalid_country_code", "country_code", ("XX", "QQ")),
    ("invalid_disposition", "disposition", ("HUNG_UP",)),
)
MALFORMED = "malformed_record"


@dataclass(frozen=True)
class Pools:
    """Caller and called numbers (E.164), grouped by region in ``REGIONS`` order."""

    caller: pa.Array
    caller_region: np.ndarray  # index into REGIONS, one per caller
    called: pa.Array
    called_start: np.ndarray  # offset of each region's block in ``called``, len(REGIONS) + 1

    @property
    def called_region(self) -> np.ndarray:
        return np.repeat(np.arange(len(REGIONS), dtype=np.int16), np.diff(self.called_start))


def number_pools(seed: int, callers: int, called: int) -> Pools:
    rng = np.random.default_rng([seed, 0])
    caller, called_numbers, _ = synthesise_numbers(rng, callers, called)
    invalid = spot_check(rng, pa.concat_arrays([caller, called_numbers]))
    if invalid:
        raise SystemExit(f"{invalid} synthesised numbers of a sample are not valid")
    caller_counts = allocate(callers, region_shares(HOME_CALLER_SHARES))
    called_counts = allocate(called, region_shares(HOME_CALLED_SHARES))
    return Pools(
        caller=caller,
        caller_region=np.repeat(np.arange(len(REGIONS), dtype=np.int16), caller_counts),
        called=called_numbers,
        called_start=np.concatenate([[0], np.cumsum(called_counts)]).astype(np.int64),
    )


def deck_codes() -> dict[str, int]:
    """Country calling codes of the regions, weighted by their share of called numbers."""
    codes: dict[str, int] = {}
    for region, share in zip(REGIONS, region_shares(HOME_CALLED_SHARES), strict=True):
        code = str(phonenumbers.country_code_for_region(region))
        codes[code] = codes.get(code, 0) + round(float(share) * 1000)
    return codes


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Batch:
    """Generated rows (without the malformed lines) and what the pipeline must find."""

    table: pa.Table
    bad_rows: dict[str, int]  # kind -> rows
    duplicates: int


def _categorical(rng: np.random.Generator, weights: tuple[float, ...], size: int) -> np.ndarray:
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.searchsorted(cumulative / cumulative[-1], rng.random(size), side="right").astype(
        np.int8
    )


def _uses(rng: np.random.Generator, pool: int, rows: int, skew: float) -> np.ndarray:
    """Row -> index into a pool of ``pool`` entries: every entry once when rows allow, the
    other rows drawn with a skew (``u ** skew`` over a shuffled pool; 1 is uniform)."""
    first = np.arange(min(pool, rows), dtype=np.int64)
    order = rng.permutation(pool)
    rest = order[(pool * rng.random(rows - first.size) ** skew).astype(np.int64)]
    index = np.concatenate([first, rest])
    rng.shuffle(index)
    return index


def _called(
    rng: np.random.Generator, pools: Pools, caller_region: np.ndarray, rows: int
) -> np.ndarray:
    """Row -> called number: every number once when rows allow; the other rows domestic
    (a number of the caller's region) at DOMESTIC_SHARE, else any number of the pool."""
    size = len(pools.called)
    sizes = np.diff(pools.called_start)
    index = (rng.random(rows) * size).astype(np.int64)
    domestic = (rng.random(rows) < DOMESTIC_SHARE) & (sizes[caller_region] > 0)
    region = caller_region[domestic]
    index[domestic] = pools.called_start[region] + (rng.random(region.size) * sizes[region]).astype(
        np.int64
    )
    forced = rng.permutation(rows)[: min(size, rows)]
    index[forced] = np.arange(forced.size)
    return index


def _text(values: list[str] | pa.Array, index: np.ndarray, absent: np.ndarray) -> pa.Array:
    table = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    return table.take(pa.array(index, mask=absent))


def _replace(column: pa.Array, rows: np.ndarray, texts: tuple[str, ...]) -> pa.Array:
    """``column`` with the given rows set to ``texts`` (cycled)."""
    if rows.size == 0:
        return column
    mask = np.zeros(len(column), dtype=bool)
    mask[rows] = True
    values = pa.array(texts, pa.string()).take(pa.array(np.arange(rows.size) % len(texts)))
    # Rows come sorted so that the replacements follow the mask's order.
    return pc.replace_with_mask(column, pa.array(mask), values)


def _instants(
    seconds: np.ndarray, style: np.ndarray, absent: np.ndarray, day: datetime.date
) -> pa.Array:
    """ISO 8601 text of instants given in seconds from the day's midnight UTC."""
    offsets = np.array([offset for _, offset, _ in TIME_STYLES], dtype=np.int64)[style]
    local = seconds + offsets
    first = -1  # local clocks reach into the day before and the days after
    span = int(local.max(initial=0)) // 86_400 + 1 - first
    dates = pa.array(
        [(day + datetime.timedelta(days=first + d)).isoformat() + "T" for d in range(span)]
    )
    clock = pa.array(
        [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)], pa.string()
    )
    suffix = pa.array([suffix for suffix, _, _ in TIME_STYLES], pa.string())
    return pc.binary_join_element_wise(
        dates.take(pa.array(local // 86_400 - first, mask=absent)),
        clock.take(pa.array(local % 86_400)),
        suffix.take(pa.array(style.astype(np.int64))),
        "",
    )


def generate_rows(
    pools: Pools,
    rows: int,
    seed: int,
    stream: int,
    day: datetime.date,
    id_prefix: str,
    carriers: int = 5,
    unanswered_share: float = 0.15,
    bad_share: float = 0.02,
    duplicate_share: float = 0.02,
) -> Batch:
    """``rows`` calls of ``day`` in start-time order (the module docstring says how)."""
    rng = np.random.default_rng([seed, stream])
    n = rows
    start = np.sort(
        _categorical(rng, HOURLY_TRAFFIC, n).astype(np.int64) * 3600 + rng.integers(0, 3600, n)
    )

    # Which rows are refused (bad) and which repeat an earlier accepted call (duplicate).
    n_bad, n_dup = round(n * bad_share), round(n * duplicate_share)
    picked = rng.permutation(n)[: n_bad + n_dup]
    kind = np.full(n, -1, dtype=np.int8)
    kind[picked[:n_bad]] = np.arange(n_bad) % len(BAD_KINDS)
    duplicate = np.zeros(n, dtype=bool)
    duplicate[picked[n_bad:]] = True
    good = (kind < 0) & ~duplicate
    last_good = np.maximum.accumulate(np.where(good, np.arange(n), -1))
    dup_rows = np.flatnonzero(duplicate)
    near = rng.integers(1, 21, dup_rows.size)
    far = (rng.random(dup_rows.size) * np.maximum(dup_rows, 1)).astype(np.int64) + 1
    delay = np.where(rng.random(dup_rows.size) < 0.5, near, far)
    source = last_good[np.maximum(dup_rows - delay, 0)]
    orphan = source < 0  # no accepted row before it: it stays an ordinary call
    duplicate[dup_rows[orphan]] = False
    dup_rows, source = dup_rows[~orphan], source[~orphan]
    seq = np.cumsum(~duplicate) - 1  # call numbers, repeats excluded

    caller = _uses(rng, len(pools.caller), n, skew=2.0)
    caller_region = pools.caller_region[caller]
    called = _called(rng, pools, caller_region, n)
    called_region = pools.called_region[called]
    answered = rng.random(n) >= unanswered_share
    disposition = np.where(answered, 0, 1 + _categorical(rng, UNANSWERED_WEIGHTS, n)).astype(
        np.int8
    )
    duration = np.where(
        answered,
        np.clip(np.rint(rng.exponential(MEAN_ANSWERED_SECONDS, n)), 1, LONGEST_CALL_SECONDS),
        0,
    ).astype(np.int64)
    carrier = _categorical(
        rng, (*(w * (1 - UNKNOWN_CARRIER_SHARE) for w in CARRIER_WEIGHTS), UNKNOWN_CARRIER_SHARE), n
    )
    carrier = np.where(carrier >= len(CARRIER_WEIGHTS), carriers, carrier % carriers).astype(
        np.int8
    )
    time_fields = _categorical(rng, TIME_FIELDS_WEIGHTS, n)
    time_style = _categorical(rng, tuple(w for _, _, w in TIME_STYLES), n)
    caller_absent = rng.random(n) < CALLER_ABSENT_SHARE
    call_type_absent = (rng.random(n) >= CALL_TYPE_GIVEN_SHARE) | caller_absent
    country_absent = rng.random(n) >= COUNTRY_GIVEN_SHARE
    disposition_absent = rng.random(n) < DISPOSITION_ABSENT_SHARE
    lower = rng.random(n) < LOWER_CASE_SHARE
    # Changed repeats: re-sent under another carrier, or with a corrected duration.
    change = rng.integers(0, 3, dup_rows.size)  # 0: identical, 1: carrier, 2: duration

    per_row = [
        start, seq, caller, called, caller_region, called_region, disposition, duration,
        carrier, time_fields, time_style, caller_absent, call_type_absent, country_absent,
        disposition_absent, lower,
    ]  # fmt: skip
    for values in per_row:
        values[dup_rows] = values[source]
    carrier[dup_rows] = np.where(
        change == 1, (carrier[dup_rows] + 1) % carriers, carrier[dup_rows]
    ).astype(np.int8)
    fixed = dup_rows[change == 2]
    duration[fixed] += rng.integers(10, 120, fixed.size)
    disposition[fixed] = 0  # a corrected duration makes the call answered

    end = start + duration
    bad_rows = {name: np.flatnonzero(kind == k) for k, (name, _, _) in enumerate(BAD_KINDS)}
    ebs = bad_rows["end_before_start"]
    end[ebs] = start[ebs] - rng.integers(1, 600, ebs.size)
    time_fields[ebs] = END_ONLY

    absent = {name: np.zeros(n, dtype=bool) for name in FIELDS}
    absent["caller_number"] = caller_absent
    absent["end_time"] = time_fields == DURATION_ONLY
    absent["duration_seconds"] = time_fields == END_ONLY
    absent["call_type"] = call_type_absent
    absent["country_code"] = country_absent
    absent["disposition"] = disposition_absent
    for name, column, texts in BAD_KINDS:
        if not texts:
            absent[column][bad_rows[name]] = True
    absent["end_time"][bad_rows["missing_field:duration_seconds"]] = True
    # An unreadable end beside a duration breaks one rule only.
    absent["duration_seconds"][bad_rows["invalid_timestamp:end_time"]] = False

    regions_upper = list(REGIONS)
    columns: dict[str, pa.Array] = {
        "call_id": pc.binary_join_element_wise(
            pa.scalar(id_prefix),
            pc.utf8_lpad(pc.cast(pa.array(seq, mask=absent["call_id"]), pa.string()), 9, "0"),
            "",
        ),
        "caller_number": _text(pools.caller, caller, absent["caller_number"]),
        "called_number": _text(pools.called, called, absent["called_number"]),
        "start_time": _instants(start, time_style, absent["start_time"], day),
        "end_time": _instants(end, time_style, absent["end_time"], day),
        "duration_seconds": _text(
            [str(s) for s in range(int(duration.max(initial=0)) + 1)],
            duration,
            absent["duration_seconds"],
        ),
        "carrier_id": _text(
            [*carrier_ids(carriers), UNKNOWN_CARRIER], carrier, absent["carrier_id"]
        ),
        "call_type": _text(
            ["international", "national", "INTERNATIONAL", "National"],
            np.where(caller_region != called_region, 0, 1) + 2 * lower,
            absent["call_type"],
        ),
        "country_code": _text(
            regions_upper + [r.lower() for r in regions_upper],
            called_region.astype(np.int64) + len(REGIONS) * lower,
            absent["country_code"],
        ),
        "disposition": _text(
            ["ANSWERED", *UNANSWERED, "answered", *(d.lower() for d in UNANSWERED)],
            disposition.astype(np.int64) + (1 + len(UNANSWERED)) * lower,
            absent["disposition"],
        ),
    }
    for name, column, texts in BAD_KINDS:
        if texts:
            columns[column] = _replace(columns[column], bad_rows[name], texts)
    table = pa.table({name: columns[name] for name in FIELDS})
    return Batch(
        table=table,
        bad_rows={name: int(rows_.size) for name, rows_ in bad_rows.items()},
        duplicates=int(dup_rows.size),
    )


# --------------------------------------------------------------------------- files


def _malformed_line(table: pa.Table, row: int) -> bytes:
    """A record cut short after three fields, as a truncated export would leave it."""
    values = [table[name][row].as_py() or "" for name in ("call_id", "called_number", "start_time")]
    return (",".join(values) + "\n").encode()


def write_csv_files(
    batch: Batch,
    folder: Path,
    stem: str,
    files: int,
    malformed: int,
    seed: int,
) -> dict[str, Any]:
    """The rows as ``files`` consecutive CSV files ``{stem}_{i:04d}.csv`` (header, null =
    empty field) with ``malformed`` short lines spread over them (as evenly as the files
    allow) at random places, each file written under a dot name and renamed. Returns the
    files and the counts the pipeline must find."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 99])
    table = batch.table
    bounds = np.linspace(0, table.num_rows, files + 1).round().astype(np.int64)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    per_file = np.diff(np.linspace(0, malformed, files + 1).round().astype(np.int64))
    names, written = [], 0
    for i in range(files):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        count = min(int(per_file[i]), hi - lo)
        written += count
        cuts = np.sort(rng.choice(np.arange(lo, hi), size=count, replace=False)).tolist()
        name = f"{stem}_{i:04d}.csv" if files > 1 else f"{stem}.csv"
        temporary = folder / f".{name}.part"
        with pa.OSFile(str(temporary), "wb") as sink:
            sink.write((",".join(FIELDS) + "\n").encode())
            at = lo
            for cut in [*cuts, hi]:
                if cut > at:
                    pacsv.write_csv(table.slice(at, cut - at), sink, options)
                if cut < hi:
                    sink.write(_malformed_line(table, int(cut)))
                at = int(cut)
        os.replace(temporary, folder / name)
        names.append(name)
    rejected = sum(batch.bad_rows.values()) + written
    rows_read = table.num_rows + written
    return {
        "folder": folder.name,
        "files": names,
        "bytes": sum((folder / name).stat().st_size for name in names),
        "expected": {
            "rows_read": rows_read,
            "rows_accepted": rows_read - rejected,
            "rows_rejected": rejected,
            "rows_duplicate": batch.duplicates,
            "rows_kept": rows_read - rejected - batch.duplicates,
            "bad_rows": {**batch.bad_rows, MALFORMED: written},
        },
    }


# --------------------------------------------------------------------------- the set


@dataclass(frozen=True)
class DayOptions:
    rows: int = 1_000_000
    files: int = 24
    seed: int = 7
    day: datetime.date = DEFAULT_DAY
    callers: int | None = None  # default: min(200,000, rows / 5)
    called: int | None = None  # default: min(2,000,000, rows / 5)
    carriers: int = 5
    prefixes: int = 50_000
    malformed_per_file: int = 1
    incremental_rows: int = 0
    batching_rows: int = 0
    batching_files: int = 100

    def pool_sizes(self) -> tuple[int, int]:
        callers = self.callers or max(1, min(MAX_CALLERS, self.rows // 5))
        called = self.called or max(len(REGIONS), min(MAX_CALLED, self.rows // 5))
        return callers, called


def generate_day(options: DayOptions, out: Path) -> dict[str, Any]:
    """Rates, the day, and the optional incremental and batching files under ``out``;
    returns (and writes as ``manifest.json``) what was written and the expected counts."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    write_rates(
        out / "rates",
        options.carriers,
        options.prefixes,
        options.seed,
        deck_codes(),
        f"{options.day.isoformat()}T12:00:00Z",
    )
    decks_done = time.perf_counter()
    callers, called = options.pool_sizes()
    pools = number_pools(options.seed, callers, called)
    pools_done = time.perf_counter()
    stamp = options.day.strftime("%Y%m%d")
    sets: dict[str, Any] = {}
    # The malformed lines count among the rows.
    malformed = min(options.files * options.malformed_per_file, options.rows // 2)
    day = generate_rows(pools, options.rows - malformed, options.seed, 1, options.day, f"c{stamp}-")
    sets["day"] = write_csv_files(
        day, out / "day", f"cdrs_{stamp}", options.files, malformed, options.seed
    )
    del day
    if options.incremental_rows:
        malformed = min(options.malformed_per_file, options.incremental_rows // 2)
        late = generate_rows(
            pools, options.incremental_rows - malformed, options.seed, 2, options.day, f"l{stamp}-"
        )
        sets["incremental"] = write_csv_files(
            late, out / "incremental", f"cdrs_{stamp}_late", 1, malformed, 2
        )
    if options.batching_rows:
        batch = generate_rows(
            pools, options.batching_rows, options.seed, 3, options.day, f"b{stamp}-"
        )
        # The same rows both ways, without malformed lines, so that only the file count differs.
        sets["batching_one"] = write_csv_files(batch, out / "batching_one", "batch", 1, 0, 3)
        sets["batching_many"] = write_csv_files(
            batch, out / "batching_many", "batch", options.batching_files, 0, 3
        )
    manifest = {
        "options": {**asdict(options), "day": options.day.isoformat()},
        "distinct_callers": callers,
        "distinct_called": called,
        "regions": len(REGIONS),
        "country_codes": len(deck_codes()),
        "seconds": {
            "decks": round(decks_done - started, 2),
            "numbers": round(pools_done - decks_done, 2),
            "rows_and_files": round(time.perf_counter() - pools_done, 2),
        },
        "sets": sets,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the day")
    parser.add_argument("--files", type=int, default=24, help="files the day is split into")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--day", default=DEFAULT_DAY.isoformat(), help="UTC day of the calls")
    parser.add_argument("--callers", type=int, default=None, help="distinct callers")
    parser.add_argument("--called", type=int, default=None, help="distinct called numbers")
    parser.add_argument("--carriers", type=int, default=5, help="cost decks (at most 998)")
    parser.add_argument("--prefixes", type=int, default=50_000, help="rows per deck")
    parser.add_argument("--malformed-per-file", type=int, default=1)
    parser.add_argument("--incremental-rows", type=int, default=0)
    parser.add_argument("--batching-rows", type=int, default=0)
    parser.add_argument("--batching-files", type=int, default=100)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.files < 1:
        parser.error("--rows and --files must be at least 1")
    options = DayOptions(
        rows=args.rows,
        files=args.files,
        seed=args.seed,
        day=datetime.date.fromisoformat(args.day),
        callers=args.callers,
        called=args.called,
        carriers=args.carriers,
        prefixes=args.prefixes,
        malformed_per_file=args.malformed_per_file,
        incremental_rows=args.incremental_rows,
        batching_rows=args.batching_rows,
        batching_files=args.batching_files,
    )
    manifest = generate_day(options, args.out)
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
