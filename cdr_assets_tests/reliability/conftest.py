"""The scenario the crash and concurrency tests share: built once per session."""

from __future__ import annotations

import pytest

from cdr_assets_tests.reliability.harness import Scenario, build_scenario, env_int

# Rows of the batch the CI variants kill and race; small, so a run is mostly start-up.
CI_ROWS = 2_000


@pytest.fixture(scope="session")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    rows = env_int("CDR_RELIABILITY_CI_ROWS", CI_ROWS)
    return build_scenario(tmp_path_factory.mktemp("scenario"), rows)
