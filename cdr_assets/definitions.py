"""The code location: every asset, check, job, sensor and resource of the pipeline."""

from __future__ import annotations

import dagster as dg

from cdr_assets.defs.enrichment import assets as enrichment_assets
from cdr_assets.defs.fraud import assets as fraud_assets
from cdr_assets.defs.fraud.resources import FraudRules
from cdr_assets.defs.fraud.sensors import fraud_alert_outlet, fraud_automation
from cdr_assets.defs.ingest import assets as ingest_assets
from cdr_assets.defs.ingest.jobs import ingest_batch, rebuild_cdrs_days, rerate_batches
from cdr_assets.defs.ingest.sensors import landing_sensor
from cdr_assets.defs.marts import assets as marts_assets
from cdr_assets.defs.marts.schedules import (
    close_month,
    daily_rollup,
    monthly_close,
    refresh_day_marts,
)
from cdr_assets.defs.rating import assets as rating_assets
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.defs.retention.jobs import retention, retention_schedule
from cdr_assets.defs.serving import assets as serving_assets
from cdr_assets.lib.settings import Settings

defs = dg.Definitions(
    assets=[
        *dg.load_assets_from_modules(
            [
                ingest_assets,
                rating_assets,
                enrichment_assets,
                marts_assets,
                fraud_assets,
                serving_assets,
            ]
        ),
    ],
    asset_checks=[],
    jobs=[
        ingest_batch,
        rebuild_cdrs_days,
        rerate_batches,
        refresh_day_marts,
        close_month,
        retention,
    ],
    schedules=[daily_rollup, monthly_close, retention_schedule],
    sensors=[landing_sensor, marts_assets.marts_automation, fraud_automation, fraud_alert_outlet],
    resources={
        "cdr": CdrPipeline.from_settings(Settings.from_env()),
        "fraud_rules": FraudRules.from_env(),
    },
)
