"""Benchmark of enrichment with a cold and a warm number-facts cache.

Builds N synthetic CDRs (``caller_number``, ``called_number`` in E.164, ``called_country``,
``start_time``) with ``--distinct`` distinct numbers over caller and called together (half of
them callers), as Parquet and as CSV in a temporary directory (timed apart), then measures,
each scenario in a fresh subprocess so that its peak memory is its own:

* ``floor``: DuckDB reading the CSV and writing it as Parquet, the least any stage that
  touches every CDR costs;
* ``cold``: an empty ``NumberFactsCache``; reading both number columns of the Parquet,
  ``facts_for`` on them (every distinct number parsed by phonenumbers, on every core, and
  the facts appended to the cache), then ``enrich_calls`` over the Parquet, written to
  Parquet as the pipeline writes (``write_relation_atomic``);
* ``warm``: the same, with the cache filled by ``cold``: nothing is parsed;
* ``warm, enrich_batch lookup``: the lookup ``ingest.enrich_batch`` makes (DuckDB's
  ``list(DISTINCT ...)`` of both columns, then ``facts_by_e164``), then the same enrichment.

Numbers are synthesised from ``phonenumbers.example_number_for_type`` (mobile and fixed line)
of 44 regions, every digit after the first one drawn at random (numpy), and kept when they
match the region's general and type patterns and lengths from phonenumbers' metadata (the
test ``is_valid_number`` makes, evaluated with Arrow's regex kernels); a sample is checked
with ``is_valid_number`` itself and the cold facts give the valid count of all of them.
Callers and called numbers are disjoint pools, each number used at least once.

Peak memory per scenario: the scenario process's VmHWM, the largest process-pool worker's
(``RUSAGE_CHILDREN``), and the peak of the whole process tree's PSS (proportional set size,
so the pages workers share with their parent after ``fork`` count once), sampled every
``--sample-interval`` seconds from the parent process.

It prints a Markdown table (wall seconds, rows/s, numbers/s of the cold parse, ratio to the
floor, peak memory) with the machine and the versions and, with ``--json FILE``, writes the
figures as JSON.

    python benchmarks/enrichment_bench.py                                   # 1M CDRs, 200k numbers
    python benchmarks/enrichment_bench.py --rows 10000000 --distinct 2000000 --json enrich.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from machine_info import machine
from phonenumbers import PhoneMetadata, PhoneNumberType

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

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
CALLER_SHARE = 0.5  # of the distinct numbers, the rest are called numbers
SPOT_CHECK = 2_000  # numbers checked with phonenumbers.is_valid_number in setup
START = np.datetime64("2026-10-01T00:00:00", "s")
DAYS = 30
ROW_GROUP_ROWS = 122_880  # DuckDB's own row group size, so reads run on every core

CSV_COLUMNS = {
    "caller_number": "VARCHAR",
    "called_number": "VARCHAR",
    "called_country": "VARCHAR",
    "start_time": "TIMESTAMPTZ",
}

# Targets of the issue, for 10M CDRs and about 2M distinct numbers.
TARGETS = {"cold_seconds": 60.0, "warm_seconds": 10.0, "peak_mib": 2048.0}

# ------------------------------------------------------------------ synthetic numbers


def _region_shares(home: dict[str, float]) -> np.ndarray:
    rest = (1.0 - sum(home.values())) / (len(REGIONS) - len(home))
    return np.array([home.get(region, rest) for region in REGIONS])


def _allocate(total: int, shares: np.ndarray) -> np.ndarray:
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
    """Disjoint caller and called pools of E.164 numbers, and the called numbers' regions."""
    caller_counts = _allocate(callers, _region_shares(HOME_CALLER_SHARES))
    called_counts = _allocate(called, _region_shares(HOME_CALLED_SHARES))
    caller_parts: list[pa.Array] = []
    called_parts: list[pa.Array] = []
    called_regions: list[pa.Array] = []
    for region, n_caller, n_called in zip(REGIONS, caller_counts, called_counts, strict=True):
        templates = _templates(region)
        shares = np.array([MOBILE_SHARE] + [1.0 - MOBILE_SHARE] * (len(templates) - 1))
        needed = int(n_caller + n_called)
        national = pa.array([], pa.string())
        for template, count in zip(templates, _allocate(needed, shares), strict=True):
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


def _spot_check(rng: np.random.Generator, numbers: pa.Array) -> int:
    """Numbers of a random sample that phonenumbers itself finds invalid (must be 0)."""
    sample = numbers.take(pa.array(rng.choice(len(numbers), min(SPOT_CHECK, len(numbers)))))
    return sum(
        not phonenumbers.is_valid_number(phonenumbers.parse(number, None))
        for number in sample.to_pylist()
    )


