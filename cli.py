"""The `muscat` command line: parse, call the catalog API, format. No SQL here."""

from __future__ import annotations

import functools
import gc as collector  # the cyclic garbage collector (`gc` is a command here)
import os
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
        database = catalog.Database(self.settings.db_path, self.settings.lock_timeout, notify=_warn)
        if _console and _quick_running:
            # Left for run()'s os._exit to drop: freeing its DuckDB instance costs ~5 ms of CPU.
            _kept.append(database)
        return database


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


_console = False  # run() is the caller: this process ends when the command does
_quick_running = False  # a command marked by _ends_quickly runs
_quick_exit = False  # such a command finished: run() may exit at once
_kept: list[catalog.Database] = []  # what such a command opened from the console script (Context.database)


def _exits_at_once(command: Callable) -> Callable:
    """For the commands that leave nothing to tear down once they have succeeded (status, sql,
    scan): run() ends the process right after them."""

    @functools.wraps(command)
    def at_once(*args: Any, **kwargs: Any) -> Any:
        global _quick_exit
        try:
            result = command(*args, **kwargs)
        except SystemExit as exc:
            _quick_exit = exc.code in (None, 0)
            raise
        _quick_exit = True
        return result

    return at_once


def _ends_quickly(command: Callable) -> Callable:
    """For the read-only commands whose start-up time matters (status, sql): the cyclic
    collector stays off while they run (they make next to no garbage, and its passes over what
    importing made cost a few ms of CPU), and run() ends the process right after them."""

    @functools.wraps(command)
    def quick(*args: Any, **kwargs: Any) -> Any:
        global _quick_running
        enabled = collector.isenabled()
        collector.disable()
        _quick_running = True
        try:
            return command(*args, **kwargs)
        finally:
            _quick_running = False
            if enabled and not _console:  # called in-process (tests, Python callers): as before
                collector.enable()

    return _exits_at_once(quick)


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
        click.echo(report.summary())
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
@_exits_at_once
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
    if _console:
        # numpy, which pyarrow imports, starts OpenBLAS's threads, one per core, and they spin a
        # while: a scan does no linear algebra, and on 2 cores they took 0.06 s of CPU from it.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    report = catalog.scan(obj.database(), paths, settings, progress=_scan_progress(), allow_empty=allow_empty)
    sys.exit(_print_scan(report, as_json))


def _executor_options(command: Callable) -> Callable:
    """--executor and --ray-address, for the commands that extract."""
    command = click.option("--ray-address", metavar="ADDRESS",
                           help="The Ray cluster to use (default: [ray] address in muscat.toml, else $RAY_ADDRESS, "
                                "else a local Ray for the run).")(command)
    return click.option("--executor", type=click.Choice(["local", "ray"]),
                        help="Where extraction runs: worker processes here, or a Ray cluster (default: executor in "
                             "muscat.toml, else local).")(command)


def _apply_executor(settings: catalog.Settings, executor: str | None, ray_address: str | None) -> None:
    if executor:
        settings.executor = executor
    if ray_address:
        settings.ray_address = ray_address


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--no-extract", is_flag=True, help="Only keep the catalogue of files up to date; extract nothing.")
@click.option("--settle", type=click.FloatRange(min=0), default=2.0, show_default=True, metavar="SECONDS",
              help="Without close events (polling), a file counts once unchanged this long.")
@click.option("--poll", is_flag=True, help="Poll every root instead of following events.")
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=60.0, show_default=True, metavar="SECONDS",
              help="How often polled roots (--poll, network file systems) are rescanned.")
@click.option("--full-rescan", type=click.FloatRange(min=1), default=3600.0, show_default=True, metavar="SECONDS",
              help="How often every root is rescanned whole, whatever the events said.")
@click.option("--workers", type=click.IntRange(min=1), help="CPU worker processes (default: workers in muscat.toml, else the number of cores).")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help="auto, cpu, cuda, cuda:N, ...: where GPU extractors run (several, comma-separated: a "
                   "GPU worker on each).")
