"""The `muscat` command line: parse, call the catalog API, format. No SQL here."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

import catalog
from catalog.errors import MuscatError

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class Context:
    """Options shared by every command; settings are loaded when a command needs them."""

    def __init__(self, db: str | None, config: str | None) -> None:
        self._db = db
        self._config = config
        self._settings: catalog.Settings | None = None

    @property
    def settings(self) -> catalog.Settings:
        if self._settings is None:
            self._settings = catalog.load_settings(db=self._db, config=self._config)
        return self._settings

    def database(self) -> catalog.Database:
        return catalog.Database(self.settings.db_path, self.settings.lock_timeout, notify=_warn)


def _warn(message: str) -> None:
    click.echo(f"muscat: {message}", err=True)


def _scan_progress() -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(files: int, folders: int) -> None:
        sys.stderr.write(f"\rscanning: {files:,} audio files in {folders:,} folders")
        sys.stderr.flush()

    return show


def _clear_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


class MuscatGroup(click.Group):
    """Turns muscat's own errors into a one-line message and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MuscatError as exc:
            _clear_progress()
            click.echo(f"muscat: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=MuscatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="PATH", help="Catalogue file. Default: $MUSCAT_DB, else ./muscat.duckdb.")
@click.option(
    "--config",
    metavar="FILE",
    help="Configuration file. Default: $MUSCAT_CONFIG, else muscat.toml beside the catalogue.",
)
@click.version_option(catalog.__version__, prog_name="muscat")
@click.pass_context
def main(ctx: click.Context, db: str | None, config: str | None) -> None:
    """muscat: a music dataset catalogue with incremental indexing.

    Scan or watch music folders into a DuckDB catalogue, then query it with SQL, from here
    (`muscat sql`) or from any DuckDB client, also while muscat is writing to it.
    """
    ctx.obj = Context(db, config)


def _print_scan(report: Any, as_json: bool) -> int:
    _clear_progress()
    for root, reason in report.offline:
        _warn(f"{root}: {reason}; left as it was, nothing marked missing")
    for path, reason in report.problems:
        _warn(f"{path}: {reason}")
    if as_json:
        from catalog import formatting

        click.echo(formatting.to_json(report.to_json()))
    else:
        counts = report.to_json()
        click.echo(", ".join(f"{n:,} {name}" for name, n in counts.items()))
    return EXIT_SOME_FAILED if report.errors else EXIT_OK


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="A root that is now empty was emptied on purpose: mark its files missing.",
)
@click.pass_obj
def scan(obj: Context, paths: tuple[str, ...], as_json: bool, allow_empty: bool) -> None:
    """Add folders as library roots and bring the catalogue up to date with them.

    Only file metadata is read (size, modification time, inode): a rescan of an unchanged
    library reads no file contents. Moved and renamed files keep their identity. A root that
    is missing, unreadable or suddenly empty (an unmounted drive) is reported and left alone:
    its files are never marked missing because of it. A folder inside a root rescans just
    that folder.

    Exit status: 0 when everything was scanned, 1 when something was reported (an offline
    root, an unreadable folder, a broken link), 2 on a usage or catalogue error.
    """
    settings = obj.settings
    report = catalog.scan(obj.database(), paths, settings, progress=_scan_progress(), allow_empty=allow_empty)
    sys.exit(_print_scan(report, as_json))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the scan's counts as JSON.")
@click.pass_obj
def watch(obj: Context, paths: tuple[str, ...], as_json: bool) -> None:
    """Scan folders, then follow their changes (following is not built yet: it scans once)."""
    settings = obj.settings
    report = catalog.scan(obj.database(), paths, settings, progress=_scan_progress())
    code = _print_scan(report, as_json)
    _warn("following changes after the scan is not built yet; run `muscat scan` again to update")
    sys.exit(code)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (see the README for its shape).")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Files, audio, roots and, per extractor, done / pending / stale / failed."""
    from catalog import formatting

    result = catalog.status(obj.database(), obj.settings)
    if as_json:
        click.echo(formatting.to_json(result))
        return
    files = result["files"]
    click.echo(f"catalogue  {obj.settings.db_path}")
    click.echo(f"files      {files['present']:,} present, {files['missing']:,} missing")
    click.echo(f"audio      {result['audio']:,}")
    if result["roots"]:
        click.echo("")
        rows = [
            (r["path"], r["files"], r["last_scan_at"] or "never", r["last_scan_status"] or "")
            for r in result["roots"]
        ]
        click.echo(formatting.rows_to_table(["root", "files", "last scan", "state"], rows))
    if result["extractors"]:
        click.echo("")
        rows = [(name, c["done"], c["pending"], c["stale"], c["failed"]) for name, c in result["extractors"].items()]
        click.echo(formatting.rows_to_table(["extractor", "done", "pending", "stale", "failed"], rows))


