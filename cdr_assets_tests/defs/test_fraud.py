"""fraud_alerts through Dagster: check results by severity, the outlet sensor, automation."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from cdr_assets.cli import main
from cdr_assets.defs.fraud.assets import fraud_alerts, publish_fraud_alerts
from cdr_assets.defs.fraud.resources import FraudRules
from cdr_assets.defs.fraud.sensors import fraud_alert_outlet, fraud_automation
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib import fraud
from cdr_assets.lib.fraud_config import FraudConfig, load_config
from cdr_assets.lib.fraud_scenarios import ScenarioOptions, generate_scenario
from cdr_assets.lib.warehouse import Warehouse, read_parquet_sql

SHIPPED_RATES = Path(__file__).resolve().parents[2] / "rates"
SCENARIO = ScenarioOptions(rows_per_day=20_000, days=8, inject_days=(6, 7), seed=11)
CLEAN_DAY, FIRST_DAY, SECOND_DAY = SCENARIO.day(5), SCENARIO.day(6), SCENARIO.day(7)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fraud") / "warehouse"
    generate_scenario(Warehouse(root), SCENARIO)
    return root


@pytest.fixture
def warehouse(generated: Path, tmp_path: Path) -> Warehouse:
    """The generated cdrs, without any alert file yet (tests write their own)."""
    root = tmp_path / "warehouse"
    (root / "cdrs").mkdir(parents=True)
    for day in (generated / "cdrs").iterdir():
        (root / "cdrs" / day.name).symlink_to(day)
    return Warehouse(root)


def write_config(tmp_path: Path, outlet: str) -> Path:
    path = tmp_path / "fraud.toml"
    path.write_text("[outlet]\n" + outlet + "\n")
    return path


def resources(warehouse: Warehouse, config: Path) -> dict[str, Any]:
    return {
        "cdr": CdrPipeline(
            landing_dir=str(warehouse.root.parent / "landing"),
            rates_dir=str(SHIPPED_RATES),
            warehouse_dir=str(warehouse.root),
        ),
        "fraud_rules": FraudRules(config_file=str(config)),
    }


def materialize(
    warehouse: Warehouse, config: Path, day: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions("call_dates", [day])
    return dg.materialize(
        [fraud_alerts],
        partition_key=day,
        resources=resources(warehouse, config),
        instance=instance,
    )


def test_a_days_alerts_show_as_check_results_with_their_severity(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    config = write_config(tmp_path, 'kind = "none"')
    with dg.instance_for_test() as instance:
        result = materialize(warehouse, config, FIRST_DAY, instance)
        assert result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(checks) == {"no_error_alerts", "no_warn_alerts"}
        errors, warnings = checks["no_error_alerts"], checks["no_warn_alerts"]
        assert not errors.passed and errors.severity == dg.AssetCheckSeverity.ERROR
        assert not warnings.passed and warnings.severity == dg.AssetCheckSeverity.WARN
        rows = fraud.read_alerts([fraud.alerts_file(warehouse, FIRST_DAY)])
        for check, severity in ((errors, "ERROR"), (warnings, "WARN")):
            mine = [r for r in rows if r["severity"] == severity]
            assert check.metadata["alerts"].value == len(mine) > 0
            top = check.metadata["top_alert_ids"].value
            assert top == [r["alert_id"] for r in fraud.top_alerts(mine, 10)]
            assert "| severity | rule |" in str(check.metadata["top_alerts"].value)
        by_rule = errors.metadata["by_rule"].value
        assert isinstance(by_rule, dict) and "irsf" in by_rule  # 8 long calls to +881
        (materialization,) = result.asset_materializations_for_node("fraud_alerts")
        assert materialization.metadata["dagster/row_count"].value == len(rows)
        assert materialization.metadata["errors"].value == sum(
            r["severity"] == "ERROR" for r in rows
        )

        clean = materialize(warehouse, config, CLEAN_DAY, instance)
        assert all(e.passed for e in clean.get_asset_check_evaluations())
        (materialization,) = clean.asset_materializations_for_node("fraud_alerts")
        assert materialization.metadata["dagster/row_count"].value == 0


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CDR_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("CDR_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tmp_path


def test_the_real_pipeline_then_fraud_alerts_for_its_days(env: Path) -> None:
    """generate + process as a user runs them, then each day's alerts through Dagster."""
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    warehouse = Warehouse(env / "warehouse")
    config = write_config(env, 'kind = "none"')
    days = warehouse.cdrs_days()
    assert len(days) == 3
    with duckdb.connect() as con:
        source = read_parquet_sql(warehouse.table_files("cdrs"))
        self_calls = con.execute(
            f"SELECT call_date::VARCHAR, caller_number FROM {source} "
            "WHERE list_contains(flags, 'self_call') ORDER BY ALL"
        ).fetchall()
    assert self_calls  # the sample carries two
    found = []
    with dg.instance_for_test() as instance:
        for day in days:
            result = materialize(warehouse, config, day, instance)
            assert result.success
            rows = fraud.read_alerts([fraud.alerts_file(warehouse, day)])
            # The sample's only oddities are its self calls: three days are too few for
            # any baseline, and nothing else in it is suspicious.
            assert {r["rule"] for r in rows} <= {"self_call"}
            found += [(day, r["subject"]) for r in rows]
            checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
            assert checks == {"no_error_alerts": True, "no_warn_alerts": not rows}
    assert sorted(found) == sorted(set(self_calls))