@_executor_options
@click.pass_obj
def watch(obj: Context, paths: tuple[str, ...], no_extract: bool, settle: float, poll: bool,
          poll_interval: float, full_rescan: float, workers: int | None, device: str, executor: str | None,
          ray_address: str | None) -> None:
    """Scan folders, then follow their changes and extract new audio, until Ctrl-C or SIGTERM.

    New, changed, moved and deleted files reach the catalogue within seconds; files still
    being written are taken once their writer closes them (or, when polling, once they have
    not changed for --settle seconds). New files are extracted first, then the backlog. Roots
    on network file systems are polled. Other programs can query the catalogue throughout.
    On Ctrl-C or SIGTERM, finished results are written and work in progress is picked up on
    the next start.
    """
    import signal
    import threading
    import time as clock

    settings = obj.settings
    settings.device = _device_option(device)
    _apply_executor(settings, executor, ray_address)
    database = obj.database()
    status_line = sys.stderr.isatty()

    def log(message: str) -> None:
        if status_line:
            sys.stderr.write("\r\033[K")
        click.echo(f"{clock.strftime('%H:%M:%S')} {message}", err=True)

    engine = None if no_extract else catalog.Engine(database, settings, keep_results_when_locked=True,
                                                        halt_when_out_of_space=False, prompt_results=True)
    if engine is not None:
        engine.size = workers
    watcher = catalog.Watcher(database, settings, list(paths), settle=settle, poll=poll,
                              poll_interval=poll_interval, full_rescan=full_rescan, engine=engine, log=log)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())

    report = watcher.start()
    log("scanned: " + report.summary())
    for root, reason in report.offline:
        log(f"{root}: {reason}; left as it was, nothing marked missing")
    seen_failures = 0
    last_shown = 0.0
    recent: list[tuple[float, int]] = []  # (time, jobs done) over the last 10 s, for files/s

    def tick() -> None:
        nonlocal seen_failures, last_shown
        if engine is not None:
            for path, extractor, error in engine.report.failures[seen_failures:]:
                log(f"{path}: {extractor}: {error}")
            seen_failures = len(engine.report.failures)
            for reason in engine.report.gpu_restarts:
                log(f"the GPU worker on {reason}; it was started again")
            engine.report.gpu_restarts.clear()
            if engine.report.no_space:  # not recorded: redone at the next rescan once there is room
                log(f"out of disk space: {engine.report.no_space}; left pending")
                engine.report.no_space = None
        now = clock.monotonic()
        if now - last_shown < (0.5 if status_line else 30.0):
            return
        last_shown = now
        done = engine.done_jobs if engine else 0
        recent.append((now, done))
        while recent and now - recent[0][0] > 10:
            recent.pop(0)
        rate = (done - recent[0][1]) / max(now - recent[0][0], 1.0)
        queue = engine.waiting if engine else 0
        polled = f" ({len(watcher.polled)} polled)" if watcher.polled else ""
        line = (f"watching {len(watcher.roots)} root{'s' if len(watcher.roots) != 1 else ''}{polled} · "
                f"queue {queue:,} · {rate:.1f} files/s · {done:,} done · {seen_failures:,} failed")
        if status_line:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif done or queue:
            click.echo(f"{clock.strftime('%H:%M:%S')} {line}", err=True)

    try:
        watcher.run(stopping, tick)
    finally:
        watcher.stop()
        if engine is not None:
            engine.stop()
        if status_line:
            sys.stderr.write("\r\033[K")
        log("stopped: finished results are written; work in progress resumes on the next start")
    sys.exit(EXIT_OK)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (see the README for its shape).")
@click.pass_obj
@_ends_quickly
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
    help="Output format; json is a list of row objects (how each type prints: above).",
)
@click.pass_obj
@_ends_quickly
def sql(obj: Context, query: str, fmt: str) -> None:
    """Run read-only SQL on the catalogue (works while another muscat writes to it).

    Statements that would change anything (INSERT, DELETE, DROP, CREATE, ATTACH, COPY ... TO,
    SET, ...) are refused with exit status 2, and nothing runs. Views to start from:
    library, track_features (a column per feature), features, feature_vectors,
    feature_units, feature_stats, pending, failed.

    Every DuckDB type prints: NULL is NULL in a table, empty in csv and null in json; BLOBs
    as hexadecimal (deadbeef); dates, times, timestamps (TIMESTAMPTZ in the session's time
    zone, with its offset) and intervals as DuckDB writes them; DECIMAL and HUGEINT with every
    digit; NaN and infinities as nan, inf and -inf, and as null in json (JSON has no such
    numbers); LIST, STRUCT and MAP values as JSON text in csv, as arrays and objects in json.

    \b
    Example:
      muscat sql "SELECT codec, count(*) FROM library GROUP BY codec"
    """
    from catalog import formatting

    columns, rows = catalog.query(obj.database(), query, obj.settings, as_text=True)
    if fmt == "json":
        click.echo(formatting.rows_to_json(columns, rows))
    elif fmt == "csv":
        click.echo(formatting.rows_to_csv(columns, rows), nl=False)
    else:
        click.echo(formatting.rows_to_table(columns, rows))


