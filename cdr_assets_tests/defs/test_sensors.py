"""The landing sensor, driven tick by tick through Dagster's sensor context."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from cdr_assets.defs.ingest.sensors import LandingCursor, landing_sensor, plan_tick
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib.landing import list_landing


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def tick(landing: Path, cursor: str | None, instance: dg.DagsterInstance) -> dg.SensorResult:
    resource = CdrPipeline(
        landing_dir=str(landing),
        rates_dir=str(landing.parent / "rates"),
        warehouse_dir=str(landing.parent / "warehouse"),
    )
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"cdr": resource})
    result = landing_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_a_new_file_waits_one_tick_then_is_taken_once(landing: Path) -> None:
    with dg.instance_for_test() as instance:
        (landing / "a.csv").write_text("call_id\n1\n")
        first = tick(landing, None, instance)
        assert not first.run_requests
        second = tick(landing, first.cursor, instance)
        assert len(second.run_requests or []) == 1
        request = (second.run_requests or [])[0]
        assert request.run_config["ops"]["raw_cdrs"]["config"]["files"] == ["a.csv"]
        assert request.partition_key == request.run_key
        assert second.dynamic_partitions_requests
        assert list(second.dynamic_partitions_requests[0].partition_keys) == [request.partition_key]
        # The run has not moved the file yet: later ticks must not take it again.
        third = tick(landing, second.cursor, instance)
        assert not third.run_requests


def test_every_ready_file_of_a_tick_goes_into_one_run_in_name_order(landing: Path) -> None:
    with dg.instance_for_test() as instance:
        for name in ("c.csv", "a.json", "b.ndjson.gz", ".x.csv", "y.csv.tmp", "z.part"):
            (landing / name).write_text("x")
        first = tick(landing, None, instance)
        second = tick(landing, first.cursor, instance)
        (request,) = second.run_requests or []
        assert request.run_config["ops"]["raw_cdrs"]["config"]["files"] == [
            "a.json",
            "b.ndjson.gz",
            "c.csv",
        ]


def test_a_file_still_growing_waits(landing: Path) -> None:
    with dg.instance_for_test() as instance:
        path = landing / "a.csv"
        path.write_text("call_id\n")
        first = tick(landing, None, instance)
        with path.open("a") as handle:
            handle.write("1\n" * 1000)
        second = tick(landing, first.cursor, instance)
        assert not second.run_requests
        third = tick(landing, second.cursor, instance)
        assert len(third.run_requests or []) == 1


def test_the_cursor_forgets_files_that_left_and_takes_a_new_file_of_the_same_name(
    landing: Path,
) -> None:
    with dg.instance_for_test() as instance:
        path = landing / "a.csv"
        path.write_text("first")
        cursor = tick(landing, tick(landing, None, instance).cursor, instance).cursor
        path.unlink()  # the run archived it
        cursor = tick(landing, cursor, instance).cursor
        assert json.loads(cursor or "{}") == {"claimed": {}, "seen": {}}
        path.write_text("second, a new file")
        cursor = tick(landing, cursor, instance).cursor
        assert len(tick(landing, cursor, instance).run_requests or []) == 1


def test_thousands_of_files_are_planned_in_one_pass(landing: Path) -> None:
    for i in range(3000):
        (landing / f"f{i:05d}.csv").write_text("x")
    listing = list_landing(landing)
    files, cursor = plan_tick(listing, LandingCursor())
    assert files == []
    files, cursor = plan_tick(listing, cursor, max_files=1000)
    assert files == [f"f{i:05d}.csv" for i in range(1000)]
    files, cursor = plan_tick(listing, cursor, max_files=1000)
    assert files[0] == "f01000.csv" and len(files) == 1000


def test_the_sensor_is_on_by_default() -> None:
    assert landing_sensor.default_status == dg.DefaultSensorStatus.RUNNING
