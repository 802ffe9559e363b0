"""The pandera schemas: the rules name the contract's reasons, and the checks can fail."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pandera.errors
import polars as pl
import pytest

from cdr_assets.lib.schemas import REASONS, validated_schema, with_utc_instants
from cdr_assets_tests.contract import REASON_CODES


def test_the_rules_are_the_contracts_reasons_in_order() -> None:
    assert REASONS == REASON_CODES


def accepted(**changes: Any) -> pl.DataFrame:
    row = {
        "call_id": "c1",
        "caller_number": "+12025550123",
        "called_number": "+442079460958",
        "start_time": datetime(2026, 11, 20, 10, tzinfo=UTC),
        "end_time": datetime(2026, 11, 20, 10, 1, tzinfo=UTC),
        "duration_seconds": 60,
        "carrier_id": "carrier_001",
        "call_type": "international",
        "country_code": "GB",
        "disposition": "ANSWERED",
        "call_date": date(2026, 11, 20),
        "source_file": "a.csv",
        "source_row": 1,
        **changes,
    }
    return with_utc_instants(pl.DataFrame([row]))


def test_an_accepted_row_passes() -> None:
    validated_schema(86_400).validate(accepted())


@pytest.mark.parametrize(
    "changes",
    [
        {"called_number": "0044207946"},
        {"duration_seconds": 86_401},
        {"call_type": "mobile"},
        {"country_code": "XK"},
        {"disposition": "HUNG_UP"},
        {"call_date": date(2026, 11, 21)},
        {"end_time": datetime(2026, 11, 20, 9, tzinfo=UTC)},
        {"source_row": 0},
    ],
)
def test_a_tampered_row_fails(changes: dict[str, Any]) -> None:
    with pytest.raises(pandera.errors.SchemaErrors):
        validated_schema(86_400).validate(accepted(**changes), lazy=True)