def _device_option(value: str) -> str:
    """`auto`, `cpu`, or torch devices that must exist here (several: separated by commas)."""
    devices = [device.strip() for device in value.split(",")]
    if len(devices) > 1 and "auto" in devices:
        raise click.BadParameter("auto stands alone; name the devices to use several (cuda:0,cuda:1)")
    return ",".join(_one_device(device) for device in devices)


def _one_device(value: str) -> str:
    if value in ("auto", "cpu"):
        return value
    import re

    if not re.fullmatch(r"(cuda|mps|xpu)(:\d+)?", value):
        raise click.BadParameter(f"'{value}' is not a device (auto, cpu, cuda, cuda:N, mps, or several "
                                 "separated by commas)")
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
              help="auto, cpu, cuda, cuda:N, ...: where GPU extractors run (several, comma-separated: a "
                   "GPU worker on each).")
@click.option("--workers", type=click.IntRange(min=1), help="CPU worker processes (default: workers in muscat.toml, else the number of cores).")
@click.option("--retry-failed", is_flag=True, help="Also retry runs that failed before.")
@click.option("--stale", is_flag=True, help="Also recompute stale results (see `muscat reindex`).")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
@_executor_options
@click.pass_obj
def extract(obj: Context, only: str | None, device: str, workers: int | None, retry_failed: bool,
            stale: bool, as_json: bool, executor: str | None, ray_address: str | None) -> None:
    """Compute pending features: decode each file once, identify its audio, run what is missing.

    Audio that was already analysed (a copy, a retagged file) is not analysed again. Failures
    are recorded with their error (see the `failed` view) and the rest goes on; the exit status
    is then 1. Ctrl-C stops: finished results are kept, work in progress is redone next time.
    On a GPU, one GPU worker holds the models and batches the windows of all files in flight
    (`gpu_worker` and `gpu_batch` in muscat.toml). With --executor ray, the work runs on a Ray
    cluster whose nodes mount the library and artifacts_dir under the same paths (README: Many
    machines); this process stays the only writer of the catalogue.
    """
    obj.settings.device = _device_option(device)
    _apply_executor(obj.settings, executor, ray_address)
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    _run_extraction(obj, names, workers, retry_failed, stale, as_json)


def _run_extraction(obj: Context, names: list[str] | None, workers: int | None, retry_failed: bool,
                    stale: bool, as_json: bool) -> None:
    from catalog import formatting

    import signal

    def terminate(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops as Ctrl-C does: results kept, workers (and actors) gone

    signal.signal(signal.SIGTERM, terminate)
    bar = _progress_bar("extracting", "file")
    try:
        report = catalog.extract(obj.database(), obj.settings, only=names, workers=workers,
                                 retry_failed=retry_failed, progress=bar.update if bar else None, stale=stale)
    finally:
        if bar:
            bar.close()
    for path, extractor, error in report.failures:
        _warn(f"{path}: {extractor}: {error}")
    for reason in report.gpu_restarts:
        _warn(f"the GPU worker on {reason}; it was started again")
    if as_json:
        click.echo(formatting.to_json(report.to_json()))
    else:
        click.echo(f"{report.files:,} files: {report.probed:,} probed, {report.ok:,} results, "
                   f"{report.failed:,} failed, {report.skipped:,} already analysed")
        if report.gpu:
            click.echo(f"GPU worker on {report.gpu['device']}: {report.gpu['items']:,} items in "
                       f"{report.gpu['batches']:,} forward passes ({report.gpu['shared_batches']:,} shared by "
                       f"several files)")
    if report.vanished:
        _warn(f"{report.vanished:,} files were moved or deleted while waiting: scan again to find them")
    if report.interrupted:
        _warn("interrupted: finished results were kept; the rest is pending")
        sys.exit(130)
    if report.no_space:
        _warn(f"error: out of disk space: {report.no_space}")
        _warn(f"finished results were kept; nothing was recorded for the rest, which is pending: free "
              f"space under {obj.settings.artifacts_dir} (or set artifacts_dir elsewhere) and run again")
        sys.exit(EXIT_USAGE)
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


@main.command()
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "jsonl", "hf"]), default="parquet",
              show_default=True, help="A file (parquet, csv, jsonl), or a Hugging Face audiofolder (hf: OUT is a folder).")
