"""Names the contract (cdr-contract.md) fixes, written out once for the tests that check the
code against them, never taken from the code under test."""

from __future__ import annotations

# The "Refused rows" table: every reason code, in the contract's order.
REASON_CODES: tuple[str, ...] = (
    "malformed_record",
    "missing_field:call_id",
    "missing_field:called_number",
    "missing_field:start_time",
    "missing_field:carrier_id",
    "missing_field:duration_seconds",
    "invalid_number:called_number",
    "invalid_timestamp:start_time",
    "invalid_timestamp:end_time",
    "end_before_start",
    "invalid_duration",
    "invalid_call_type",
    "invalid_country_code",
    "invalid_disposition",
)
