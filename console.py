"""The `muscat` console script: the command line of cli.py, with one case answered before it.

`muscat [--db PATH] [--config FILE] scan FOLDER...` on a small library (under
catalog.scanner.INLINE_WALK_FILES files) that has not changed since its last clean scan is
answered from the scan state (catalog/scan_state.py) and a walk of the folders: the catalogue is
not opened, and loading click and the command line (some 0.05 s) would take longer than the
rest of that answer. Everything else (another command, any other option or argument, a library
that changed, no scan state, a settings problem) goes to cli.run(), which does it the usual way;
for a small library that changed, its walk is done once more there (a few ms).
"""

from __future__ import annotations

import os
import sys


def run() -> None:
    request = plain_scan(sys.argv[1:])
    if request is not None:
        summary = unchanged_summary(*request)
        if summary is not None:
            try:
                sys.stdout.write(summary + "\n")
                sys.stdout.flush()
            except OSError:  # a closed pipe: let the usual path report it as it always does
                pass
            else:
                # Nothing to tear down: no catalogue was opened, no thread or process started.
                os._exit(0)
    import cli

    cli.run()


def plain_scan(args: list[str]) -> tuple[str | None, str | None, list[str]] | None:
    """(db, config, folders) for `[--db PATH] [--config FILE] scan FOLDER...` where each
    folder exists, or None for any other command line (which the command line proper parses)."""
    options: dict[str, str | None] = {"--db": None, "--config": None}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, equals, value = args[i].partition("=")
        if name not in options or options[name] is not None:
            return None
        if not equals:
            if i + 1 == len(args):
                return None
            i += 1
            value = args[i]
        if not value or value.startswith("-"):
            return None
        options[name] = value
        i += 1
    if args[i : i + 1] != ["scan"]:
        return None
    folders = args[i + 1 :]
    if not folders or any(f.startswith("-") or not os.path.isdir(f) for f in folders):
        return None
    return options["--db"], options["--config"], folders


def unchanged_summary(db: str | None, config: str | None, folders: list[str]) -> str | None:
    """What `muscat scan` prints when the scan state answers for the folders, else None."""
    import gc

    gc.disable()  # next to no garbage is made here, and the process ends with the answer
    from catalog import config as settings, scanner
    from catalog.errors import MuscatError

    try:
        report = scanner.answer_from_state(folders, settings.load_settings(db=db, config=config))
    except (MuscatError, OSError):  # reported by the usual path, as it reports them
        report = None
    gc.enable()
    return None if report is None else report.summary()


if __name__ == "__main__":
    run()