@click.option("--where", metavar="SQL", help="Only rows where this holds, over the exported columns "
                                              "(e.g. \"split = 'train' AND bpm > 100\").")
@click.option("--features", metavar="NAME[,NAME]", help="Only these features (default: every declared feature).")
@click.option("--include-stale", is_flag=True,
              help="Also values of older extractor versions, named in each row's stale_features.")
@click.option("--audio", type=click.Choice(["link", "copy", "none"]), default="link", show_default=True,
              help="hf: symlink the audio files into OUT, copy them, or leave them out.")
@click.option("--stems", is_flag=True, help="hf: the Demucs stems too (<stem>_file_name columns).")
@click.option("--json", "as_json", is_flag=True, help="Print {out, format, rows, columns, features, audio_files, unsplit}.")
@click.pass_obj
def export(obj: Context, out: str, fmt: str, where: str | None, features: str | None, include_stale: bool,
           audio: str, stems: bool, as_json: bool) -> None:
    """Write the catalogue as a dataset: one row per present file.

    Columns: path, audio_id, the tags (artist, album, ...), split (the part in the split named
    `default`, once `muscat split` has made one), then every feature: numbers, text (key,
    scale) and vectors as lists. Units, descriptions and normal ranges are in the Parquet
    schema's field metadata, and in features.json beside a CSV or JSONL file. Only current
    values: one from an older extractor version is NULL unless --include-stale. Rows stream,
    so large catalogues export in little memory.

    \b
    Examples:
      muscat export features.parquet
      muscat export train.csv --format csv --where "split = 'train'" --features bpm,key,chroma
      muscat export dataset/ --format hf --audio copy     # load_dataset("audiofolder", data_dir="dataset")
    """
    from catalog import formatting

    names = [n.strip() for n in features.split(",") if n.strip()] if features else None
    bar = _progress_bar("exporting", "rows")
    try:
        report = catalog.export(obj.database(), obj.settings, out, fmt, where=where, features=names,
                                include_stale=include_stale, audio=audio, stems=stems,
                                progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if report.unsplit:
        _warn(f"{report.unsplit:,} files are in no part of the split (added since `muscat split`): they are in "
              "unsplit/; run `muscat split` again to place them")
    if as_json:
        click.echo(formatting.to_json(report.to_json()))
    else:
        extra = f", {report.audio_files:,} audio files" if report.audio_files else ""
        click.echo(f"{report.rows:,} rows x {len(report.columns)} columns ({report.features} features{extra}) "
                   f"-> {report.out}")


@main.command("split")
@click.option("--by", type=click.Choice(["artist", "album", "audio"]), default="artist", show_default=True,
              help="What must not be split up: an artist, an album, or only an audio (and its copies).")
@click.option("--ratios", default="80,10,10", show_default=True, metavar="A,B[,C...]",
              help="Shares of the parts, in percent (summing to 100) or fractions (summing to 1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Another seed, another (deterministic) split.")
@click.option("--name", default="default", show_default=True,
              help="Name of the split (several can be kept); track_features.split shows `default`.")
@click.option("--names", metavar="A,B[,C...]", help="Names of the parts (default: train,validation,test; train,test).")
@click.option("--json", "as_json", is_flag=True, help='Print {"name", "by", "seed", "splits": {PART: files}}.')
@click.pass_obj
def split_command(obj: Context, by: str, ratios: str, seed: int, name: str, names: str | None,
                  as_json: bool) -> None:
    """Split the library into train / validation / test without leakage, deterministically.

    Files are grouped: every file of an artist (--by artist) or album (--by album) together, all
    files of one audio together, and near-duplicates (the same recording in other encodings,
    see `muscat duplicates`) together; files without the key are grouped by their audio. Groups
    are placed in the order of a hash of their key and the seed, each in the part that hash
    points to unless that part is already full, so the parts come close to the ratios. Made
    again, groups already placed keep their part: new files never move old ones. Stored in the
    view `splits(name, path, audio_id, split)`; `track_features.split` and `muscat export`
    show the split named `default`.

    \b
    Example:
      muscat split --by artist --ratios 80,10,10 --seed 1
    """
    from catalog import formatting
    from catalog.splits import parse_names, parse_ratios

    shares = parse_ratios(ratios)
    report = catalog.split(obj.database(), obj.settings, by, shares, seed=seed, name=name,
                           names=parse_names(names, len(shares)))
    if as_json:
        click.echo(formatting.to_json(report.to_json()))
        return
    total = sum(report.counts.values())
    rows = [(part, n, f"{100 * report.shares[part]:.1f} %") for part, n in report.counts.items()]
    click.echo(formatting.rows_to_table(["split", "files", "share"], rows))
    how = "made afresh" if report.fresh else f"{report.kept:,} kept their place, {report.placed:,} placed"
    click.echo(f"{report.name}: {total:,} files in {report.groups:,} groups by {report.by} (seed {report.seed}); {how}")
    if report.moved:
        _warn(f"{report.moved:,} files changed part: new near-duplicates joined groups that were apart")


@main.command()
@click.option("--json", "as_json", is_flag=True, help='Print a list of {"paths": [...], "audio_ids": [...]}.')
@click.pass_obj
def duplicates(obj: Context, as_json: bool) -> None:
    """Groups of files that hold one recording: the same audio twice, or the same recording in
    another encoding (an MP3 and a FLAC of one master), found by Chromaprint fingerprints.

    Needs the chromaprint extractor's results (`muscat extract`; it runs by default where
    libchromaprint is installed, see `muscat extractors`). `muscat split` keeps each group in one
    part.
    """
    from catalog import formatting

    groups = catalog.duplicates(obj.database(), obj.settings)
    fingerprints = next((e for e in catalog.extractors(obj.settings) if e["name"] == "chromaprint"), None)
    if fingerprints is None or not (fingerprints["available"] and fingerprints["enabled"]):
        why = (fingerprints["off_reason"] or fingerprints["reason"]) if fingerprints else "not installed"
        _warn(f"chromaprint cannot run ({why}): files without a fingerprint are matched as exact copies only, "
              "not as other encodings")
    if as_json:
        click.echo(formatting.to_json([g.to_json() for g in groups]))
        return
    for i, group in enumerate(groups):
        if i:
            click.echo("")
        click.echo(f"{len(group.paths)} files, {len(group.audio_ids)} audio:")
        for path in group.paths:
            click.echo(f"  {path}")
    if not groups:
        click.echo("no duplicates")


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
         r["off_reason"] or r["reason"] or "")
        for r in rows
    ]
    click.echo(formatting.rows_to_table(["name", "version", "device", "params hash", "available", "why not"], table))


