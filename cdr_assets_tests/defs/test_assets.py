"""The ingestion assets materialised through Dagster, as the sensor's run and the UI do."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdr_assets.defs.enrichment.assets import enriched_cdrs
from cdr_assets.defs.fraud.resources import FraudRules
from cdr_assets.defs.ingest import assets as ingest_assets
from cdr_assets.defs.ingest.assets import (
    batch_call_ids_unique,
    cdrs,
    deduplicate_cdrs,
    raw_cdrs,
    validate_cdrs,
)
from cdr_assets.defs.rating.assets import _rating_checks, rate_decks, rated_cdrs
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.defs.serving.assets import serving_db
from cdr_assets.lib.rating import load_decks
from cdr_assets.lib.warehouse import Warehouse

CSV = (
    "call_id,caller_number,called_number,start_time,duration_seconds,carrier_id\n"
    "c1,+12025550123,+442079460958,2026-11-20T10:00:00Z,60,carrier_001\n"
    "c2,+12025550123,+442079460958,2026-11-21T10:00:00Z,60,carrier_001\n"
    "c1,+12025550123,+442079460958,2026-11-20T10:00:00Z,60,carrier_001\n"
    ",+12025550123,+442079460958,2026-11-21T10:00:00Z,60,carrier_001\n"
)


def test_a_batch_run_fills_every_layer_and_reports_the_days_it_touched(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text(CSV)
    resource = CdrPipeline(
        landing_dir=str(landing),
        rates_dir=str(Path(__file__).resolve().parents[2] / "rates"),
        warehouse_dir=str(tmp_path / "warehouse"),
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("landing_batches", ["b1"])
        result = dg.materialize(
            [
                raw_cdrs,
                validate_cdrs,
                rate_decks,
                rated_cdrs,
                enriched_cdrs,
                deduplicate_cdrs,
                serving_db,
            ],
            partition_key="b1",
            resources={"cdr": resource, "fraud_rules": FraudRules.from_env()},
            instance=instance,
            run_config={"ops": {"raw_cdrs": {"config": {"files": ["a.csv"]}}}},
        )
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {
            "matches_validated_schema": True,
            "one_status_per_row": True,
            "margin_is_revenue_minus_cost": True,
            "unrated_share": True,
            "rows_add_up": True,
            "cdrs_call_id_unique": True,
            # The marts of the days the batch touched are rebuilt and reconciled in the run.
            "matches_cdrs": True,
            "matches_daily_summary": True,
            "matches_days": True,
            # And the days' fraud alerts (the sample has none).
            "no_error_alerts": True,
            "no_warn_alerts": True,
        }
        reported = sorted(
            m.partition
            for m in result.asset_materializations_for_node("deduplicate_cdrs")
            if m.asset_key == dg.AssetKey("cdrs")
        )
        assert reported == ["2026-11-20", "2026-11-21"]
        assert sorted(instance.get_dynamic_partitions("call_dates")) == reported

        warehouse = Warehouse(tmp_path / "warehouse")
        before = _cdrs(warehouse)
        rebuild = dg.materialize(
            [cdrs],
            partition_key="2026-11-20",
            resources={"cdr": resource, "fraud_rules": FraudRules.from_env()},
            instance=instance,
        )
        assert rebuild.success
        assert _cdrs(warehouse) == before
        assert [e.passed for e in rebuild.get_asset_check_evaluations()] == [True, True]

    with duckdb.connect(str(warehouse.serving_path), read_only=True) as con:
        assert con.execute(
            "SELECT rows_read, rows_accepted, rows_rejected, rows_duplicate FROM landed_files"
        ).fetchall() == [(4, 3, 1, 1)]


def test_the_schema_check_finds_bad_rows_in_every_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "validated.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"""COPY (
            SELECT 'c' || i AS call_id, '+12025550123' AS caller_number,
                '+442079460958' AS called_number,
                TIMESTAMPTZ '2026-11-20 10:00:00+00' AS start_time,
                TIMESTAMPTZ '2026-11-20 10:01:00+00'
                    - CASE WHEN i = 5 THEN INTERVAL 2 MINUTE ELSE INTERVAL 0 MINUTE END
                    AS end_time,
                CASE WHEN i = 1 THEN -1 ELSE 60 END::BIGINT AS duration_seconds,
                'carrier_001' AS carrier_id, 'international' AS call_type, 'GB' AS country_code,
                'ANSWERED' AS disposition, DATE '2026-11-20' AS call_date, 'a.csv' AS source_file,
                i::BIGINT AS source_row, 'more' AS a_column_the_schema_does_not_state
            FROM range(1, 7) t(i)) TO '{path}' (FORMAT parquet)"""
        )
    monkeypatch.setattr(ingest_assets, "SCHEMA_CHECK_ROWS", 2)  # rows 1 and 5: two chunks
    result = ingest_assets.schema_check_result("validated_cdrs", [path], 86_400)
    assert not result.passed
    assert result.metadata["rows"] == dg.IntMetadataValue(6)
    assert result.metadata["failures"] == dg.IntMetadataValue(2)
    good = tmp_path / "good.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM '{path}' WHERE source_row NOT IN (1, 5)) TO '{good}' "
            "(FORMAT parquet)"
        )
    assert ingest_assets.schema_check_result("validated_cdrs", [good], 86_400).passed
    # Over several files, one of them without a column the schema states: a failure that
    # names the column, not a crash.
    partial = tmp_path / "partial.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * EXCLUDE (carrier_id) FROM '{good}') TO '{partial}'")
    result = ingest_assets.schema_check_result("cdrs", [good, partial], 86_400)
    assert not result.passed
    assert result.metadata["rows"] == dg.IntMetadataValue(8)
    assert "carrier_id" in str(result.metadata["sample"])


def _cdrs(warehouse: Warehouse) -> list[tuple[object, ...]]:
    with duckdb.connect() as con:
        files = [str(p) for p in warehouse.table_files("cdrs")]
        return con.execute("SELECT * FROM read_parquet(?) ORDER BY call_id", [files]).fetchall()


def test_a_deck_change_makes_rated_batches_stale(tmp_path: Path) -> None:
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from cdr_assets.definitions import defs

    rates = tmp_path / "rates"
    shutil.copytree(Path(__file__).resolve().parents[2] / "rates", rates)
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text(CSV)
    resource = CdrPipeline(
        landing_dir=str(landing), rates_dir=str(rates), warehouse_dir=str(tmp_path / "wh")
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("landing_batches", ["b1"])
        assert (
            defs.resolve_job_def("ingest_batch")
            .execute_in_process(
                partition_key="b1",
                instance=instance,
                resources={"cdr": resource, "fraud_rules": FraudRules.from_env()},
                run_config={"ops": {"raw_cdrs": {"config": {"files": ["a.csv"]}}}},
            )
            .success
        )

        def rated_status() -> StaleStatus:
            resolver = CachingStaleStatusResolver(
                instance, defs.resolve_asset_graph(), LoadingContextForTest(instance)
            )
            return resolver.get_status(dg.AssetKey("rated_cdrs"), "b1")

        assert rated_status() == StaleStatus.FRESH
        deck = rates / "cost" / "carrier_001.csv"
        deck.write_text(deck.read_text().replace(",0.04,", ",0.05,"))
        dg.materialize(
            [rate_decks],
            instance=instance,
            resources={"cdr": resource, "fraud_rules": FraudRules.from_env()},
        )
        assert rated_status() == StaleStatus.STALE


def test_rate_decks_renames_each_snapshot_file_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cost.parquet and retail.parquet are written under a temporary name in the snapshot's
    folder and renamed into place, so that no reader sees a torn file; decks.json comes last."""
    rates = tmp_path / "rates"
    shutil.copytree(Path(__file__).resolve().parents[2] / "rates", rates)
    (rates / "retail.csv").write_text(
        "prefix,destination,call_type,rate_per_minute,connection_fee,increment,"
        "effective_from,effective_to\n44,UK retail,,0.10,,1/1,,\n"
    )
    renames: list[tuple[Path, Path]] = []
    replace = os.replace

    def recording_replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        renames.append((Path(source), Path(target)))
        replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    resource = CdrPipeline(
        landing_dir=str(tmp_path / "landing"), rates_dir=str(rates), warehouse_dir=str(tmp_path)
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize([rate_decks], instance=instance, resources={"cdr": resource})
        assert result.success
    decks = load_decks(rates)
    assert decks.retail is not None
    snapshot = tmp_path / "rate_decks" / decks.version
    names = ["cost.parquet", "retail.parquet", "decks.json"]
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(names)  # nothing temporary left
    into = {
        target.name: (n, source)
        for n, (source, target) in enumerate(renames)
        if target.parent == snapshot
    }
    assert sorted(into) == sorted(names)
    for name, (_, source) in into.items():
        assert source.parent == snapshot
        assert source.name.startswith(f".{name}.") and source.name.endswith(".tmp")
    assert into["decks.json"][0] > max(into["cost.parquet"][0], into["retail.parquet"][0])
    assert pq.read_table(snapshot / "cost.parquet").equals(decks.cost)
    assert pq.read_table(snapshot / "retail.parquet").equals(decks.retail)


def test_a_batch_whose_files_were_all_left_to_another_reads_nothing_and_succeeds(
    tmp_path: Path,
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text(CSV)
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.register_batch("b1", ["a.csv"], landing)  # unfinished: a.csv is b1's
    assert warehouse.register_batch("b2", ["a.csv"], landing).files == []
    resource = CdrPipeline(
        landing_dir=str(landing),
        rates_dir=str(Path(__file__).resolve().parents[2] / "rates"),
        warehouse_dir=str(warehouse.root),
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("landing_batches", ["b2"])
        # A rerun of b2 (no run config: its files come from its manifest) reads nothing.
        result = dg.materialize(
            [raw_cdrs], partition_key="b2", resources={"cdr": resource}, instance=instance
        )
    assert result.success
    assert pq.read_table(warehouse.batch_file("raw", "b2")).num_rows == 0
    assert (landing / "a.csv").exists()  # still b1's to take


def test_a_batch_whose_call_ids_are_kept_twice_fails_the_uniqueness_check(
    tmp_path: Path,
) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")

    def kept(day: str, batch: str, ids: list[str]) -> None:
        path = warehouse.cdrs_file(day, batch)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"call_id": ids}), path)

    kept("2026-11-20", "b1", ["a", "b"])
    kept("2026-11-21", "b2", ["c"])
    kept("2026-11-22", "b2", ["d"])
    assert batch_call_ids_unique(warehouse, "b2").passed
    kept("2026-11-23", "b3", ["e", "e"])  # twice within the batch
    assert not batch_call_ids_unique(warehouse, "b3").passed
    kept("2026-11-23", "b3", ["e", "b"])  # once, but an earlier batch kept "b" (another day)
    check = batch_call_ids_unique(warehouse, "b3")
    assert not check.passed
    assert check.metadata["rows_of_other_batches_with_these_ids"].value == 1
    assert batch_call_ids_unique(warehouse, "b2").passed  # b2's ids are still its own


