"""Where the fraud rules' thresholds and the alert outlet are configured: ``fraud.toml``."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cdr_assets.lib import fraud_config
from cdr_assets.lib.fraud_config import FraudConfig


class FraudRules(dg.ConfigurableResource):
    """The fraud rules' configuration file (default ``fraud.toml`` at the project root, or
    ``$CDR_FRAUD_CONFIG``); an absent file means the documented defaults."""

    config_file: str

    @classmethod
    def from_env(cls) -> FraudRules:
        return cls(config_file=str(fraud_config.config_path()))

    def load(self) -> FraudConfig:
        """The thresholds, read now (a changed file applies to the next run or tick)."""
        return fraud_config.load_config(Path(self.config_file))