@main.command()
@click.option("--dry-run", is_flag=True, help="Only show what is stale, why, and the estimated time.")
@click.option("--only", metavar="NAME[,NAME]", help="Only these extractors.")
@click.option("--workers", type=click.IntRange(min=1), help="CPU worker processes (default: workers in muscat.toml, else the number of cores).")
@click.option("--json", "as_json", is_flag=True, help="Print {stale, estimated_seconds, extractors: {NAME: {stale, estimated_seconds}}}.")
@click.pass_obj
def reindex(obj: Context, dry_run: bool, only: str | None, workers: int | None, as_json: bool) -> None:
    """Recompute results made stale by an extractor upgrade, a parameter change, new model
    weights or a changed input (stems that appeared), after showing what and why.

    Estimates come from the seconds past runs took per second of audio, on each device (before
    any run: 0.02 s per audio second on a CPU worker). Old values stay queryable, marked stale,
    until each new result lands; `muscat gc` removes them afterwards.
    """
    from catalog import formatting

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    if names:  # an extractor that cannot run: exit 2 with the reason, before anything else
        from catalog.extraction import select_extractors
        from catalog.registry import load_extractors

        select_extractors(load_extractors(obj.settings), names)
    summary = catalog.stale_summary(obj.database(), obj.settings, names, workers)
    if as_json and dry_run:
        click.echo(formatting.to_json(summary))
        return
    if not as_json:
        rows = [
            (name, e["stale"], ", ".join(f"{r} {n}" for r, n in e["reasons"].items()),
             _duration(e["estimated_seconds"]) + ("" if e["basis"] == "measured" else " (no runs yet: guessed)"))
            for name, e in summary["extractors"].items()
        ]
        if rows:
            click.echo(formatting.rows_to_table(["extractor", "stale", "why", "estimated time"], rows))
        click.echo(f"{summary['stale']:,} stale results, about {_duration(summary['estimated_seconds'])} to redo"
                   + (" (dry run: nothing changed)" if dry_run else ""))
    if dry_run or not summary["stale"]:
        return
    _run_extraction(obj, names, workers, False, True, as_json)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@main.command()
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option("--older-than", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="DAYS",
              help="Remove files missing for longer than this.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def gc(obj: Context, dry_run: bool, older_than: float, as_json: bool) -> None:
    """Remove superseded results (once their replacement exists), files missing for longer than
    --older-than days, and audio no file holds any more, with their features."""
    from catalog import formatting

    report = catalog.gc(obj.database(), obj.settings, older_than, dry_run)
    if as_json:
        click.echo(formatting.to_json(report.to_json()))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb}: {report.superseded_runs:,} superseded results, {report.missing_files:,} long-missing "
               f"files, {report.orphaned_audio:,} orphaned audio, {report.values:,} feature values, "
               f"{report.artifact_bytes / 2**20:,.1f} MiB of artifacts, {report.temporary_files:,} "
               "leftover temporary files")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print [{area, ok, what, fix, state}] as JSON (state: ok, off, fail).")
