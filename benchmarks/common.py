"""Helpers shared by the benchmark scripts: synthetic phone numbers, rate decks, and the
memory of a process tree.

* Numbers: ``synthesise_numbers`` draws disjoint pools of caller and called numbers in E.164
  from ``phonenumbers.example_number_for_type`` (mobile and fixed line) of 44 regions, every
  digit after the first one drawn at random (numpy) and kept when it matches the region's
  general and type patterns and lengths from phonenumbers' metadata (the test
  ``is_valid_number`` makes, evaluated with Arrow's regex kernels). ``spot_check`` confirms a
  sample with ``is_valid_number`` itself.
* Decks: ``write_rates`` writes a rates folder (``config.toml``, ``carriers.csv``,
  ``cost/<carrier>.csv``, ``retail.csv``) of large decks: country codes extended by 1-5
  digits, some rows typed, some rates changing at an instant, assorted increments and fees.
* Memory: ``TreeSampler`` samples the summed PSS and RSS of a process and its descendants.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import PhoneMetadata, PhoneNumberType

# ------------------------------------------------------------------ synthetic numbers

# Regions of the numbers; the first three are the home markets most callers live in.
REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "CA", "FR", "AU", "JP", "CN", "IN", "BR", "MX", "ES", "IT",
    "NL", "SE", "NO", "PL", "ZA", "NG", "KE", "EG", "AE", "SA", "SG", "HK", "KR",
    "PH", "ID", "AR", "CH", "IE", "NZ", "AT", "BE", "DK", "PT", "TR", "TH", "MY",
    "VN", "IL", "CO", "CL", "FI",
)  # fmt: skip
HOME_CALLER_SHARES = {"US": 0.40, "GB": 0.25, "DE": 0.20}
HOME_CALLED_SHARES = {"US": 0.12, "GB": 0.10, "DE": 0.08}
MOBILE_SHARE = 0.6
SPOT_CHECK = 2_000  # numbers checked with phonenumbers.is_valid_number


def region_shares(home: dict[str, float]) -> np.ndarray:
    rest = (1.0 - sum(home.values())) / (len(REGIONS) - len(home))
    return np.array([home.get(region, rest) for region in REGIONS])


def allocate(total: int, shares: np.ndarray) -> np.ndarray:
    """``total`` split by ``shares`` into integers that add up to ``total``."""
    exact = shares / shares.sum() * total
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[: total - int(counts.sum())]] += 1
    return counts


def _templates(region: str) -> list[tuple[int, str, list[Any], int]]:
    """(country code, first national digit, [general, type] descriptions, length) per type."""
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        raise SystemExit(f"phonenumbers has no metadata for {region}")
    templates: list[tuple[int, str, list[Any], int]] = []
    keys: set[tuple[int, str, str, int]] = set()
    for number_type, desc in (
        (PhoneNumberType.MOBILE, metadata.mobile),
        (PhoneNumberType.FIXED_LINE, metadata.fixed_line),
    ):
        example = phonenumbers.example_number_for_type(region, number_type)
        if example is None or example.country_code is None or desc is None:
            continue
        code, pattern = example.country_code, desc.national_number_pattern
        national = phonenumbers.national_significant_number(example)
        key = (code, national[0], str(pattern), len(national))
        # Regions such as US and CA give one pattern for both types.
        if pattern is not None and key not in keys:
            keys.add(key)
            templates.append((code, national[0], [metadata.general_desc, desc], len(national)))
    return templates


def _matching(national: pa.Array, descs: list[Any]) -> pa.Array:
    """Mask of the national numbers each description's pattern and lengths accept."""
    mask = None
    for desc in descs:
        ok = pc.match_substring_regex(national, f"^(?:{desc.national_number_pattern})$")
        lengths = [n for n in (desc.possible_length or ()) if n > 0]
        if lengths:
            ok = pc.and_(
                ok, pc.is_in(pc.utf8_length(national), value_set=pa.array(lengths, pa.int32()))
            )
        mask = ok if mask is None else pc.and_(mask, ok)
    assert mask is not None
    return mask