# -- the outlet sensor -------------------------------------------------------------------


class Receiver:
    """A local HTTP endpoint recording the JSON bodies POSTed to it; it can fail on purpose."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.fail_requests: set[int] = set()  # 1-based request numbers answered with 500
        self.requests = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if receiver.requests in receiver.fail_requests:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                receiver.keys.append(self.headers["Idempotency-Key"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    @property
    def alert_ids(self) -> list[str]:
        return [a["alert_id"] for body in self.bodies for a in body["alerts"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def tick(
    warehouse: Warehouse, config: Path, cursor: str | None, instance: dg.DagsterInstance
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources(warehouse, config)
    )
    result = fraud_alert_outlet(context)
    assert isinstance(result, dg.SensorResult)
    return result


def reason(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message or "" if result.skip_reason else ""


def alert_ids(warehouse: Warehouse, *days: str) -> list[str]:
    return [
        r["alert_id"] for r in fraud.read_alerts([fraud.alerts_file(warehouse, d) for d in days])
    ]


def test_the_outlet_posts_new_alerts_once_and_retries_a_failed_post(
    warehouse: Warehouse, tmp_path: Path, receiver: Receiver
) -> None:
    config_path = write_config(
        tmp_path, f'kind = "http"\nurl = "{receiver.url}"\nbatch_size = 4\ntimeout_seconds = 5'
    )
    config = load_config(config_path)
    for offset in range(7):
        fraud.refresh_day(warehouse, SCENARIO.day(offset), config)
    first = alert_ids(warehouse, FIRST_DAY)
    assert len(first) > 4  # more than one batch
    receiver.fail_requests = {2}  # the second POST fails once
    with dg.instance_for_test() as instance:
        one = tick(warehouse, config_path, None, instance)
        assert receiver.alert_ids == first[:4]
        assert "failed" in reason(one) and "HTTP 500" in reason(one)
        two = tick(warehouse, config_path, one.cursor, instance)
        assert receiver.alert_ids == first  # the rest, and nothing twice
        three = tick(warehouse, config_path, two.cursor, instance)
        assert receiver.alert_ids == first
        # Re-running a day rewrites its file with the same ids: nothing to send.
        fraud.refresh_day(warehouse, FIRST_DAY, config)
        four = tick(warehouse, config_path, three.cursor, instance)
        assert receiver.alert_ids == first
        # A new day's alerts go out on the next tick.
        fraud.refresh_day(warehouse, SECOND_DAY, config)
        tick(warehouse, config_path, four.cursor, instance)
        assert receiver.alert_ids == first + alert_ids(warehouse, SECOND_DAY)
    assert len(set(receiver.alert_ids)) == len(receiver.alert_ids)
    assert all(len(key) == 64 for key in receiver.keys)
    body = receiver.bodies[0]["alerts"][0]
    assert {"alert_id", "rule", "severity", "subject", "metrics", "baseline"} <= set(body)
    assert isinstance(body["metrics"], dict)


def test_an_unreachable_endpoint_loses_nothing(
    warehouse: Warehouse, tmp_path: Path, receiver: Receiver
) -> None:
    url = receiver.url
    receiver.server.shutdown()
    receiver.server.server_close()
    config_path = write_config(tmp_path, f'kind = "http"\nurl = "{url}"\ntimeout_seconds = 2')
    fraud.refresh_day(warehouse, FIRST_DAY, load_config(config_path))
    with dg.instance_for_test() as instance:
        result = tick(warehouse, config_path, None, instance)
    assert "failed" in reason(result)
    assert json.loads(result.cursor or "{}")["days"][FIRST_DAY]["sent"] == []


def test_the_outlet_appends_ndjson_lines_once(warehouse: Warehouse, tmp_path: Path) -> None:
    outlet = tmp_path / "out" / "alerts.ndjson"
    config_path = write_config(tmp_path, f'kind = "ndjson"\npath = "{outlet}"')
    config = load_config(config_path)
    fraud.refresh_day(warehouse, FIRST_DAY, config)
    with dg.instance_for_test() as instance:
        one = tick(warehouse, config_path, None, instance)
        two = tick(warehouse, config_path, one.cursor, instance)
        assert "no new alerts" in reason(two)
    lines = [json.loads(line) for line in outlet.read_text().splitlines()]
    assert [a["alert_id"] for a in lines] == alert_ids(warehouse, FIRST_DAY)
    assert lines == fraud.read_alerts([fraud.alerts_file(warehouse, FIRST_DAY)])


def test_the_outlet_can_be_switched_off(warehouse: Warehouse, tmp_path: Path) -> None:
    config_path = write_config(tmp_path, 'kind = "none"')
    with dg.instance_for_test() as instance:
        result = tick(warehouse, config_path, None, instance)
    assert "no outlet" in reason(result)


def test_a_cdrs_day_that_changed_gets_its_alerts_refreshed_by_automation(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'kind = "none"')
    warehouse = Warehouse(tmp_path / "warehouse")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("call_dates", ["2026-11-20"])
        defs = dg.Definitions(
            assets=[dg.AssetSpec("cdrs", partitions_def=fraud_alerts.partitions_def), fraud_alerts],
            sensors=[fraud_automation, fraud_alert_outlet],
            resources=resources(warehouse, config),
        )
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        instance.report_runless_asset_event(dg.AssetMaterialization("cdrs", partition="2026-11-20"))
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor
        )
        assert first.total_requested == 0
        assert second.get_requested_partitions(dg.AssetKey("fraud_alerts")) == {"2026-11-20"}
        dg.Definitions.validate_loadable(defs)


def test_the_resource_reads_the_environments_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[wangiri]\nmin_short_calls = 40\n")
    monkeypatch.setenv("CDR_FRAUD_CONFIG", str(path))
    rules = FraudRules.from_env()
    assert rules.config_file == str(path.resolve())
    assert rules.load().wangiri.min_short_calls == 40
    assert rules.load().irsf == FraudConfig().irsf


def test_another_step_can_publish_a_days_alerts_and_their_checks(warehouse: Warehouse) -> None:
    """What the batch run would do after the marts: refresh, record, report the checks."""

    @dg.asset
    def batch_step(context) -> None:  # a string annotation would not resolve here
        publish_fraud_alerts(context, warehouse, [FIRST_DAY, CLEAN_DAY], FraudConfig())

    with dg.instance_for_test() as instance:
        result = dg.materialize([batch_step], instance=instance)
        assert result.success
        checks = {
            (e.partition, e.check_name): e.passed for e in result.get_asset_check_evaluations()
        }
        assert checks == {
            (FIRST_DAY, "no_error_alerts"): False,
            (FIRST_DAY, "no_warn_alerts"): False,
            (CLEAN_DAY, "no_error_alerts"): True,
            (CLEAN_DAY, "no_warn_alerts"): True,
        }
        events = instance.fetch_materializations(dg.AssetKey("fraud_alerts"), limit=10).records
        assert sorted(e.partition_key or "" for e in events) == [CLEAN_DAY, FIRST_DAY]