def _rating_check_results(
    tmp_path: Path, accepted: list[tuple[str, int]], rated: list[tuple[str, int, str]]
) -> dict[str, dg.AssetCheckResult]:
    """The rating checks of a rated file (file, row, margin; revenue 1.5 and cost 1.0 each)
    against a validated file of the accepted (file, row) pairs."""
    validated_path, rated_path = tmp_path / "validated.parquet", tmp_path / "rated.parquet"
    pq.write_table(
        pa.table({"source_file": [f for f, _ in accepted], "source_row": [r for _, r in accepted]}),
        validated_path,
    )
    with duckdb.connect() as con:
        con.register(
            "given",
            pa.table({n: [row[i] for row in rated] for i, n in enumerate(("f", "r", "m"))}),
        )
        con.execute(
            "COPY (SELECT f AS source_file, r AS source_row, 'rated' AS rating_status, "
            "1.5::DECIMAL(38, 4) AS revenue, 1.0::DECIMAL(38, 4) AS cost, "
            f"m::DECIMAL(38, 4) AS margin FROM given) TO '{rated_path}'"
        )
    return {c.check_name: c for c in _rating_checks(rated_path, validated_path, 0.5)}


def test_the_rating_checks_fail_on_a_row_rated_twice_and_on_a_wrong_margin(
    tmp_path: Path,
) -> None:
    # As many rated rows as accepted ones, but row 1 twice and row 2 not at all.
    checks = _rating_check_results(
        tmp_path,
        [("a.csv", 0), ("a.csv", 1), ("a.csv", 2)],
        [("a.csv", 0, "0.5"), ("a.csv", 1, "0.5"), ("a.csv", 1, "0.4")],
    )
    assert not checks["one_status_per_row"].passed
    assert not checks["margin_is_revenue_minus_cost"].passed
    assert checks["margin_is_revenue_minus_cost"].metadata["rows_breaking_it"].value == 1


def test_the_rating_checks_fail_on_a_row_validation_never_accepted(tmp_path: Path) -> None:
    # As many rated rows as accepted ones, each once, but row 5 in place of row 1.
    checks = _rating_check_results(
        tmp_path, [("a.csv", 0), ("a.csv", 1)], [("a.csv", 0, "0.5"), ("a.csv", 5, "0.5")]
    )
    assert not checks["one_status_per_row"].passed
    assert checks["one_status_per_row"].metadata["same_rows_as_validated"].value is False
    assert checks["margin_is_revenue_minus_cost"].passed


def test_the_same_row_number_in_two_files_is_two_rows_to_the_rating_checks(
    tmp_path: Path,
) -> None:
    checks = _rating_check_results(
        tmp_path, [("a.csv", 1), ("b.csv", 1)], [("a.csv", 1, "0.5"), ("b.csv", 1, "0.5")]
    )
    assert checks["one_status_per_row"].passed
    assert checks["margin_is_revenue_minus_cost"].passed
