"""Jobs and schedules of the marts: the daily rollup and the monthly close, in UTC.

Both rebuild their partition from the layer below, so running one again (from the UI, or
by the schedule after a late file) gives the same tables: they are idempotent. A day or a
month without calls has no partition and its tick is skipped with the reason.
"""

from datetime import date, timedelta

import dagster as dg

from cdr_assets.defs.ingest.jobs import WRITER_TAGS
from cdr_assets.defs.partitions import call_dates, call_months
from cdr_assets.lib import marts

refresh_day_marts = dg.define_asset_job(
    "refresh_day_marts",
    selection=dg.AssetSelection.assets(*marts.DAY_TABLES, "serving_db"),
    description="Rebuild one call date's marts (and its month) from cdrs, then publish.",
    executor_def=dg.in_process_executor,
    tags=WRITER_TAGS,
)

close_month = dg.define_asset_job(
    "close_month",
    selection=dg.AssetSelection.assets("monthly_summary", "billing_exports", "serving_db"),
    description="Rebuild one month's monthly_summary from its days, write its billing "
    "exports, then publish.",
    executor_def=dg.in_process_executor,
    tags=WRITER_TAGS,
)


def yesterday(now: date) -> str:
    return (now - timedelta(days=1)).isoformat()


def previous_month(now: date) -> str:
    return (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


@dg.schedule(
    job=refresh_day_marts,
    cron_schedule="15 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Finalise yesterday (UTC): rebuild its marts and its month from cdrs.",
)
def daily_rollup(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    day = yesterday(context.scheduled_execution_time.date())
    if not context.instance.has_dynamic_partition(call_dates.name or "call_dates", day):
        return dg.SkipReason(f"no calls for {day}")
    return dg.RunRequest(
        run_key=f"daily_rollup:{day}", partition_key=day, tags={"cdr/rollup": "daily"}
    )


@dg.schedule(
    job=close_month,
    cron_schedule="30 0 1 * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Close the previous month (UTC): monthly_summary, billing exports, checks.",
)
def monthly_close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    month = previous_month(context.scheduled_execution_time.date())
    if not context.instance.has_dynamic_partition(call_months.name or "call_months", month):
        return dg.SkipReason(f"no calls in {month}")
    return dg.RunRequest(
        run_key=f"monthly_close:{month}", partition_key=month, tags={"cdr/rollup": "monthly"}
    )
