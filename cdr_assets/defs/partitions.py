"""Partitions: one per landing batch (a sensor tick's files) and one per UTC call date."""

from __future__ import annotations

import dagster as dg

# Keys are added by the landing sensor and `cdr-pipeline process`; retention deletes old ones.
landing_batches = dg.DynamicPartitionsDefinition(name="landing_batches")

# Keys are added as calls for a day first arrive, so a late CDR for any past day has one.
call_dates = dg.DynamicPartitionsDefinition(name="call_dates")

# One per month that has calls ("YYYY-MM"): monthly_summary and the billing exports.
call_months = dg.DynamicPartitionsDefinition(name="call_months")
