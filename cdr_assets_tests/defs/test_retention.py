"""The retention job: a dry run lists, a real run deletes files and their partitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from cdr_assets.cli import main
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.defs.retention.jobs import retention
from cdr_assets.lib.warehouse import Warehouse

SHIPPED_RATES = Path(__file__).resolve().parents[2] / "rates"


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_dry_run_deletes_nothing_and_a_run_deletes_batches_and_their_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDR_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("CDR_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    warehouse = Warehouse(tmp_path / "warehouse")
    (batch,) = warehouse.batch_seqs()
    resource = CdrPipeline(
        landing_dir=str(tmp_path / "landing"),
        rates_dir=str(SHIPPED_RATES),
        warehouse_dir=str(warehouse.root),
    )
    later = (datetime.now(UTC).date() + timedelta(days=31)).isoformat()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("landing_batches", [batch])
        before = files(warehouse.root)

        def run(dry_run: bool) -> dg.ExecuteInProcessResult:
            return retention.execute_in_process(
                run_config={
                    "ops": {
                        "apply_retention_policy": {"config": {"dry_run": dry_run, "as_of": later}}
                    }
                },
                resources={"cdr": resource},
                instance=instance,
            )

        dry = run(True)
        assert dry.success
        assert files(warehouse.root) == before
        assert instance.get_dynamic_partitions("landing_batches") == [batch]

        done = run(False)
        assert done.success
        gone = before - files(warehouse.root)
        assert f"raw/{batch}.parquet" in gone and f"enriched/{batch}.parquet" in gone
        assert any(p.startswith(f"landing_archive/{batch}/") for p in gone)
        # Inside their windows: cdrs (400 days), refused rows, the audit trail, the marts.
        assert not any(p.startswith(("cdrs/", "daily_summary/", "rejected_cdrs/")) for p in gone)
        assert f"landed_files/{batch}.parquet" not in gone
        assert instance.get_dynamic_partitions("landing_batches") == []
        assert run(False).success  # a second run finds nothing to do
