"""The code location loads, and every job, sensor and asset resolves."""

from __future__ import annotations

import dagster as dg

from cdr_assets.definitions import defs


def test_definitions_load_and_every_job_resolves() -> None:
    dg.Definitions.validate_loadable(defs)
    for name in ("ingest_batch", "rebuild_cdrs_days", "rerate_batches"):
        assert defs.resolve_job_def(name).name == name
    assert defs.resolve_sensor_def("landing_sensor").job_name == "ingest_batch"


def test_the_layers_are_assets_with_their_lineage() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "raw_cdrs",
        "validated_cdrs",
        "rejected_cdrs",
        "rate_decks",
        "rated_cdrs",
        "enriched_cdrs",
        "duplicate_cdrs",
        "landed_files",
        "cdrs",
        "serving_db",
    } <= keys
    assert dg.AssetKey("raw_cdrs") in graph.get(dg.AssetKey("validated_cdrs")).parent_keys
    assert dg.AssetKey("validated_cdrs") in graph.get(dg.AssetKey("rated_cdrs")).parent_keys
    assert dg.AssetKey("rate_decks") in graph.get(dg.AssetKey("rated_cdrs")).parent_keys
    assert dg.AssetKey("rated_cdrs") in graph.get(dg.AssetKey("enriched_cdrs")).parent_keys
    assert dg.AssetKey("enriched_cdrs") in graph.get(dg.AssetKey("cdrs")).parent_keys
