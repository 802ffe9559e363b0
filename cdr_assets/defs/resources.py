"""The pipeline's one resource: its settings, and the warehouse writer lock for a run."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

import dagster as dg

from cdr_assets.lib.settings import (
    DEFAULT_MAX_DURATION_SECONDS,
    DEFAULT_MAX_FILE_BYTES,
    Settings,
)
from cdr_assets.lib.warehouse import Warehouse, writer_lock


class CdrPipeline(dg.ConfigurableResource):
    """Folders and contract settings (defaults from the CDR_* environment variables)."""

    landing_dir: str
    rates_dir: str
    warehouse_dir: str
    default_region: str | None = None
    source_timezone: str = "UTC"
    max_duration_seconds: int = DEFAULT_MAX_DURATION_SECONDS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    caller_numbers: str = "clear"
    lock_timeout_seconds: float = 3600.0
    unrated_warn_share: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings) -> CdrPipeline:
        return cls(
            landing_dir=str(settings.landing_dir),
            rates_dir=str(settings.rates_dir),
            warehouse_dir=str(settings.warehouse_dir),
            default_region=settings.default_region,
            source_timezone=settings.source_timezone,
            max_duration_seconds=settings.max_duration_seconds,
            max_file_bytes=settings.max_file_bytes,
            caller_numbers=settings.caller_numbers,
        )

    @property
    def settings(self) -> Settings:
        from pathlib import Path

        return Settings(
            landing_dir=Path(self.landing_dir),
            rates_dir=Path(self.rates_dir),
            warehouse_dir=Path(self.warehouse_dir),
            default_region=self.default_region,
            source_timezone=self.source_timezone,
            max_duration_seconds=self.max_duration_seconds,
            max_file_bytes=self.max_file_bytes,
            caller_numbers=self.caller_numbers,
        )

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.settings.warehouse_dir)

    @contextmanager
    def writing(self) -> Generator[Warehouse, None, None]:
        """The warehouse, held for writing by this process alone for the block's duration."""
        warehouse = self.warehouse
        with writer_lock(warehouse.root, self.lock_timeout_seconds):
            yield warehouse
