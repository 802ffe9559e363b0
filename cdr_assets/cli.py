"""``cdr-pipeline``: the pipeline from a shell.

- ``process``: what the landing sensor and its run do, once, headless: every file in the
  landing folder through every layer, then the serving file; exits 0 when every step ran.
- ``generate``: sample CDR files into the landing folder.
- ``dev``: the Dagster UI and daemon (sensor on) for this project, with sample data.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from cdr_assets.lib.settings import Settings, SettingsError, project_root

DAGSTER_YAML = """\
# Written by `cdr-pipeline dev`: one ingest run at a time, in the order the sensor asked.
run_queue:
  max_concurrent_runs: 4
  tag_concurrency_limits:
    - key: "cdr/writer"
      limit: 1
telemetry:
  enabled: false
"""


class Progress:
    """Step lines; on a terminal also a live status line with the elapsed time (rich)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr, highlight=False)
        self.started = time.monotonic()
        self._status: Any = None

    def line(self, text: str) -> None:
        stamp = f"[{time.monotonic() - self.started:7.1f}s]"
        self.console.print(f"{stamp} {text}", markup=False, soft_wrap=True)

    @contextmanager
    def running(self, what: str) -> Iterator[None]:
        if not self.console.is_terminal:
            yield
            return
        with self.console.status(what, spinner="dots"):
            yield


class _ProgressHandler(logging.Handler):
    """Shows the steps' one-line summaries as progress lines."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(level=logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.line(record.getMessage())


def process(settings: Settings, progress: Progress) -> int:
    import dagster as dg
    import duckdb

    from cdr_assets.definitions import defs
    from cdr_assets.defs.ingest.sensors import INGEST_JOB_NAME, new_batch_id
    from cdr_assets.defs.partitions import landing_batches
    from cdr_assets.defs.reporting import PROGRESS_LOGGER
    from cdr_assets.defs.resources import CdrPipeline
    from cdr_assets.lib.landing import list_landing
    from cdr_assets.lib.warehouse import Warehouse, sql_file_list

    files = [entry.name for entry in list_landing(settings.landing_dir)]
    if not files:
        progress.line(f"no new files in {settings.landing_dir}: nothing to do")
        return 0
    progress.line(f"{len(files)} files in {settings.landing_dir}")
    batch_id = new_batch_id()
    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    with instance:
        instance.add_dynamic_partitions(landing_batches.name or "", [batch_id])
        job = defs.resolve_job_def(INGEST_JOB_NAME)
        handler = _ProgressHandler(progress)
        progress_logger = logging.getLogger(PROGRESS_LOGGER)
        progress_logger.setLevel(logging.INFO)
        progress_logger.addHandler(handler)
        try:
            with progress.running(f"processing batch {batch_id}"):
                result = job.execute_in_process(
                    partition_key=batch_id,
                    run_config={
                        "ops": {"raw_cdrs": {"config": {"files": files}}},
                        # Failures are reported below, one clear line a step, not as tracebacks.
                        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
                    },
                    instance=instance,
                    # The settings of this invocation, not those seen when the module was imported.
                    resources={"cdr": CdrPipeline.from_settings(settings)},
                    raise_on_error=False,
                )
        finally:
            progress_logger.removeHandler(handler)
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                error = event.step_failure_data.error
                cause = error.cause if error and error.cause else error
                message = cause.message.strip() if cause else "unknown error"
                progress.line(f"FAILED {event.step_key}: {message}")
        return 1
    warehouse = Warehouse(settings.warehouse_dir)
    with duckdb.connect() as con:
        row = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'rejected'), sum(rows_read), "
            "sum(rows_accepted), sum(rows_rejected), sum(rows_duplicate) FROM read_parquet("
            + sql_file_list([warehouse.batch_file("landed_files", batch_id)])
            + ")"
        ).fetchone()
    assert row is not None
    nfiles, nrejected, read, accepted, rejected, duplicate = (int(v or 0) for v in row)
    print(
        f"batch {batch_id}: {nfiles} files ({nrejected} rejected), {read} rows read, "
        f"{accepted} accepted, {rejected} rejected, {duplicate} duplicate; "
        f"{time.monotonic() - progress.started:.1f} s; serving file {warehouse.serving_path}"
    )
    return 0


def generate(settings: Settings, seed: int) -> int:
    from cdr_assets.lib.generate import generate_sample

    paths = generate_sample(settings.landing_dir, seed=seed)
    print(f"wrote {len(paths)} sample files into {settings.landing_dir}")
    for path in paths:
        print(f"  {path.name}")
    return 0


def dev(settings: Settings, host: str, port: int, sample: bool) -> int:
    """Start `dagster dev` with a project-local DAGSTER_HOME and sample data to look at."""
    home = Path(os.environ.get("DAGSTER_HOME") or project_root() / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML, encoding="utf-8")
    if sample and not any(settings.landing_dir.glob("[!.]*")):
        generate(settings, seed=7)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    workspace = project_root() / "workspace.yaml"
    args = ["dagster", "dev", "-h", host, "-p", str(port)]
    if workspace.exists():
        args += ["-w", str(workspace)]
    else:
        args += ["-m", "cdr_assets.definitions"]
    dagster_bin = Path(sys.executable).with_name("dagster")
    if dagster_bin.exists():
        args[0] = str(dagster_bin)
    print(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={home}); Ctrl-C stops it")
    os.chdir(project_root())
    os.execvpe(args[0], args, env)
    return 0  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdr-pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("process", help="process every file in the landing folder, once")
    gen = commands.add_parser("generate", help="write sample CDR files into the landing folder")
    gen.add_argument("--seed", type=int, default=7)
    dev_parser = commands.add_parser("dev", help="start the Dagster UI with the landing sensor")
    dev_parser.add_argument("--host", default="127.0.0.1")
    dev_parser.add_argument("--port", type=int, default=3000)
    dev_parser.add_argument("--no-sample", action="store_true", help="do not generate sample data")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except (SettingsError, ValueError) as exc:
        print(f"cdr-pipeline: {exc}", file=sys.stderr)
        return 2
    if args.command == "process":
        return process(settings, Progress())
    if args.command == "generate":
        return generate(settings, args.seed)
    return dev(settings, args.host, args.port, not args.no_sample)


if __name__ == "__main__":
    sys.exit(main())
