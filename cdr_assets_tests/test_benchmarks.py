"""Smoke test of the pipeline benchmark suite (``benchmarks/pipeline_bench.py``) and, on the
warehouse it keeps, of the layer copies (``benchmarks/layer_bench.py``) and the required work
(``benchmarks/work_bench.py``).

It runs the suite at 100,000 rows (cold, warm, incremental and batching, with small decks and
batches) so that the generator, the measurement and the report keep working as the pipeline
changes. It asserts what the suite reports and that the pipeline's counts reconcile; no
timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cdr_assets_tests.contract import REASON_CODES

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks" / "pipeline_bench.py"
LAYER_BENCH = REPO / "benchmarks" / "layer_bench.py"
WORK_BENCH = REPO / "benchmarks" / "work_bench.py"
# Small decks and batches keep the run short; the day keeps its 100,000 rows.
SMOKE_OPTIONS: dict[str, object] = {
    "--rows": 100_000,
    "--files": 2,
    "--scenarios": "cold,warm,incremental,batching",
    "--incremental-rows": 1_000,
    "--batching-rows": 5_000,
    "--batching-files": 5,
    "--prefixes": 1_000,
}
# The stages of the issue: each has a progress line, so each gets a share of the wall time.
STAGES = {"read", "validate", "rate", "enrich", "dedup", "marts", "publish", "overhead"}
REASONS = set(REASON_CODES)


def _check_run(run: dict[str, Any]) -> None:
    assert run["exit_code"] == 0, run.get("failures")
    assert all(run["checks"].values()), run["checks"]
    counts, expected = run["counts"], run["expected"]
    assert counts["rows_read"] == counts["rows_accepted"] + counts["rows_rejected"]
    assert counts["rows_accepted"] == counts["rows_kept"] + counts["rows_duplicate"]
    assert counts["rows_read"] == expected["rows_read"] == run["rows"]
    assert counts["rows_duplicate"] == expected["rows_duplicate"] > 0
    assert counts["day_summary_calls"] == counts["day_cdrs"]
    assert counts["batches"] == 1
    # Every step printed its progress line, so each stage got its share of the wall time.
    assert set(run["stages"]) >= STAGES
    assert all(run["stages"][stage] > 0 for stage in STAGES), run["progress"]
    assert abs(sum(run["stages"].values()) - run["wall_seconds"]) < 0.05
    assert run["wall_seconds"] > 0 and run["peak_mib"] > 0 and run["ratio_to_floor"] > 0
    assert run["floor"]["rows"] == counts["rows_read"]


def _run_script(script: Path, options: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(script), *(str(x) for pair in options.items() for x in pair)]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_pipeline_bench_smoke(tmp_path: Path) -> None:
    result_json, result_md = tmp_path / "bench.json", tmp_path / "bench.md"
    options = {**SMOKE_OPTIONS, "--workdir": tmp_path / "work", "--keep": None}
    options.update({"--json": result_json, "--markdown": result_md})
    command = [sys.executable, str(BENCH)]
    for option, value in options.items():
        command += [option] if value is None else [option, str(value)]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(result_json.read_text(encoding="utf-8"))
    assert results["problems"] == []
    assert results["machine"]["cpu_count"] >= 1
    assert {"python", "dagster", "duckdb", "phonenumbers"} <= set(results["versions"])

    (day,) = results["days"]
    assert day["rows"] == 100_000
    assert day["generated"]["distinct_callers"] == day["generated"]["distinct_called"] == 20_000
    scenarios = day["scenarios"]
    assert set(scenarios) == {"cold", "warm", "incremental"}
    for run in scenarios.values():
        _check_run(run)
    cold, warm, late = scenarios["cold"], scenarios["warm"], scenarios["incremental"]
    assert set(cold["counts"]["reasons"]) == REASONS
    for key in ("rows_accepted", "rows_rejected", "rows_duplicate", "rows_kept", "reasons"):
        assert warm["counts"][key] == cold["counts"][key]
    assert late["counts"]["day_cdrs"] == cold["counts"]["rows_kept"] + late["counts"]["rows_kept"]
    assert set(cold["counts"]["rating_status"]) >= {"rated", "unanswered", "unknown_carrier"}

    batching = results["batching"]
    assert batching["one_run"] is True and batching["ratio_many_to_one"] > 0
    assert batching["runs"]["many"]["counts"]["files"] == 5
    for run in (batching["runs"]["one"], batching["runs"]["many"]):
        _check_run(run)
    assert batching["runs"]["one"]["counts"] == {
        **batching["runs"]["many"]["counts"],
        "files": 1,
    }

    table = result_md.read_text(encoding="utf-8")
    assert "| cold cache, 100,000-row day | 100,000 |" in table
    assert "| batching: 5 files, warm |" in table

    # The layer copies, on the cold warehouse the suite kept (the day and the late file).
    layers_json = tmp_path / "layers.json"
    work = tmp_path / "work" / "day_100000"
    layer_options = {
        "--warehouse": work / "cold" / "warehouse",
        "--csv": work / "source" / "day",
        "--json": layers_json,
    }
    done = _run_script(LAYER_BENCH, layer_options)
    layers = json.loads(layers_json.read_text(encoding="utf-8"))
    both = [cold["counts"], late["counts"]]
    assert layers["floor"]["rows"] == cold["counts"]["rows_read"]
    assert {name: r["rows"] for name, r in layers["layers"].items()} == {
        "raw": sum(c["rows_read"] for c in both),
        "validated": sum(c["rows_accepted"] for c in both),
        "rated": sum(c["rows_accepted"] for c in both),
        "cdrs": late["counts"]["day_cdrs"],
    }
    assert [r["columns"] for r in layers["layers"].values()] == sorted(
        r["columns"] for r in layers["layers"].values()
    )
    assert all(r["duckdb_copy_seconds"] > 0 for r in layers["layers"].values())
    assert "| the four layers together |" in done.stdout

    # The required work, each part alone, on the same warehouse: every part saw every row.
    work_json = tmp_path / "work.json"
    done = _run_script(
        WORK_BENCH, {**layer_options, "--rates": work / "source" / "rates", "--json": work_json}
    )
    required = json.loads(work_json.read_text(encoding="utf-8"))
    parts = required["parts"]
    assert required["floor"]["rows"] == parts["read"]["rows"] == cold["counts"]["rows_read"]
    assert parts["pandera rules"]["rows"] == sum(c["rows_read"] for c in both)
    assert parts["pandera rules"]["refused"] == sum(c["rows_rejected"] for c in both)
    assert parts["rating"]["rows"] == sum(c["rows_accepted"] for c in both)
    assert 0 < parts["rating"]["priced"] <= parts["rating"]["rows"]
    assert parts["cdrs written once"]["rows"] == late["counts"]["day_cdrs"]
    assert parts["number facts"]["facts"] == parts["number facts"]["numbers"] > 20_000
    assert all(part["seconds"] > 0 for part in parts.values())
    assert required["sums"]["cold"] > required["sums"]["warm"] > 0
    assert "| **sum, warm run** (target 4x) |" in done.stdout