@click.pass_obj
def doctor(obj: Context, as_json: bool) -> None:
    """Check the catalogue and its surroundings, and say how to fix what is wrong.

    The catalogue: it opens, its schema is current, its invariants hold (no row twice, every
    ok result complete, recorded stems on disk whole), no leftovers of killed writes. Around
    it: decoders (MP3, M4A), the configured device, each extractor's model files, inotify
    limits for `watch`, free disk space. Exit status 1 when something is wrong (a FAIL line); an
    optional model that is not installed is an `off` line with the command that gets it, and so
    is a catalogue not created yet: a fresh install exits 0.
    """
    from catalog import formatting
    from catalog.doctor import doctor as run_checks

    findings = run_checks(obj.database(), obj.settings)
    if as_json:
        click.echo(formatting.to_json([f.to_json() for f in findings]))
    else:
        for finding in findings:
            label = {"ok": "ok  ", "off": "off ", "fail": "FAIL"}[finding.state]
            click.echo(f"{label}  {finding.area}: {finding.what}")
            if finding.fix:
                click.echo(f"      {'get it' if finding.off else 'fix'}: {finding.fix}")
    sys.exit(EXIT_OK if all(f.ok for f in findings) else EXIT_SOME_FAILED)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="How many tracks.")
@click.option("--using", type=click.Choice(["timbre", "harmony", "rhythm", "all"]), default="all", show_default=True,
              help="What to compare: timbre (spectral statistics, MFCCs), harmony (chroma, key), rhythm "
                   "(tempo, onset rate, danceability), or all three, weighed equally.")
@click.option("--json", "as_json", is_flag=True, help="Print a list of {path, audio_id, distance}, nearest first.")
@click.pass_obj
def similar(obj: Context, path: str, k: int, using: str, as_json: bool) -> None:
    """The tracks nearest to PATH: cosine distance (0 the same direction, 2 the opposite) between
    their feature vectors, each feature standardised over the library first so that none weighs
    more for its unit.

    Computed in DuckDB from the current results (stale ones until they are redone); PATH's own
    copies (files of the same audio) are left out. PATH must be in the catalogue and have the
    results the aspect needs (timbre: spectral; harmony: hpcp and key; rhythm: rhythm); the
    features each aspect uses are listed by `muscat sql "FROM similarity_features"`.
    """
    from catalog import formatting
    from catalog.similarity import similar as nearest

    found = nearest(obj.database(), obj.settings, path, k=k, using=using)
    if as_json:
        click.echo(formatting.to_json(found))
        return
    if not found:
        _warn(f"no other track has {using} features to compare with")
    rows = [(i, round(r["distance"], 4), r["path"]) for i, r in enumerate(found, 1)]
    click.echo(formatting.rows_to_table(["#", "distance", "path"], rows))


