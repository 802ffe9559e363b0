"""``cdr-pipeline``: the pipeline from a shell.

- ``process``: what the landing sensor and its run do, once, headless: every file in the
  landing folder through every layer, then the serving file; exits 0 when every step ran.
- ``rerate``: price again, with the current decks, every batch priced by older ones.
- ``generate``: sample CDR files into the landing folder.
- ``retention``: delete what is past its retention window (``--dry-run`` lists it).
- ``export``: the calls of a date range as one CSV, JSON or Parquet file.
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


def _open_instance() -> Any:
    import dagster as dg

    # With DAGSTER_HOME the runs are recorded where the UI shows them; else in memory.
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _run_batch(
    instance: Any,
    job_name: str,
    batch_id: str,
    files: list[str],
    settings: Settings,
    progress: Progress,
) -> bool:
    """One run of a batch job, in this process; failures reported one line a step."""
    from cdr_assets.definitions import defs
    from cdr_assets.defs.partitions import landing_batches
    from cdr_assets.defs.reporting import PROGRESS_LOGGER
    from cdr_assets.defs.resources import CdrPipeline

    instance.add_dynamic_partitions(landing_batches.name or "", [batch_id])
    job = defs.resolve_job_def(job_name)
    run_config: dict[str, Any] = {
        # Failures are reported below, one clear line a step, not as tracebacks.
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    if files:
        run_config["ops"] = {"raw_cdrs": {"config": {"files": files}}}
    handler = _ProgressHandler(progress)
    progress_logger = logging.getLogger(PROGRESS_LOGGER)
    progress_logger.setLevel(logging.INFO)
    progress_logger.addHandler(handler)
    try:
        with progress.running(f"{job_name} {batch_id}"):
            result = job.execute_in_process(
                partition_key=batch_id,
                run_config=run_config,
                instance=instance,
                # The settings of this invocation, not those seen when the module was imported.
                resources={"cdr": CdrPipeline.from_settings(settings)},
                raise_on_error=False,
            )
    finally:
        progress_logger.removeHandler(handler)
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            cause = error.cause if error and error.cause else error
            message = cause.message.strip() if cause else "unknown error"
            progress.line(f"FAILED {event.step_key}: {message}")
    return bool(result.success)


def _summary(settings: Settings, batch_id: str) -> str:
    import duckdb

    from cdr_assets.lib.landing import printable
    from cdr_assets.lib.warehouse import Warehouse, sql_file_list

    warehouse = Warehouse(settings.warehouse_dir)
    landed = f"read_parquet({sql_file_list([warehouse.batch_file('landed_files', batch_id)])})"
    with duckdb.connect() as con:
        row = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'rejected'), sum(rows_read), "
            f"sum(rows_accepted), sum(rows_rejected), sum(rows_duplicate) FROM {landed}"
        ).fetchone()
        refused = con.execute(
            f"SELECT error, stored_path FROM {landed} WHERE status = 'rejected' ORDER BY 1"
        ).fetchall()
    assert row is not None
    nfiles, nrejected, read, accepted, rejected, duplicate = (int(v or 0) for v in row)
    lines = [
        f"  file rejected: {printable(error)} (kept as {printable(stored)})"
        for error, stored in refused
    ]
    manifest = warehouse.read_manifest(batch_id)
    for name, other in sorted(manifest.left_to.items() if manifest else []):
        lines.append(f"  file left to batch {other}, which took it: {printable(name)}")
    return "\n".join(
        [
            f"batch {batch_id}: {nfiles} files ({nrejected} rejected), {read} rows read, "
            f"{accepted} accepted, {rejected} rejected, {duplicate} duplicate",
            *lines,
        ]
    )


def process(settings: Settings, progress: Progress) -> int:
    """Finish any batch a failed or killed run left, then take every file now landed.

    The landing folder is listed after the unfinished batches ran, so that files such a
    batch recorded are not listed again for a new one.
    """
    from cdr_assets.defs.ingest.sensors import INGEST_JOB_NAME, new_batch_id
    from cdr_assets.lib.landing import list_landing
    from cdr_assets.lib.warehouse import Warehouse

    warehouse = Warehouse(settings.warehouse_dir)
    unfinished = warehouse.unfinished_batches()
    ran = False
    with _open_instance() as instance:

        def run(batch_id: str, files: list[str]) -> bool:
            if not _run_batch(instance, INGEST_JOB_NAME, batch_id, files, settings, progress):
                return False
            print(f"{_summary(settings, batch_id)}; {time.monotonic() - progress.started:.1f} s")
            return True

        for batch_id in unfinished:
            progress.line(f"finishing batch {batch_id}, left unfinished by an earlier run")
            if not run(batch_id, []):
                return 1
            ran = True
        files = [entry.name for entry in list_landing(settings.landing_dir)]
        if files:
            progress.line(f"{len(files)} files in {settings.landing_dir}")
            if not run(new_batch_id(), files):
                return 1
            ran = True
    if not ran:
        progress.line(f"no new files in {settings.landing_dir}: nothing to do")
        return 0
    print(f"serving file {warehouse.serving_path}")
    return 0


def rerate(settings: Settings, progress: Progress) -> int:
    """Price again every batch whose calls were priced by another deck version."""
    import duckdb

    from cdr_assets.lib.rating import load_decks
    from cdr_assets.lib.warehouse import Warehouse, sql_file_list

    warehouse = Warehouse(settings.warehouse_dir)
    version = load_decks(settings.rates_dir, warehouse.rate_decks_dir).version
    seqs = warehouse.batch_seqs()
    stale = []
    with duckdb.connect() as con:
        for path in warehouse.table_files("rated"):
            row = con.execute(
                f"SELECT count(*) FROM read_parquet({sql_file_list([path])}) "
                "WHERE deck_version IS DISTINCT FROM $version",
                {"version": version},
            ).fetchone()
            if row and row[0] and path.stem in seqs:
                stale.append(path.stem)
    if not stale:
        progress.line(f"every batch is priced by the current decks ({version})")
        return 0
    progress.line(f"{len(stale)} batches priced by older decks; re-rating with {version}")
    with _open_instance() as instance:
        for batch_id in sorted(stale, key=seqs.__getitem__):
            if not _run_batch(instance, "rerate_batches", batch_id, [], settings, progress):
                return 1
    print(f"re-rated {len(stale)} batches with decks {version}")
    return 0


def generate(settings: Settings, seed: int) -> int:
    from cdr_assets.lib.generate import generate_sample

    paths = generate_sample(settings.landing_dir, seed=seed)
    print(f"wrote {len(paths)} sample files into {settings.landing_dir}")
    for path in paths:
        print(f"  {path.name}")
    return 0


def export(settings: Settings, args: argparse.Namespace) -> int:
    """Write the calls of a date range (optionally one carrier, one country) to one file."""
    import re
    from datetime import date

    import duckdb

    from cdr_assets.lib.exports import export_calls
    from cdr_assets.lib.warehouse import Warehouse

    def bad(message: str) -> int:
        print(f"cdr-pipeline export: {message}", file=sys.stderr)
        return 2

    days: list[date] = []
    for option, text in (("--start-date", args.start_date), ("--end-date", args.end_date)):
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                raise ValueError(text)
            days.append(date.fromisoformat(text))
        except ValueError:
            return bad(f"{option} {text!r} is not a date (YYYY-MM-DD)")
    start, end = days
    if start > end:
        return bad(f"--start-date {start} is after --end-date {end}")
    output = Path(args.output).expanduser().absolute()
    if output.is_dir():
        return bad(f"--output {args.output} is a folder, not a file")
    if not output.parent.is_dir():
        return bad(f"--output {args.output}: the folder {output.parent} does not exist")
    try:
        rows = export_calls(
            Warehouse(settings.warehouse_dir),
            output,
            args.format,
            start,
            end,
            carrier_id=args.carrier_id,
            country_code=args.country_code,
            caller_numbers=settings.caller_numbers,
        )
    except (OSError, duckdb.Error) as exc:
        print(f"cdr-pipeline export: failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {rows} rows to {output}")
    return 0


def retention(settings: Settings, dry_run: bool) -> int:
    """Apply the retention policy (CDR_RETENTION_*) now: the same job the schedule runs."""
    from cdr_assets.defs.resources import CdrPipeline
    from cdr_assets.defs.retention.jobs import retention as retention_job

    with _open_instance() as instance:
        result = retention_job.execute_in_process(
            run_config={
                "ops": {"apply_retention_policy": {"config": {"dry_run": dry_run}}},
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            },
            instance=instance,
            resources={"cdr": CdrPipeline.from_settings(settings)},
            raise_on_error=False,
        )
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            error = event.step_failure_data.error
            print(f"retention failed: {error.message.strip() if error else '?'}", file=sys.stderr)
        if event.event_type_value == "STEP_OUTPUT" and event.step_output_data:
            summary = event.step_output_data.metadata.get("summary")
            if summary is not None:
                print(summary.value)
    return 0 if result.success else 1


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
    commands.add_parser("rerate", help="price again the batches priced by older decks")
    gen = commands.add_parser("generate", help="write sample CDR files into the landing folder")
    gen.add_argument("--seed", type=int, default=7)
    dev_parser = commands.add_parser("dev", help="start the Dagster UI with the landing sensor")
    dev_parser.add_argument("--host", default="127.0.0.1")
    dev_parser.add_argument("--port", type=int, default=3000)
    dev_parser.add_argument("--no-sample", action="store_true", help="do not generate sample data")
    keep = commands.add_parser("retention", help="delete what is past its retention window")
    keep.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    exp = commands.add_parser("export", help="write the calls of a date range to one file")
    exp.add_argument("--format", required=True, choices=("csv", "json", "parquet"))
    exp.add_argument("--start-date", required=True, help="first call date, YYYY-MM-DD")
    exp.add_argument("--end-date", required=True, help="last call date (included), YYYY-MM-DD")
    exp.add_argument("--carrier-id", help="only this carrier's calls")
    exp.add_argument("--country-code", help="only calls with this country_code")
    exp.add_argument("--output", required=True, metavar="FILE", help="the file to write")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except (SettingsError, ValueError) as exc:
        print(f"cdr-pipeline: {exc}", file=sys.stderr)
        return 2
    if args.command == "process":
        return process(settings, Progress())
    if args.command == "rerate":
        return rerate(settings, Progress())
    if args.command == "generate":
        return generate(settings, args.seed)
    if args.command == "retention":
        return retention(settings, args.dry_run)
    if args.command == "export":
        return export(settings, args)
    return dev(settings, args.host, args.port, not args.no_sample)


if __name__ == "__main__":
    sys.exit(main())