def _uses(rng: np.random.Generator, pool_size: int, rows: int) -> np.ndarray:
    """Row -> index into a pool: every number at least once, the other rows uniform."""
    index = np.concatenate(
        [np.arange(pool_size), rng.integers(0, pool_size, rows - pool_size)]
    ).astype(np.int64)
    rng.shuffle(index)
    return index


def stage_setup(work: Path, rows: int, distinct: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    callers = int(distinct * CALLER_SHARE)
    caller_pool, called_pool, called_region = synthesise_numbers(rng, callers, distinct - callers)
    invalid = _spot_check(rng, pa.concat_arrays([caller_pool, called_pool]))
    if invalid:
        raise SystemExit(f"{invalid} of {SPOT_CHECK} synthesised numbers are not valid")
    numbers_done = time.perf_counter()
    called_index = pa.array(_uses(rng, len(called_pool), rows))
    seconds = rng.integers(0, DAYS * 86_400, rows, dtype=np.int64)
    table = pa.table(
        {
            "caller_number": caller_pool.take(pa.array(_uses(rng, len(caller_pool), rows))),
            "called_number": called_pool.take(called_index),
            "called_country": called_region.take(called_index),
            "start_time": pa.array(START + seconds).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, work / "calls.parquet", row_group_size=ROW_GROUP_ROWS, compression="zstd")
    pacsv.write_csv(table, work / "calls.csv")
    return {
        "numbers_seconds": numbers_done - started,
        "rows_seconds": time.perf_counter() - numbers_done,
        "distinct_numbers": len(caller_pool) + len(called_pool),
        "caller_numbers": len(caller_pool),
        "called_numbers": len(called_pool),
        "spot_checked": min(SPOT_CHECK, distinct),
        "parquet_bytes": (work / "calls.parquet").stat().st_size,
        "csv_bytes": (work / "calls.csv").stat().st_size,
    }


# ------------------------------------------------------------------ scenarios


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _rusage(who: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of this process or of its waited-for children."""
    usage = resource.getrusage(who)
    # Linux reports kilobytes, macOS bytes.
    peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return usage.ru_utime + usage.ru_stime, peak


def _peak_rss_bytes() -> int:
    """Peak RSS of this process: VmHWM on Linux, since ru_maxrss after a fork also counts
    the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _rusage(resource.RUSAGE_SELF)[1]


def stage_floor(work: Path) -> dict[str, Any]:
    con = duckdb.connect()
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in CSV_COLUMNS.items()) + "}"
    started = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{_sql_path(work / 'calls.csv')}', header = true, "
        f"columns = {columns})) TO '{_sql_path(work / 'floor.parquet')}' "
        "(FORMAT parquet, COMPRESSION zstd)"
    ).fetchall()
    return {"seconds": time.perf_counter() - started}


def stage_enrich(work: Path, scenario: str) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from cdr_assets.lib.enrichment import enrich_calls
    from cdr_assets.lib.numbers import NumberFactsCache
    from cdr_assets.lib.warehouse import sql_file_list, write_relation_atomic

    calls = work / "calls.parquet"
    out = work / f"enriched-{scenario}.parquet"
    cache = NumberFactsCache(work / "number_facts", default_region=None)
    if scenario == "cold" and cache.files():
        raise SystemExit("the cold scenario needs an empty cache")
    if scenario != "cold" and not cache.files():
        raise SystemExit("the warm scenarios need the cache the cold one filled")
    con = duckdb.connect()
    started = time.perf_counter()
    if scenario == "warm-e164":
        # ingest.enrich_batch: distinct numbers through DuckDB, facts found by E.164 form.
        source = f"read_parquet({sql_file_list([calls])})"
        listed = con.execute(
            f"SELECT list(DISTINCT n) FROM (SELECT called_number AS n FROM {source} "
            f"UNION ALL SELECT caller_number FROM {source})"
        ).fetchone()
        distinct = pa.array((listed[0] if listed else None) or [], pa.string())
        numbers_read = time.perf_counter()
        facts = cache.facts_by_e164(distinct)
    else:
        # ingest.validate_batch_files: both columns of the batch, facts by number string.
        table = pq.read_table(calls, columns=["called_number", "caller_number"])
        numbers = pa.chunked_array(
            table["called_number"].chunks + table["caller_number"].chunks, type=pa.string()
        )
        numbers_read = time.perf_counter()
        facts = cache.facts_for(numbers)
        del table, numbers
    facts_done = time.perf_counter()
    con.execute(f"CREATE TEMP VIEW batch_calls AS SELECT * FROM read_parquet('{_sql_path(calls)}')")
    write_relation_atomic(enrich_calls(con, "batch_calls", facts), out)
    finished = time.perf_counter()
    cpu_self, _ = _rusage(resource.RUSAGE_SELF)
    cpu_children, worker_peak = _rusage(resource.RUSAGE_CHILDREN)
    counts = con.execute(
        "SELECT count(*), count(called_number_type), count(caller_number_type), "
        "count(called_carrier), count(caller_timezone), count(local_start_time) "
        f"FROM read_parquet('{_sql_path(out)}')"
    ).fetchone()
    assert counts is not None
    return {
        "seconds": finished - started,
        "read_numbers_seconds": numbers_read - started,
        "facts_seconds": facts_done - numbers_read,
        "enrich_write_seconds": finished - facts_done,
        "cpu_seconds": cpu_self + cpu_children,
        "peak_rss": _peak_rss_bytes(),
        "worker_peak_rss": worker_peak,
        "facts_rows": facts.num_rows,
        "facts_valid": int(pc.sum(facts["valid"]).as_py() or 0),
        "output": dict(
            zip(
                [
                    "rows",
                    "called_number_type",
                    "caller_number_type",
                    "called_carrier",
                    "caller_timezone",
                    "local_start_time",
                ],
                [int(c) for c in counts],
                strict=True,
            )
        ),
    }


# ------------------------------------------------------------------ the process tree


def _tree(pid: int) -> list[int]:
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


def _pss_bytes(pid: int) -> int:
    """Proportional set size of one process (RSS where smaps_rollup is missing)."""
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            with open(f"/proc/{pid}/{name}", encoding="ascii") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


class TreeSampler(threading.Thread):
    """Largest sum of PSS over a process and its descendants, sampled."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.most_processes = 0
        self.done = threading.Event()

    def run(self) -> None:
        if not os.path.exists(f"/proc/{self.pid}"):
            return
        while not self.done.is_set():
            pids = _tree(self.pid)
            self.peak = max(self.peak, sum(_pss_bytes(pid) for pid in pids))
            self.most_processes = max(self.most_processes, len(pids))
            self.done.wait(self.interval)


def run_stage(stage: str, work: Path, interval: float, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--stage", stage, "--workdir", str(work), *extra]
    started = time.perf_counter()
    with (
        open(work / f"{stage}.out", "w+", encoding="utf-8") as out,
        open(work / f"{stage}.err", "w+", encoding="utf-8") as err,
    ):
        process = subprocess.Popen(command, stdout=out, stderr=err)
        sampler = TreeSampler(process.pid, interval)
        sampler.start()
        code = process.wait()
        sampler.done.set()
        sampler.join()
        if code != 0:
            err.seek(0)
            raise SystemExit(f"stage {stage} failed ({code}):\n{err.read()}")
        out.seek(0)
        result: dict[str, Any] = json.loads(out.read().strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    result["tree_peak_pss"] = sampler.peak
    result["most_processes"] = sampler.most_processes
    return result


# ------------------------------------------------------------------ report


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "phonenumbers": phonenumbers.__version__,
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
    }


SCENARIOS = {
    "cold": "cold: parse every number, enrich, write",
    "warm": "warm: facts_for from the cache, enrich, write",
    "warm-e164": "warm: enrich_batch lookup (facts_by_e164), enrich, write",
}


def summarise(stage: dict[str, Any], rows: int, distinct: int, floor: float) -> dict[str, Any]:
    seconds = stage["seconds"]
    figures = {
        "seconds": round(seconds, 3),
        "process_seconds": round(stage["process_seconds"], 2),
        "rows_per_second": round(rows / seconds),
        "ratio_to_floor": round(seconds / floor, 2),
        "tree_peak_pss_mib": round(stage["tree_peak_pss"] / MIB, 1),
        "most_processes": stage["most_processes"],
    }
    if "facts_seconds" in stage:
        figures.update(
            {
                "read_numbers_seconds": round(stage["read_numbers_seconds"], 3),
                "facts_seconds": round(stage["facts_seconds"], 3),
                "numbers_per_second": round(distinct / stage["facts_seconds"]),
                "enrich_write_seconds": round(stage["enrich_write_seconds"], 3),
                "cpu_seconds": round(stage["cpu_seconds"], 2),
                "peak_rss_mib": round(stage["peak_rss"] / MIB, 1),
                "worker_peak_rss_mib": round(stage["worker_peak_rss"] / MIB, 1),
                "facts_rows": stage["facts_rows"],
                "facts_valid": stage["facts_valid"],
                "output": stage["output"],
            }
        )
    return figures


def print_table(results: dict[str, Any]) -> None:
    m, v, s = results["machine"], results["versions"], results["setup"]
    print(
        f"{results['rows']:,} CDRs, {s['distinct_numbers']:,} distinct numbers "
        f"({s['caller_numbers']:,} callers, {s['called_numbers']:,} called); "
        f"{m['cpu_count']} CPUs, {m.get('mem_total_gib', '?')} GiB; "
        + ", ".join(f"{name} {version}" for name, version in v.items())
        + "\n"
    )
    print(
        "| scenario | wall s | facts s | enrich + write s | rows/s | numbers/s | x floor "
        "| peak RSS MiB (largest worker) | tree peak PSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    floor = results["scenarios"]["floor"]
    print(
        f"| floor: CSV -> Parquet | {floor['seconds']:.2f} | | | {floor['rows_per_second']:,} "
        f"| | 1.00 | | {floor['tree_peak_pss_mib']:,.0f} |"
    )
    for name, label in SCENARIOS.items():
        r = results["scenarios"][name]
        workers = f" ({r['worker_peak_rss_mib']:,.0f})" if r["worker_peak_rss_mib"] else ""
        rate = f"{r['numbers_per_second']:,}" if name == "cold" else ""
        print(
            f"| {label} | {r['seconds']:.2f} | {r['facts_seconds']:.2f} | "
            f"{r['enrich_write_seconds']:.2f} | {r['rows_per_second']:,} | {rate} | "
            f"{r['ratio_to_floor']:.2f} | {r['peak_rss_mib']:,.0f}{workers} | "
            f"{r['tree_peak_pss_mib']:,.0f} |"
        )
    cold = results["scenarios"]["cold"]
    print(
        f"\nSetup (not timed above): numbers {s['numbers_seconds']:.1f} s, rows + files "
        f"{s['rows_seconds']:.1f} s. Cold facts: {cold['facts_valid']:,} of "
        f"{cold['facts_rows']:,} valid; {cold['cpu_seconds']:.0f} CPU s over "
        f"{cold['most_processes']} processes. Reading the number columns is part of "
        "'wall s', not of 'facts s'."
    )
    t, scenarios = results["targets"], results["scenarios"]
    peak = max(scenarios[name]["tree_peak_pss_mib"] for name in SCENARIOS)
    measured = [
        ("cold", cold["seconds"], t["cold_seconds"], "s"),
        ("warm", scenarios["warm"]["seconds"], t["warm_seconds"], "s"),
        ("peak", peak, t["peak_mib"], "MiB"),
    ]
    if results["rows"] < 10_000_000:
        print(
            "Targets (for 10M CDRs, ~2M numbers): "
            + ", ".join(f"{name} < {target:,.0f} {unit}" for name, _, target, unit in measured)
            + "; no verdict on a smaller run."
        )
        return
    print(
        "Targets (for 10M CDRs, ~2M numbers): "
        + "; ".join(
            f"{name} < {target:,.0f} {unit}: {value:,.1f} {unit} "
            f"({'met' if value < target else f'{value / target:.1f}x over'})"
            for name, value, target, unit in measured
        )
        + "."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="CDRs to generate")
    parser.add_argument(
        "--distinct", type=int, default=200_000, help="distinct numbers, caller and called"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--sample-interval", type=float, default=0.2, help="seconds between memory samples"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--stage", choices=["setup", "floor", *SCENARIOS], default=None, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.stage == "setup":
        print(json.dumps(stage_setup(args.workdir, args.rows, args.distinct, args.seed)))
        return 0
    if args.stage == "floor":
        print(json.dumps(stage_floor(args.workdir)))
        return 0
    if args.stage:
        print(json.dumps(stage_enrich(args.workdir, args.stage)))
        return 0
    if not 2 <= args.distinct <= args.rows:
        parser.error("--distinct must be from 2 to --rows")

    with tempfile.TemporaryDirectory(prefix="enrichment-bench-") as tmp:
        work = Path(tmp)
        sizes = ["--rows", str(args.rows), "--distinct", str(args.distinct)]
        setup = run_stage("setup", work, args.sample_interval, [*sizes, "--seed", str(args.seed)])
        stages = {
            name: run_stage(name, work, args.sample_interval, []) for name in ("floor", *SCENARIOS)
        }
    outputs = {stages[name]["output"]["rows"] for name in SCENARIOS}
    if outputs != {args.rows} or len({json.dumps(stages[n]["output"]) for n in SCENARIOS}) != 1:
        raise SystemExit(f"the scenarios wrote different results: {stages}")

    rows, distinct = args.rows, setup["distinct_numbers"]
    floor = stages["floor"]["seconds"]
    results = {
        "rows": rows,
        "distinct_numbers": distinct,
        "seed": args.seed,
        "setup": {
            key: round(value, 2) if isinstance(value, float) else value
            for key, value in setup.items()
        },
        "machine": machine(),
        "versions": versions(),
        "targets": TARGETS,
        "scenarios": {
            name: summarise(stage, rows, distinct, floor) for name, stage in stages.items()
        },
    }
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