def _template_numbers(
    rng: np.random.Generator,
    template: tuple[int, str, list[Any], int],
    needed: int,
    taken: pa.Array,
) -> pa.Array:
    """``needed`` distinct valid national numbers of one template (vectorised draws), none
    of them in ``taken`` (where mobile and fixed-line ranges overlap, as in MX or DK)."""
    _, first, descs, length = template
    digits = length - 1
    found = pa.array([], pa.string())
    acceptance = 0.5
    for _ in range(50):
        if len(found) >= needed:
            break
        draw = int((needed - len(found)) * 1.3 / max(acceptance, 0.01)) + 1_000
        raw = pa.array(rng.integers(0, 10**digits, size=draw, dtype=np.int64))
        national = pc.binary_join_element_wise(
            first, pc.utf8_lpad(pc.cast(raw, pa.string()), digits, "0"), ""
        )
        keep = pc.and_(_matching(national, descs), pc.invert(pc.is_in(national, taken)))
        kept = pc.filter(national, keep)
        acceptance = max(len(kept) / draw, 0.001)
        found = pc.unique(pa.concat_arrays([found, kept]))
    if len(found) < needed:
        raise SystemExit(f"could not draw {needed} numbers from template {first}... ({length})")
    return found[:needed]


def synthesise_numbers(
    rng: np.random.Generator, callers: int, called: int
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Disjoint caller and called pools of E.164 numbers, and the called numbers' regions.

    Both pools are grouped by region in ``REGIONS`` order, with ``allocate(callers,
    region_shares(HOME_CALLER_SHARES))`` callers and ``allocate(called,
    region_shares(HOME_CALLED_SHARES))`` called numbers per region.
    """
    caller_counts = allocate(callers, region_shares(HOME_CALLER_SHARES))
    called_counts = allocate(called, region_shares(HOME_CALLED_SHARES))
    caller_parts: list[pa.Array] = []
    called_parts: list[pa.Array] = []
    called_regions: list[pa.Array] = []
    for region, n_caller, n_called in zip(REGIONS, caller_counts, called_counts, strict=True):
        templates = _templates(region)
        shares = np.array([MOBILE_SHARE] + [1.0 - MOBILE_SHARE] * (len(templates) - 1))
        needed = int(n_caller + n_called)
        national = pa.array([], pa.string())
        for template, count in zip(templates, allocate(needed, shares), strict=True):
            drawn = _template_numbers(rng, template, int(count), national)
            national = pa.concat_arrays([national, drawn])
        numbers = pc.binary_join_element_wise(f"+{templates[0][0]}", national, "")
        numbers = numbers.take(pa.array(rng.permutation(len(numbers))))
        caller_parts.append(numbers[: int(n_caller)])
        called_parts.append(numbers[int(n_caller) :])
        called_regions.append(pa.array([region] * int(n_called), pa.string()))
    caller_pool = pa.concat_arrays(caller_parts)
    called_pool = pa.concat_arrays(called_parts)
    everything = pa.concat_arrays([caller_pool, called_pool])
    if len(pc.unique(everything)) != len(everything):
        raise SystemExit("synthesised numbers are not distinct")
    return caller_pool, called_pool, pa.concat_arrays(called_regions)


def spot_check(rng: np.random.Generator, numbers: pa.Array) -> int:
    """Numbers of a random sample that phonenumbers itself finds invalid (must be 0)."""
    sample = numbers.take(pa.array(rng.choice(len(numbers), min(SPOT_CHECK, len(numbers)))))
    return sum(
        not phonenumbers.is_valid_number(phonenumbers.parse(number, None))
        for number in sample.to_pylist()
    )


# ------------------------------------------------------------------ rate decks

DECK_HEADER = (
    "prefix,destination,call_type,rate_per_minute,connection_fee,increment,"
    "effective_from,effective_to\n"
)


def write_deck(
    path: Path,
    rng: random.Random,
    prefixes: int,
    with_types: bool,
    codes: dict[str, int],
    change_at: str,
) -> None:
    """A deck of ``prefixes`` rows: country ``codes`` (drawn by weight) extended by 1-5
    digits, a few of them typed, some rates changing at ``change_at``, assorted increments
    and connection fees."""
    increments = ["60/60", "60/60", "1/1", "30/6", "30/30"]
    population = list(codes)
    cum_weights = list(accumulate(codes[c] for c in population))
    seen: set[tuple[str, str]] = set()
    lines = [DECK_HEADER]
    lines.append(",Default,,0.09,0,60/60,,\n")
    seen.add(("", ""))
    for code in codes:
        lines.append(f"{code},Country {code},,0.05,0,60/60,,\n")
        seen.add((code, ""))
    if with_types:
        lines.append(",Local,local,0.01,0,60/60,,\n")
        lines.append(",National,national,0.02,0,60/60,,\n")
        seen.update({("", "local"), ("", "national")})
    while len(lines) - 1 < prefixes:
        prefix = rng.choices(population, cum_weights=cum_weights)[0] + "".join(
            rng.choice("0123456789") for _ in range(rng.randint(1, 5))
        )
        call_type = "international" if with_types and rng.random() < 0.1 else ""
        if (prefix, call_type) in seen:
            continue
        seen.add((prefix, call_type))
        rate = f"{rng.randint(1, 2000) / 10000:.4f}"
        fee = "0" if rng.random() < 0.8 else f"{rng.randint(1, 50) / 1000:.3f}"
        increment = rng.choice(increments)
        if rng.random() < 0.05:
            # A new price from change_at: two rows, back to back.
            new_rate = f"{rng.randint(1, 2000) / 10000:.4f}"
            lines.append(
                f"{prefix},Area {prefix},{call_type},{rate},{fee},{increment},,{change_at}\n"
            )
            lines.append(
                f"{prefix},Area {prefix},{call_type},{new_rate},{fee},{increment},{change_at},\n"
            )
        else:
            lines.append(f"{prefix},Area {prefix},{call_type},{rate},{fee},{increment},,\n")
    path.write_text("".join(lines), encoding="utf-8")


def carrier_ids(carriers: int) -> list[str]:
    return [f"carrier_{i:03d}" for i in range(1, carriers + 1)]


def write_rates(
    rates: Path,
    carriers: int,
    prefixes: int,
    seed: int,
    codes: dict[str, int],
    change_at: str,
) -> None:
    """A rates folder: ``carriers`` cost decks and a retail deck of ``prefixes`` rows each,
    markup 1.5 for calls the retail deck does not price."""
    (rates / "cost").mkdir(parents=True, exist_ok=True)
    (rates / "config.toml").write_text(
        'currency = "USD"\nmoney_decimals = 4\nmarkup = 1.5\n', encoding="utf-8"
    )
    (rates / "carriers.csv").write_text(
        "carrier_id,name\n"
        + "".join(f"{carrier},Carrier {i}\n" for i, carrier in enumerate(carrier_ids(carriers), 1)),
        encoding="utf-8",
    )
    rng = random.Random(seed)
    for carrier in carrier_ids(carriers):
        write_deck(rates / "cost" / f"{carrier}.csv", rng, prefixes, True, codes, change_at)
    write_deck(rates / "retail.csv", rng, prefixes, False, codes, change_at)


# ------------------------------------------------------------------ the process tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux, from /proc/<pid>/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as f:
                    queue.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return found


def memory_of(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in bytes; PSS is RSS where smaps_rollup is missing."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
        return pss, rss
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    return rss, rss
    except OSError:
        pass
    return 0, 0


class TreeSampler(threading.Thread):
    """Largest sums of PSS (``peak``) and of RSS (``peak_rss``) over a process and its
    descendants, sampled every ``interval`` seconds. PSS counts the pages that workers share
    with their parent after ``fork`` once; RSS counts them in every process.

    ``timeline`` keeps (``time.perf_counter()``, summed PSS) of every sample. With
    ``limit_bytes``, the whole tree is killed (SIGKILL) once its summed PSS exceeds it, and
    ``killed`` is set: a guard for machines shared with other work."""

    def __init__(self, pid: int, interval: float, limit_bytes: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.limit_bytes = pid, interval, limit_bytes
        self.peak = 0
        self.peak_rss = 0
        self.most_processes = 0
        self.samples = 0
        self.timeline: list[tuple[float, int]] = []
        self.killed = False
        self.done = threading.Event()

    def run(self) -> None:
        if not os.path.exists(f"/proc/{self.pid}"):
            return
        while not self.done.is_set():
            pids = process_tree(self.pid)
            memory = [memory_of(pid) for pid in pids]
            pss = sum(pss for pss, _ in memory)
            self.peak = max(self.peak, pss)
            self.peak_rss = max(self.peak_rss, sum(rss for _, rss in memory))
            self.most_processes = max(self.most_processes, len(pids))
            self.samples += 1
            self.timeline.append((time.perf_counter(), pss))
            if self.limit_bytes is not None and pss > self.limit_bytes and not self.killed:
                self.killed = True
                for pid in reversed(pids):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        continue
            self.done.wait(self.interval)