@main.command()
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format; json is a list of row objects.",
)
@click.pass_obj
def sql(obj: Context, query: str, fmt: str) -> None:
    """Run read-only SQL on the catalogue (works while another muscat writes to it).

    Statements that would change anything (INSERT, DELETE, DROP, CREATE, ATTACH, COPY ... TO,
    SET, ...) are refused with exit status 2, and nothing runs. Views to start from:
    library, track_features (a column per feature), features, feature_vectors,
    feature_units, feature_stats, pending, failed.

    \b
    Example:
      muscat sql "SELECT codec, count(*) FROM library GROUP BY codec"
    """
    from catalog import formatting

    columns, rows = catalog.query(obj.database(), query, obj.settings)
    if fmt == "json":
        click.echo(formatting.rows_to_json(columns, rows))
    elif fmt == "csv":
        click.echo(formatting.rows_to_csv(columns, rows), nl=False)
    else:
        click.echo(formatting.rows_to_table(columns, rows))


def _device_option(value: str) -> str:
    """`auto`, `cpu`, or a torch device that must exist here."""
    if value in ("auto", "cpu"):
        return value
    import re

    if not re.fullmatch(r"(cuda|mps|xpu)(:\d+)?", value):
        raise click.BadParameter(f"'{value}' is not a device (auto, cpu, cuda, cuda:N, mps)")
    import torch

    kind, _, index = value.partition(":")
    backend = getattr(torch, kind, None)
    count = backend.device_count() if backend is not None and hasattr(backend, "device_count") else 0
    if count == 0 or (index and int(index) >= count):
        raise click.BadParameter(f"'{value}' is not available on this machine ({count} {kind} devices)")
    return value


@main.command()
@click.option("--only", metavar="NAME[,NAME]", help="Run only these extractors (files are probed first anyway).")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help="auto, cpu, cuda, cuda:N, ...: where GPU extractors run.")
@click.option("--workers", type=click.IntRange(min=1), help="CPU worker processes (default: workers in muscat.toml, else the number of cores).")
@click.option("--retry-failed", is_flag=True, help="Also retry runs that failed before.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
@click.pass_obj
def extract(obj: Context, only: str | None, device: str, workers: int | None, retry_failed: bool,
            as_json: bool) -> None:
    """Compute pending features: decode each file once, identify its audio, run what is missing.

    Audio that was already analysed (a copy, a retagged file) is not analysed again. Failures
    are recorded with their error (see the `failed` view) and the rest goes on; the exit status
    is then 1. Ctrl-C stops: finished results are kept, work in progress is redone next time.
    """
    from catalog import formatting

    _device_option(device)
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    bar = _progress_bar("extracting", "file")
    try:
        report = catalog.extract(obj.database(), obj.settings, only=names, workers=workers,
                                 retry_failed=retry_failed, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    for path, extractor, error in report.failures:
        _warn(f"{path}: {extractor}: {error}")
    if as_json:
        click.echo(formatting.to_json(report.to_json()))
    else:
        click.echo(f"{report.files:,} files: {report.probed:,} probed, {report.ok:,} results, "
                   f"{report.failed:,} failed, {report.skipped:,} already analysed")
    if report.interrupted:
        _warn("interrupted: finished results were kept; the rest is pending")
        sys.exit(130)
    sys.exit(EXIT_SOME_FAILED if report.failed else EXIT_OK)


class _Bar:
    def __init__(self, description: str, unit: str) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm(desc=description, unit=unit, total=0, file=sys.stderr, dynamic_ncols=True)

    def update(self, done: int, total: int) -> None:
        self._tqdm.total = total
        self._tqdm.n = done
        self._tqdm.refresh()

    def close(self) -> None:
        self._tqdm.close()


def _progress_bar(description: str, unit: str) -> _Bar | None:
    return _Bar(description, unit) if sys.stderr.isatty() else None


@main.command()
@click.argument("features", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a list of {feature, unit, count, mean, std, min, max}.")
@click.pass_obj
def stats(obj: Context, features: tuple[str, ...], as_json: bool) -> None:
    """Statistics of features over the library: Feature Unit Count Mean Std Min Max.

    Current results only, each audio counted once; a vector feature gives one row per element
    (chroma[C], ...). Name features to see only those (a vector's name selects its elements).
    """
    from catalog import formatting

    rows = catalog.stats(obj.database(), obj.settings, list(features) or None)
    if as_json:
        click.echo(formatting.to_json(rows))
        return
    if features and not rows:
        _warn("no values for " + ", ".join(features) + " (see `muscat sql \"FROM feature_units\"`)")
    table = [(r["feature"], r["unit"], r["count"], r["mean"], r["std"], r["min"], r["max"]) for r in rows]
    click.echo(formatting.rows_to_table(["Feature", "Unit", "Count", "Mean", "Std", "Min", "Max"], table))


@main.command("extractors")
@click.option("--json", "as_json", is_flag=True, help="Print a list of {name, version, device, params_hash, available, reason}.")
@click.pass_obj
def list_extractors(obj: Context, as_json: bool) -> None:
    """The extractors muscat knows: version, device, parameters hash, and whether they can run."""
    from catalog import formatting

    rows = catalog.extractors(obj.settings)
    if as_json:
        click.echo(formatting.to_json(rows))
        return
    table = [
        (r["name"], r["version"], r["device"], r["params_hash"],
         "yes" if r["available"] and r["enabled"] else "no",
         "switched off in muscat.toml" if not r["enabled"] else (r["reason"] or ""))
        for r in rows
    ]
    click.echo(formatting.rows_to_table(["name", "version", "device", "params hash", "available", "why not"], table))


if __name__ == "__main__":
    main()
