"""Retention: a job (with a dry-run switch) and the daily schedule that runs it.

The policy comes from the ``CDR_RETENTION_*`` variables (``cdr_assets.lib.retention``).
A run plans what is past its window, deletes exactly that under the writer lock, deletes
the Dagster partitions of the batches and call dates that went, republishes the serving
file when it named a deleted file, and reports every deletion in its output metadata.
"""

from datetime import UTC, date, datetime

import dagster as dg

from cdr_assets.defs.ingest.jobs import WRITER_TAGS
from cdr_assets.defs.partitions import call_dates, landing_batches
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib.retention import RetentionPolicy, apply_retention, plan_retention
from cdr_assets.lib.serving import publish_serving_file


class RetentionConfig(dg.Config):
    """``dry_run``: list what would be deleted, delete nothing; ``as_of``: the date the
    windows count back from (YYYY-MM-DD, default today in UTC)."""

    dry_run: bool = False
    as_of: str = ""


@dg.op(description="Delete what the retention policy says has expired (or list it: dry run).")
def apply_retention_policy(
    context: dg.OpExecutionContext, config: RetentionConfig, cdr: CdrPipeline
) -> dg.Output[None]:
    policy = RetentionPolicy.from_env()
    today = date.fromisoformat(config.as_of) if config.as_of else datetime.now(UTC).date()
    with cdr.writing() as warehouse:
        plan = plan_retention(warehouse, policy, today)
        if config.dry_run:
            context.log.info("dry run, nothing deleted:\n" + plan.summary())
            return dg.Output(
                None, metadata={"dry_run": True, "summary": plan.summary(), **plan.as_metadata()}
            )
        report = apply_retention(warehouse, plan)
        for batch in report.batch_partitions:
            if context.instance.has_dynamic_partition(landing_batches.name or "", batch):
                context.instance.delete_dynamic_partition(landing_batches.name or "", batch)
        for day in report.call_dates:
            if context.instance.has_dynamic_partition(call_dates.name or "", day):
                context.instance.delete_dynamic_partition(call_dates.name or "", day)
        if report.serving_stale:
            publish_serving_file(warehouse, cdr.caller_numbers)
    context.log.info(report.summary())
    if report.errors:
        raise dg.Failure("retention kept files it could not delete: " + "; ".join(report.errors))
    return dg.Output(
        None, metadata={"dry_run": False, "summary": report.summary(), **report.as_metadata()}
    )


@dg.job(
    description="Apply the retention policy (config dry_run: true only lists what would go).",
    tags=WRITER_TAGS,
    executor_def=dg.in_process_executor,
)
def retention() -> None:
    apply_retention_policy()


@dg.schedule(
    job=retention,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 03:00 UTC: delete what is past its retention window.",
)
def retention_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_key=f"retention:{day}")