@main.command()
@click.argument("features", nargs=-1, required=True, metavar="FEATURE [FEATURE2]")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to draw: FILE.png, FILE.svg, or FILE.html (a page with the figure in it).")
@click.option("--by", type=click.Choice(["split", "genre"]), help="Colour by split (muscat split) or by genre tag.")
@click.option("--split-name", metavar="NAME", help="With --by split: which split (default: the only one, else 'default').")
@click.pass_obj
def plot(obj: Context, features: tuple[str, ...], out: str, by: str | None, split_name: str | None) -> None:
    """A histogram of one feature, or a scatter of two, with units on the axes and the
    extractor's declared normal range shaded.

    One value per present file (as in track_features). A categorical feature (key, scale)
    gives bars per value; a vector's element is named as in `muscat stats` (chroma[C],
    mfcc_mean[3]). With --by, the bars are stacked (the points coloured) per split or genre.

    \b
    Examples:
      muscat plot bpm --out bpm.png
      muscat plot loudness_integrated loudness_range --by genre --out loudness.svg
    """
    from catalog.plots import plot as draw

    if len(features) > 2:
        raise click.UsageError("name one feature (a histogram) or two (a scatter)")
    report = draw(obj.database(), obj.settings, features, out, by=by, split=split_name)
    groups = "" if list(report.groups) == [""] else " (" + ", ".join(f"{g} {n:,}" for g, n in report.groups.items()) + ")"
    click.echo(f"{report.out}: {report.files:,} files{groups}")


@main.command()
@click.argument("out", type=click.Path(dir_okay=False), metavar="OUT.html")
@click.pass_obj
def report(obj: Context, out: str) -> None:
    """Write one self-contained HTML page describing the dataset: files, hours, formats, sample
    rates, failures by reason, a histogram of every feature with its unit and declared normal
    range, the key/scale distribution, the mean chroma profile, and the splits (once `muscat
    split` has made some).

    The figures are drawn by matplotlib, inline as SVG; the page has no script and loads
    nothing from elsewhere, so it opens offline and can be sent as it is.
    """
    from catalog.reports import report as write_report

    data = write_report(obj.database(), obj.settings, out)
    click.echo(f"{out}: {len(data.histograms):,} feature histograms, {data.overview[0][1]}")


