"""Benchmark of pandera's polars and pandas backends on the CDR row rules.

Builds one realistic parsed batch (default 1,000,000 rows) the way the pipeline does:
``generate_cdrs`` for the raw CDRs, a handful of them turned into malformed records as the
readers emit them, number facts for the distinct caller/called strings, then DuckDB's
``PARSE_SQL`` and the ``RULE_COLUMNS`` selection, as in
``validation.validate_batch``. Preparing it is timed but is not part of the comparison.

Then, in the same process and on the same rows, best of ``--repeat`` runs each:

* ``polars``: the project's path, ``find_row_failures(parsed, max_duration_seconds)``
  (``schemas.row_rules_schema``, pandera's polars backend);
* ``pandas``: the same 14 rules as a pandera pandas schema (one dataframe check per reason
  code, each a vectorised pandas expression returning a boolean Series), validated with
  ``lazy=True`` on the parsed rows converted to pandas, its failure cases turned into
  (row -> reasons) the way ``find_row_failures`` does it. The conversion is timed apart.

Both must refuse exactly the same (row, reason) pairs, or the script fails. It prints a
Markdown table (seconds, rows/s, pandas/polars ratio, peak RSS) with the machine and the
versions and, with ``--json FILE``, writes the figures as JSON.

    python benchmarks/validation_backends.py --rows 1000000
    python benchmarks/validation_backends.py --rows 100000 --pandas-dtypes pyarrow --json v.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pandera
import pandera.pandas as pa
import polars as pl
import pyarrow
import pyarrow.compute as pc
from machine_info import machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdr_assets.lib.generate import GeneratorOptions, generate_cdrs
from cdr_assets.lib.ingest import RAW_SCHEMA
from cdr_assets.lib.numbers import compute_number_facts
from cdr_assets.lib.readers import CANONICAL_FIELDS
from cdr_assets.lib.schemas import (
    CALL_TYPES,
    COUNTRY_CODES,
    DISPOSITIONS,
    REASONS,
    RULE_COLUMNS,
    row_rules_schema,
)
from cdr_assets.lib.validation import PARSE_SQL, find_row_failures

MAX_DURATION_SECONDS = 86_400
SOURCE_TIMEZONE = "UTC"
MIB = 1024 * 1024

# ------------------------------------------------------------------ the parsed batch


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _release_free_memory() -> None:
    """Give memory that Arrow's pool and glibc's malloc keep after ``free`` back to the
    system, so that a window's peak is less hidden under pages freed earlier but still
    resident (polars' own allocator keeps its pages: the increases are lower bounds)."""
    pyarrow.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> bool:
    """Restart the peak RSS count (VmHWM) from the current RSS (Linux); False where it cannot.

    ``getrusage`` cannot be used for such a window: it also keeps the peak of exited threads.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _proc_status_bytes("VmHWM") is not None


def raw_batch(rows: int, seed: int, malformed_rows: int, bad_row_share: float) -> pyarrow.Table:
    """Generated CDRs with the columns of ``ingest.RAW_SCHEMA``.

    ``malformed_rows`` rows, spread evenly, become what the readers emit for a record they
    cannot split: every field null, the text in ``raw_record`` and ``malformed`` true.
    """
    generated = generate_cdrs(GeneratorOptions(rows=rows, seed=seed, bad_row_share=bad_row_share))
    n = generated.num_rows
    malformed = np.zeros(n, dtype=bool)
    if malformed_rows and n:
        malformed[np.linspace(0, n - 1, min(malformed_rows, n)).astype(np.int64)] = True
    mask = pyarrow.array(malformed)
    fields = {
        name: pc.if_else(mask, pyarrow.scalar(None, pyarrow.string()), generated[name])
        for name in CANONICAL_FIELDS
    }
    # The record as one CSV line, unquoted: carried along as the readers do, never checked.
    line = pc.binary_join_element_wise(
        *(pc.fill_null(generated[name], "") for name in CANONICAL_FIELDS), ","
    )
    raw_record = pc.if_else(mask, pc.binary_join_element_wise(line, ",,broken", ""), line)
    table = pyarrow.table(
        {
            "source_file": pyarrow.repeat(pyarrow.scalar("bench.csv"), n),
            "source_row": pyarrow.array(np.arange(1, n + 1, dtype=np.int64)),
            **fields,
            "raw_record": raw_record,
            "malformed": mask,
        }
    )
    return table.select(RAW_SCHEMA.names).cast(RAW_SCHEMA)


def parse(raw: pyarrow.Table) -> tuple[pl.DataFrame, int]:
    """The parsed rule columns, exactly as ``validation.validate_batch`` builds them."""
    numbers = pc.unique(
        pc.drop_null(
            pyarrow.chunked_array(
                raw["called_number"].chunks + raw["caller_number"].chunks, pyarrow.string()
            )
        )
    )
    facts = compute_number_facts(numbers.to_pylist(), default_region=None)
    with duckdb.connect() as con:
        con.execute(f"SET TimeZone = '{SOURCE_TIMEZONE}'")
        indexed = raw.append_column("row_idx", pyarrow.array(range(raw.num_rows), pyarrow.int64()))
        con.register("raw_batch", indexed)
        con.register("number_facts", facts)
        con.execute(f"CREATE TEMP TABLE parsed AS {PARSE_SQL}")
        parsed = con.sql(f"SELECT {', '.join(RULE_COLUMNS)} FROM parsed ORDER BY row_idx").pl()
    return parsed, len(numbers)


# ------------------------------------------------------------------ the pandas schema


def _true(values: pd.Series) -> pd.Series:
    """A plain bool Series: missing (undecidable) counts as False, as ``fill_null(False)``."""
    return values.fillna(False).astype(bool)


def pandas_row_rules(max_duration_seconds: int) -> dict[str, Callable[[pd.DataFrame], pd.Series]]:
    """Reason code -> the rule of ``schemas.row_rules`` over a pandas frame (True = obeyed)."""

    def present(df: pd.DataFrame, name: str) -> pd.Series:
        return df[name].notna()

    def absent(df: pd.DataFrame, name: str) -> pd.Series:
        return df[name].isna()

    def invalid_duration(df: pd.DataFrame) -> pd.Series:
        given_ok = present(df, "duration_given") & _true(
            df["duration_given"] <= max_duration_seconds
        )
        derived_ok = absent(df, "derived_duration") | _true(
            df["derived_duration"] <= max_duration_seconds
        )
        return given_ok.where(present(df, "duration_raw"), derived_ok)

    return {
        "malformed_record": lambda df: ~_true(df["malformed"]),
        "missing_field:call_id": lambda df: present(df, "call_id"),
        "missing_field:called_number": lambda df: present(df, "called_raw"),
        "missing_field:start_time": lambda df: present(df, "start_raw"),
        "missing_field:carrier_id": lambda df: present(df, "carrier_id"),
        "missing_field:duration_seconds": lambda df: (
            present(df, "end_raw") | present(df, "duration_raw")
        ),
        "invalid_number:called_number": lambda df: (
            absent(df, "called_raw") | _true(df["called_possible"])
        ),
        "invalid_timestamp:start_time": lambda df: (
            absent(df, "start_raw") | present(df, "start_ts")
        ),
        "invalid_timestamp:end_time": lambda df: absent(df, "end_raw") | present(df, "end_ts"),
        "end_before_start": lambda df: (
            absent(df, "start_ts") | absent(df, "end_ts") | _true(df["end_ts"] >= df["start_ts"])
        ),
        "invalid_duration": invalid_duration,
        "invalid_call_type": lambda df: (
            absent(df, "call_type_raw") | _true(df["call_type"].isin(CALL_TYPES))
        ),
        "invalid_country_code": lambda df: (
            absent(df, "country_code_raw") | _true(df["country_code"].isin(COUNTRY_CODES))
        ),
        "invalid_disposition": lambda df: (
            absent(df, "disposition_raw") | _true(df["disposition"].isin(DISPOSITIONS))
        ),
    }


def _pandas_check(reason: str, rule: Callable[[pd.DataFrame], pd.Series]) -> pa.Check:
    def check(df: pd.DataFrame) -> pd.Series:
        ok = rule(df)
        if reason != "malformed_record":
            ok = _true(df["malformed"]) | ok
        return ok

    return pa.Check(check, name=reason)


# The dtypes the parsed rows take in pandas, per --pandas-dtypes.
PANDAS_DTYPES: dict[str, dict[str, Any]] = {
    "numpy_nullable": {"bool": pd.BooleanDtype(), "int64": pd.Int64Dtype()},
    "pyarrow": {
        "bool": pd.ArrowDtype(pyarrow.bool_()),
        "int64": pd.ArrowDtype(pyarrow.int64()),
    },
}


def pandas_row_rules_schema(max_duration_seconds: int, dtypes: str) -> pa.DataFrameSchema:
    """``schemas.row_rules_schema`` for the pandas backend."""
    types = PANDAS_DTYPES[dtypes]
    columns = {
        "malformed": pa.Column(types["bool"], nullable=False),
        "called_possible": pa.Column(types["bool"], nullable=True),
        "duration_given": pa.Column(types["int64"], nullable=True),
        "derived_duration": pa.Column(types["int64"], nullable=True),
    }
    checks = [
        _pandas_check(reason, rule)
        for reason, rule in pandas_row_rules(max_duration_seconds).items()
    ]
    return pa.DataFrameSchema(columns, checks=checks, name="cdr_row_rules_pandas")


def to_pandas(parsed: pl.DataFrame, dtypes: str) -> pd.DataFrame:
    """The parsed rows as pandas: nullable numpy dtypes, or every column Arrow-backed."""
    table = parsed.to_arrow()
    if dtypes == "pyarrow":
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    mapping = {
        pyarrow.bool_(): pd.BooleanDtype(),
        pyarrow.int64(): pd.Int64Dtype(),
        pyarrow.int32(): pd.Int32Dtype(),
    }
    return table.to_pandas(types_mapper=mapping.get)


def pandas_failure_cases(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame | None:
    """pandera's failure cases of a lazy validation, None when every row passes."""
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        return errors.failure_cases
    return None


def find_row_failures_pandas(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.Series:
    """row index -> reasons (contract order) of every refused row, as ``find_row_failures``.

    The reasons are an Arrow list column built in one go: ``groupby(...).agg(list)`` makes
    one Python list per refused row, about 1 s for 20,000 refused rows, which would be
    measuring our grouping rather than pandera.
    """
    cases = pandas_failure_cases(frame, schema)
    if cases is None:
        return pd.Series([], dtype=pd.ArrowDtype(pyarrow.list_(pyarrow.string())), name="reasons")
    unexpected = cases[~cases["check"].isin(REASONS)]
    if len(unexpected):
        raise RuntimeError(f"parsed CDRs do not match the pandas rules schema:\n{unexpected}")
    order = {reason: i for i, reason in enumerate(REASONS)}
    # A dataframe check reports a failure case per non-null value of a failing row.
    pairs = (
        cases[["index", "check"]]
        .drop_duplicates()
        .assign(order=lambda d: d["check"].map(order))
        .sort_values(["index", "order"])
    )
    index = pairs["index"].to_numpy(dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    reasons = pyarrow.ListArray.from_arrays(
        pyarrow.array(np.r_[starts, len(index)], pyarrow.int32()),
        pyarrow.array(pairs["check"].to_numpy(dtype=object), pyarrow.string()),
    )
    return pd.Series(pd.arrays.ArrowExtensionArray(reasons), index=index[starts], name="reasons")


def polars_failure_cases(parsed: pl.DataFrame, max_duration_seconds: int) -> pl.DataFrame | None:
    """What ``find_row_failures`` gets from pandera, before it groups the reasons by row."""
    try:
        row_rules_schema(max_duration_seconds).validate(parsed, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        return errors.failure_cases
    return None


# ------------------------------------------------------------------------ measuring


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[list[float], Any]:
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        result = None
        gc.collect()
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return times, result


def measure_backend(
    repeat: int, rows: int, validate: Callable[[], Any], full: Callable[[], Any]
) -> tuple[dict[str, Any], Any]:
    """Best of ``repeat`` of pandera's validation alone, then of the whole path to reasons.

    The peak RSS is counted from the start of this backend's runs where Linux lets the count
    be restarted (``rss_window``: VmHWM after a reset), else it is the process's peak so far.
    """
    gc.collect()
    _release_free_memory()
    windowed = _reset_peak_rss()
    rss_start = (_proc_status_bytes("VmRSS") if windowed else None) or _peak_rss_bytes()
    validate_runs, _ = best_of(repeat, validate)
    full_runs, failures = best_of(repeat, full)
    peak = (_proc_status_bytes("VmHWM") if windowed else None) or _peak_rss_bytes()
    best = min(full_runs)
    figures = {
        "seconds": round(best, 3),
        "runs": [round(t, 3) for t in full_runs],
        "rows_per_second": round(rows / best),
        "validate_seconds": round(min(validate_runs), 3),
        "validate_runs": [round(t, 3) for t in validate_runs],
        "rss_window": windowed,
        "rss_at_start_mib": round(rss_start / MIB, 1),
        "peak_rss_mib": round(peak / MIB, 1),
        "peak_rss_increase_mib": round((peak - rss_start) / MIB, 1),
    }
    return figures, failures


def polars_pairs(failures: pl.DataFrame) -> set[tuple[int, str]]:
    exploded = failures.explode("reasons")
    return set(zip(exploded["row_idx"].to_list(), exploded["reasons"].to_list(), strict=True))


def pandas_pairs(failures: pd.Series) -> set[tuple[int, str]]:
    exploded = failures.explode()
    return set(zip((int(i) for i in exploded.index), exploded.to_list(), strict=True))


def compare(polars_failures: pl.DataFrame, pandas_failures: pd.Series) -> dict[str, int]:
    """Fail loudly unless both backends refuse the same rows for the same reasons."""
    left, right = polars_pairs(polars_failures), pandas_pairs(pandas_failures)
    if left != right:
        only_polars = sorted(left - right)[:10]
        only_pandas = sorted(right - left)[:10]
        raise SystemExit(
            "The backends disagree: "
            f"{len(left - right)} (row, reason) pairs only from polars, e.g. {only_polars}; "
            f"{len(right - left)} only from pandas, e.g. {only_pandas}"
        )
    as_lists = dict(zip(polars_failures["row_idx"], polars_failures["reasons"], strict=True))
    for row, reasons in pandas_failures.items():
        if list(as_lists[int(row)]) != list(reasons):
            raise SystemExit(f"row {row}: reasons in another order: {as_lists[row]} / {reasons}")
    counts: dict[str, int] = {reason: 0 for reason in REASONS}
    for _, reason in left:
        counts[reason] += 1
    return counts


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "pandera": pandera.__version__,
        "polars": pl.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": np.__version__,
        "duckdb": duckdb.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="CDRs to generate")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend (best is kept)")
    parser.add_argument(
        "--bad-row-share",
        type=float,
        default=GeneratorOptions.bad_row_share,
        help="share of generated rows that break one rule (the generator's default)",
    )
    parser.add_argument(
        "--malformed-rows", type=int, default=100, help="rows turned into malformed records"
    )
    parser.add_argument(
        "--pandas-dtypes",
        choices=sorted(PANDAS_DTYPES),
        default="numpy_nullable",
        help="dtypes of the pandas frame (default: numpy-backed nullable Int64/boolean)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be >= 1")

    started = time.perf_counter()
    raw = raw_batch(args.rows, args.seed, args.malformed_rows, args.bad_row_share)
    generated = time.perf_counter()
    parsed, distinct_numbers = parse(raw)
    prepared = time.perf_counter()
    del raw
    rss_prepared = _peak_rss_bytes()
    rows = parsed.height

    polars_figures, polars_failures = measure_backend(
        args.repeat,
        rows,
        lambda: polars_failure_cases(parsed, MAX_DURATION_SECONDS),
        lambda: find_row_failures(parsed, MAX_DURATION_SECONDS),
    )

    convert_started = time.perf_counter()
    frame = to_pandas(parsed, args.pandas_dtypes)
    convert_s = time.perf_counter() - convert_started
    schema = pandas_row_rules_schema(MAX_DURATION_SECONDS, args.pandas_dtypes)
    pandas_figures, pandas_failures = measure_backend(
        args.repeat,
        rows,
        lambda: pandas_failure_cases(frame, schema),
        lambda: find_row_failures_pandas(frame, schema),
    )

    reason_counts = compare(polars_failures, pandas_failures)
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "rows_refused": polars_failures.height,
        "bad_row_share": args.bad_row_share,
        "reason_counts": reason_counts,
        "distinct_numbers": distinct_numbers,
        "max_duration_seconds": MAX_DURATION_SECONDS,
        "repeat": args.repeat,
        "pandas_dtypes": args.pandas_dtypes,
        "prepare_seconds": {
            "generate": round(generated - started, 3),
            "number_facts_and_parse": round(prepared - generated, 3),
            "to_pandas": round(convert_s, 3),
        },
        "frame_mib": {
            "polars": round(parsed.estimated_size() / MIB, 1),
            "pandas": round(int(frame.memory_usage(deep=True).sum()) / MIB, 1),
        },
        "backends": {"polars": polars_figures, "pandas": pandas_figures},
        "ratio_pandas_to_polars": round(pandas_figures["seconds"] / polars_figures["seconds"], 2),
        "ratio_pandas_to_polars_validate": round(
            pandas_figures["validate_seconds"] / polars_figures["validate_seconds"], 2
        ),
        "peak_rss_mib_after_prepare": round(rss_prepared / MIB, 1),
        # The counts restart per backend: the process's peak is the highest of them.
        "peak_rss_mib_process": round(
            max(rss_prepared / MIB, polars_figures["peak_rss_mib"], pandas_figures["peak_rss_mib"]),
            1,
        ),
        "machine": machine(),
        "versions": versions(),
    }
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def print_table(results: dict[str, Any]) -> None:
    m, v, p = results["machine"], results["versions"], results["prepare_seconds"]
    polars_s = results["backends"]["polars"]["seconds"]
    print(
        f"{results['rows']:,} parsed CDRs ({results['rows_refused']:,} refused), "
        f"best of {results['repeat']}, pandas dtypes {results['pandas_dtypes']}; "
        f"{m['cpu_count']} CPUs, {m.get('mem_total_gib', '?')} GiB; "
        + ", ".join(f"{name} {version}" for name, version in v.items())
        + "\n"
    )
    print(
        "| backend | seconds | rows/s | x polars | pandera validate alone, s "
        "| peak RSS MiB (+ over start) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("polars", "pandas"):
        b = results["backends"][name]
        print(
            f"| {name} | {b['seconds']:.2f} | {b['rows_per_second']:,} | "
            f"{b['seconds'] / polars_s:.2f} | {b['validate_seconds']:.2f} | "
            f"{b['peak_rss_mib']:,.0f} (+{b['peak_rss_increase_mib']:,.0f}) |"
        )
    print(
        f"\npandas/polars: {results['ratio_pandas_to_polars']:.2f} "
        f"(validate alone: {results['ratio_pandas_to_polars_validate']:.2f}); runs: "
        f"polars {results['backends']['polars']['runs']}, "
        f"pandas {results['backends']['pandas']['runs']}\n"
        f"not compared: generate {p['generate']:.2f} s, number facts + parse "
        f"{p['number_facts_and_parse']:.2f} s, to pandas {p['to_pandas']:.2f} s; frames "
        f"{results['frame_mib']['polars']:,.0f} MiB polars, "
        f"{results['frame_mib']['pandas']:,.0f} MiB pandas; process peak RSS "
        f"{results['peak_rss_mib_process']:,.0f} MiB "
        f"({results['peak_rss_mib_after_prepare']:,.0f} after preparing)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