@main.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True,
              help="Print a list of {extractor, files: [{name, path, present, verified, bytes}], licence, source}.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """Model files per extractor: where muscat looks for them, whether each is present and
    verified (size, sha256), their licence, and the command that gets them.

    \b
      muscat models fetch demucs         download Demucs' published model (htdemucs_ft: ~320 MiB)
      muscat models add drums PATH       install your copy of ADTOF's checkpoint

    Exit status 1 when a file is there but fails its check (damaged or replaced).
    """
    if ctx.invoked_subcommand is not None:
        return
    from catalog import formatting
    from catalog.models import listing

    entries = listing(ctx.obj.settings)
    if as_json:
        click.echo(formatting.to_json(entries))
    else:
        for entry in entries:
            if entry is not entries[0]:
                click.echo("")
            state = "ready" if entry["ready"] else (entry["off_reason"] if not entry["enabled"] else "not ready")
            model = f" {entry['model']}" if entry.get("model") else ""
            click.echo(f"{entry['extractor']}{model}: {state}" + (f" ({entry['reason']})" if entry["reason"] else ""))
            if entry["folder"]:
                click.echo(f"  folder   {entry['folder']}")
            for f in entry["files"]:
                status = ("verified" if f["verified"] else f["problem"] or "present (no checksum to check)") \
                    if f["present"] else "missing"
                size = f"{f['bytes'] / 2**20:,.1f} MiB" if f["bytes"] is not None else "-"
                click.echo(f"  file     {f['name']}  {size}  {status}")
            click.echo(f"  licence  {entry['licence']}")
            click.echo(f"  source   {entry['source']}")
            if entry["command"] and not entry["ready"]:
                click.echo(f"  get it   {entry['command']}")
    broken = any(f["present"] and f["problem"] for entry in entries for f in entry["files"])
    sys.exit(EXIT_SOME_FAILED if broken else EXIT_OK)


def _download_progress() -> Callable[[str, int, int | None], None] | None:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def show(name: str, done: int, total: int | None) -> None:
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(desc=name, total=total, initial=done, unit="B", unit_scale=True,
                                    unit_divisor=1024, file=sys.stderr, dynamic_ncols=True, leave=False)
        bar.total = total
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return show


@models.command("fetch")
@click.argument("name", metavar="NAME")
@click.option("--model", metavar="MODEL", help="Which model (default: model under [extractors.demucs], htdemucs_ft).")
@click.option("--json", "as_json", is_flag=True, help="Print {extractor, model, folder, files, downloaded_bytes}.")
@click.pass_obj
def models_fetch(obj: Context, name: str, model: str | None, as_json: bool) -> None:
    """Download an extractor's published model files, verify each, and install them where the
    extractor reads them (demucs: `repo` when set, else <models_dir>/demucs).

    Files already there are verified, not downloaded again; an interrupted download resumes. A
    file that fails its checksum is deleted (exit status 2); without network the message lists
    the URLs to fetch by hand and the folder to put them in. Only `muscat models fetch` ever
    downloads: `extract` and `watch` never do.
    """
    from catalog import formatting
    from catalog.models import fetch

    report = fetch(obj.settings, name, model, progress=_download_progress(),
                   log=None if as_json else (lambda message: click.echo(message, err=True)))
    if as_json:
        click.echo(formatting.to_json(report.to_json()))
        return
    downloaded = report.downloaded_bytes
    click.echo(f"{report.extractor} {report.model}: {len(report.files)} files in {report.folder}, all verified"
               + (f"; {downloaded / 2**20:,.1f} MiB downloaded" if downloaded else "; nothing to download"))


@models.command("add")
@click.argument("name", metavar="NAME")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print {extractor, path, sha256, bytes, source}.")
@click.pass_obj
def models_add(obj: Context, name: str, path: str, as_json: bool) -> None:
    """Install a model file you have (drums: the checkpoint of ADTOF's PyTorch port, which its
    licence lets no one else ship), after checking that it loads strictly into the architecture.

    It is copied into <models_dir>/drums with its sha256 recorded; drums then uses it unless
    `weights` under [extractors.drums] names another file. A mismatch names the missing and
    unexpected keys (exit status 2).
    """
    from catalog import formatting
    from catalog.models import add

    result = add(obj.settings, name, path)
    if as_json:
        click.echo(formatting.to_json(result))
        return
    click.echo(f"{result['extractor']}: added {result['path']} ({result['bytes'] / 2**20:,.1f} MiB, sha256 "
               f"{result['sha256'][:16]}...)")
    if result["overridden_by"]:
        _warn(f"[extractors.{result['extractor']}] weights = {result['overridden_by']!r} is used instead: "
              "remove it to use this one")


def run() -> None:
    """The `muscat` console script: `main()`, and after a command that succeeded and left
    nothing behind (status, sql, scan: `_exits_at_once`), an exit without tearing the process
    down.

    Once `muscat status` has printed, Python's finalization and the unloading of DuckDB (its
    instance of thousands of functions, the library's static objects) cost another ~25 ms of
    CPU before the shell gets its prompt back (and freeing the catalogue's reading instance, ~5 ms
    more, is left to it: Context.database); after a first scan of 100,000 files, the collector's
    last passes over what the scan left take 0.1 s more. After these commands there is nothing
    to clean up: the catalogue is detached (a write on the way, such as the extractors' record,
    was committed and detached before the read; a scan's transaction, and its scan state, before
    it returned), no worker process or thread of ours runs (the walkers and tag readers were
    collected), and the output is flushed here. Every other command, and any failure, ends the
    usual way."""
    global _console
    _console = True
    try:
        main()
    except SystemExit as exc:
        if _quick_exit and exc.code in (None, 0):
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:  # a closed pipe, say: let the usual exit report it as it always did
                raise exc from None
            os._exit(0)
        raise


if __name__ == "__main__":
    run()
