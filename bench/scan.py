"""Scan speed against `find` (a tree of empty-ish files) and against beets (a tagged library).

Part 1, `tree`: builds --files files in --folders folders (default 100,000 in 1,000), then times
as separate processes, each several times (median):

  find      find DIR -type f -printf '%s %T@ %p\\n'   (the baseline: one stat per file)
  cold      muscat scan DIR on a new catalogue
  rescan    muscat scan DIR again, nothing changed

and reports each as a ratio to find, with muscat's peak resident memory (the walker processes
included). Targets (issue 2): rescan within 3x find, cold within 6x, peak under 500 MB.

Part 2, `library`: encodes --tagged small files (default 2,000 of 0.5-1 s, 44.1 kHz stereo)
with real encoders through PyAV -- MP3 (libmp3lame), FLAC, M4A (AAC) -- in --albums folders
laid out artist/album (default 40: 10 artists x 4 albums), tags each with mutagen (artist,
album, albumartist, title, tracknumber, discnumber, date, genre), then times as processes on
the same files, page cache warm, process start-up included, each several times (median):

  muscat cold      muscat --db NEW scan LIB
  muscat rescan    muscat --db SAME scan LIB again, nothing changed
  beets import     beet import -A LIB into a new library (autotag, copy, move, write off)
  beets update     beet update, nothing changed
  start-up         muscat --version and beet version: what a process that does nothing costs

beets gets its own config folder and library database under the temporary folder (BEETSDIR,
with a config.yaml: no plugins, import without autotag/copy/write), so nothing of the user's
beets is read or written, and it needs no network. Targets (issue 12): beets import at least 3x
muscat's cold scan, beet update at least 10x muscat's rescan. It checks that beets holds every
file (`beet ls`) and, once muscat reads tags, that muscat does (`library.artist`).

With --before REV, muscat's scans are also timed at that commit (exported with `git archive`
and run with this environment's packages, as bench/executor.py does), alternating with this
tree's on the same files, so that a change is measured against what it changes under the same
load. Each figure also has its CPU seconds (user + system, the walker processes included): the
steadier one on a shared machine.

beets is in the bench-only dependency group:

    uv run --group bench python bench/scan.py [--parts tree,library] [--files 100000]
        [--folders 1000] [--repeat 5] [--tagged 2000] [--albums 40] [--tagged-repeat 5]
        [--before REV]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkout import MUSCAT_AT, export  # noqa: E402

MUSCAT = Path(sys.executable).parent / "muscat"
BEET = Path(sys.executable).parent / "beet"
# Set by --before: (short commit, the command that runs muscat at it, its environment).
BEFORE: tuple[str, list[str], dict[str, str]] | None = None


def remove_catalogue(db: Path) -> None:
    for suffix in ("", ".wal", ".scan-state"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def build_tree(root: Path, files: int, folders: int) -> None:
    per_folder = files // folders
    for d in range(folders):
        folder = root / f"artist{d // 50:03d}" / f"album{d:04d}"
        folder.mkdir(parents=True)
        for i in range(per_folder):
            with open(folder / f"{i:03d} track.flac", "wb") as f:
                f.write(b"x" * (i + 1))


def timed(cmd: list[str], env: dict[str, str] | None = None,
          output_lines: list[str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS in bytes and CPU seconds of one process (and the children it
    waited for).

    When `output_lines` is given, what the process printed (stdout and stderr) is appended to it;
    otherwise stdout is discarded.
    """
    # As on a user's machine, Python keeps the modules it compiles (.pyc): where
    # PYTHONDONTWRITEBYTECODE is set, every process would compile numpy and pyarrow again.
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        out = err if output_lines is not None else subprocess.DEVNULL
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}): {text}")
    if output_lines is not None:
        output_lines.extend(line for line in text.splitlines() if line.strip())
    return elapsed, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def machine_line() -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def run_tree(work: Path, args: argparse.Namespace) -> None:
    tree = work / "tree"
    print(f"building {args.files:,} files in {args.folders:,} folders under {tree} ...", flush=True)
    build_tree(tree, args.files, args.folders)
    db = work / "bench.duckdb"
    find_cmd = ["find", str(tree), "-type", "f", "-printf", r"%s %T@ %p\n"]
    scan_cmd = [str(MUSCAT), "--db", str(db), "scan", str(tree)]
    timed(find_cmd)  # warm the page cache for everyone alike

    results: dict[str, list[tuple[float, int, float]]] = {"find": [], "cold": [], "rescan": []}
    if BEFORE is not None:
        results.update({f"cold@{BEFORE[0]}": [], f"rescan@{BEFORE[0]}": []})
    for _ in range(args.repeat):
        results["find"].append(timed(find_cmd))
        remove_catalogue(db)
        results["cold"].append(timed(scan_cmd))
        results["rescan"].append(timed(scan_cmd))
        if BEFORE is not None:
            remove_catalogue(db)
            before_cmd = BEFORE[1] + ["--db", str(db), "scan", str(tree)]
            results[f"cold@{BEFORE[0]}"].append(timed(before_cmd, BEFORE[2]))
            results[f"rescan@{BEFORE[0]}"].append(timed(before_cmd, BEFORE[2]))

    find_s = statistics.median(t for t, _, _ in results["find"])
    find_cpu = statistics.median(c for _, _, c in results["find"])
    print()
    print(machine_line())
    print(f"tree:    {args.files:,} files in {args.folders:,} folders; median of {args.repeat} runs; {load_line()}\n")
    print(f"{'':14} {'seconds':>8} {'x find':>7} {'CPU s':>7} {'x find':>7} {'peak MB':>8}  target")
    targets = {"find": None, "cold": 6.0, "rescan": 3.0}
    for name, runs in results.items():
        seconds = statistics.median(t for t, _, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        peak = max(m for _, m, _ in runs) / 2**20
        ratio = seconds / find_s
        target = targets.get(name)
        verdict = "" if target is None else f"<= {target:.0f}x {'ok' if ratio <= target else 'MISSED'}"
        if name in ("cold", "rescan"):
            verdict += f", < 500 MB {'ok' if peak < 500 else 'MISSED'}"
        print(f"{name:14} {seconds:8.3f} {ratio:7.2f} {cpu:7.3f} {cpu / find_cpu:7.2f} {peak:8.0f}  {verdict}")
    print()


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


# --- part 2: a tagged library, muscat against beets ---------------------------------------

GENRES = ("Rock", "Jazz", "Electronic", "Folk", "Hip-Hop", "Classical", "Ambient", "Soul")
# (extension, PyAV codec, container, bit rate): 2 in 5 MP3, 2 in 5 FLAC, 1 in 5 M4A.
FORMATS = (
    ("mp3", "libmp3lame", "mp3", 192_000),
    ("flac", "flac", "flac", None),
    ("mp3", "libmp3lame", "mp3", 192_000),
    ("flac", "flac", "flac", None),
    ("m4a", "aac", "ipod", 160_000),
)


def encode(path: str, pcm, rate: int, codec: str, container: str, bit_rate: int | None) -> None:
    """Encode int16 [frames, 2] samples with PyAV (FFmpeg's encoders in its wheel)."""
    import av
    import numpy as np

    with av.open(path, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        if bit_rate:
            stream.bit_rate = bit_rate
        step = 4096
        for start in range(0, len(pcm), step):
            chunk = np.ascontiguousarray(pcm[start : start + step]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):  # PyAV converts to the codec's format and frame size
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_tagged_file(job: tuple[str, int, dict[str, str]]) -> None:
    import mutagen
    import numpy as np

    path, index, tags = job
    _, codec, container, bit_rate = FORMATS[index % len(FORMATS)]
    rng = np.random.default_rng(index)
    rate = 44100
    seconds = rng.uniform(0.5, 1.0)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 4))
    signal = 0.2 * tone * np.exp(-2 * t) + 0.02 * rng.standard_normal(len(t))
    pcm = (np.stack([signal, 0.8 * signal], axis=1) * 32767).clip(-32768, 32767).astype(np.int16)
    encode(path, pcm, rate, codec, container, bit_rate)
    audio = mutagen.File(path, easy=True)  # EasyID3, FLAC's Vorbis comments, EasyMP4
    if audio.tags is None:
        audio.add_tags()
    for key, value in tags.items():
        audio[key] = value
    audio.save()


def build_library(root: Path, files: int, albums: int) -> dict[str, int]:
    artists = max(1, albums // 4)
    per_album = [files // albums + (1 if a < files % albums else 0) for a in range(albums)]
    jobs = []
    index = 0
    for a in range(albums):
        artist = f"Artist {a % artists:02d}"
        album = f"Album {a // artists + 1} of {artist}"
        folder = root / artist / album
        folder.mkdir(parents=True)
        for track in range(1, per_album[a] + 1):
            ext = FORMATS[index % len(FORMATS)][0]
            tags = {
                "artist": artist, "albumartist": artist, "album": album,
                "title": f"Song {track} ({artist}, {album})",
                "tracknumber": f"{track}/{per_album[a]}", "discnumber": "1/1",
                "date": str(1970 + a % 50), "genre": GENRES[a % len(GENRES)],
            }
            jobs.append((str(folder / f"{track:02d} Song {track}.{ext}"), index, tags))
            index += 1
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(make_tagged_file, jobs, chunksize=16))
    counts: dict[str, int] = {}
    for path, _, _ in jobs:
        ext = path.rpartition(".")[2]
        counts[ext] = counts.get(ext, 0) + 1
    return counts


def beets_env(work: Path, library: Path) -> dict[str, str]:
    """BEETSDIR for beets alone; its music directory is the library itself (files stay in place)."""
    beetsdir = work / "beetsdir"
    beetsdir.mkdir(exist_ok=True)
    (beetsdir / "config.yaml").write_text(
        f"directory: {library}\n"
        f"library: {beetsdir / 'library.db'}\n"
        "plugins: []\n"
        "import:\n"
        "  copy: no\n"
        "  move: no\n"
        "  write: no\n"
        "  autotag: no\n"
        "  quiet: yes\n"
        "  resume: no\n"
        "  incremental: no\n"
        "  log:\n"
    )
    env = dict(os.environ)
    env["BEETSDIR"] = str(beetsdir)
    env.pop("XDG_CONFIG_HOME", None)
    return env


def warm(root: Path) -> int:
    """Read every file once, so both tools find the same warm page cache."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                total += len(f.read())
    return total


def capture(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)


def muscat_tag_check(db: Path, files: int) -> str:
    done = capture([str(MUSCAT), "--db", str(db), "sql", "--format", "csv",
                    "select count(*) from library where artist is not null"])
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["no message"])[0]
        if '"artist" not found' in message:
            return ("muscat tags: the library view has no artist column yet (tag reading has not landed), "
                    "so muscat's cold scan read no tags")
        return f"muscat tags: the query failed: {message}"
    lines = done.stdout.strip().splitlines()
    count = int(lines[-1]) if lines and lines[-1].strip().isdigit() else -1
    verdict = "ok" if count == files else "MISSED"
    why = " (the column is there but empty: this scan read no tags)" if count == 0 else ""
    return f"muscat tags: {count:,} of {files:,} files have an artist in library{why}  {verdict}"


def run_library(work: Path, args: argparse.Namespace) -> None:
    if not BEET.exists():
        raise SystemExit("beets is not installed: run with `uv run --group bench python bench/scan.py`")
    lib = work / "library"
    print(f"encoding {args.tagged:,} tagged files in {args.albums} folders under {lib} ...", flush=True)
    started = time.perf_counter()
    counts = build_library(lib, args.tagged, args.albums)
    size = warm(lib)
    print(f"  {', '.join(f'{n:,} {ext}' for ext, n in sorted(counts.items()))}; "
          f"{size / 2**20:.1f} MiB; {time.perf_counter() - started:.1f} s", flush=True)

    db = work / "tagged.duckdb"
    env = beets_env(work, lib)
    beets_db = Path(env["BEETSDIR"]) / "library.db"
    cold_cmd = [str(MUSCAT), "--db", str(db), "scan", str(lib)]
    import_cmd = [str(BEET), "import", "-A", "-q", str(lib)]
    update_cmd = [str(BEET), "update"]
    beets_output: list[str] = []

    version_cmds = {"muscat start-up": [str(MUSCAT), "--version"], "beets start-up": [str(BEET), "version"]}
    names = ["muscat cold", "muscat rescan", "beets import", "beets update", *version_cmds]
    if BEFORE is not None:
        names[2:2] = [f"cold@{BEFORE[0]}", f"rescan@{BEFORE[0]}"]
    results: dict[str, list[tuple[float, int, float]]] = {k: [] for k in names}
    for run in range(args.tagged_repeat):
        remove_catalogue(db)
        results["muscat cold"].append(timed(cold_cmd))
        results["muscat rescan"].append(timed(cold_cmd))
        if BEFORE is not None:
            remove_catalogue(db)
            before_cmd = BEFORE[1] + ["--db", str(db), "scan", str(lib)]
            results[f"cold@{BEFORE[0]}"].append(timed(before_cmd, BEFORE[2]))
            results[f"rescan@{BEFORE[0]}"].append(timed(before_cmd, BEFORE[2]))
            remove_catalogue(db)  # the library check below reads this tree's catalogue
            timed(cold_cmd)
        for old in beets_db.parent.glob("library.db*"):
            old.unlink()
        results["beets import"].append(timed(import_cmd, env, beets_output))
        results["beets update"].append(timed(update_cmd, env, beets_output))
        for name, cmd in version_cmds.items():  # a process that does nothing: the floor of each
            results[name].append(timed(cmd, env))
        print(f"  run {run + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s" for k, v in results.items()), flush=True)

    listed = capture([str(BEET), "ls"], env)
    beets_items = len(listed.stdout.splitlines()) if listed.returncode == 0 else -1
    albums = capture([str(BEET), "ls", "-a"], env)
    beets_albums = len(albums.stdout.splitlines()) if albums.returncode == 0 else -1

    median = {k: statistics.median(t for t, _, _ in v) for k, v in results.items()}
    print()
    print(machine_line())
    print(f"library: {args.tagged:,} tagged files ({', '.join(f'{n:,} {e}' for e, n in sorted(counts.items()))}) "
          f"in {args.albums} folders; median of {args.tagged_repeat} runs, processes, warm cache; {load_line()}\n")
    print(f"{'':16} {'seconds':>8} {'CPU s':>7} {'peak MB':>8}")
    for name, runs in results.items():
        cpu = statistics.median(c for _, _, c in runs)
        print(f"{name:16} {median[name]:8.3f} {cpu:7.3f} {max(m for _, m, _ in runs) / 2**20:8.0f}")
    print()
    cold_ratio = median["beets import"] / median["muscat cold"]
    rescan_ratio = median["beets update"] / median["muscat rescan"]
    print(f"beets import / muscat cold scan: {cold_ratio:6.2f}x  (target >= 3x: {'ok' if cold_ratio >= 3 else 'MISSED'})")
    print(f"beets update / muscat rescan:    {rescan_ratio:6.2f}x  (target >= 10x: {'ok' if rescan_ratio >= 10 else 'MISSED'})")
    print(f"  (start-up alone, a process that does nothing: muscat {median['muscat start-up']:.2f} s, "
          f"beets {median['beets start-up']:.2f} s)")
    verdict = "ok" if beets_items == args.tagged else "MISSED"
    print(f"beets holds {beets_items:,} items in {beets_albums:,} albums (beet ls; expected {args.tagged:,})  {verdict}")
    print(muscat_tag_check(db, args.tagged))
    # beets names each album folder as it imports it; anything else it printed is worth a look.
    said = [line for line in beets_output if not line.startswith(str(lib))]
    if said:
        distinct = sorted(set(line.replace(str(work), "TMP") for line in said))
        print(f"beets printed {len(said)} other lines over {args.tagged_repeat} imports and updates "
              f"({len(distinct)} distinct), e.g.:")
        for line in distinct[:4]:
            print(f"  {line[:150]}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="tree,library",
                        help="comma-separated: tree (100k files against find), library (tagged files against beets)")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tagged", type=int, default=2_000)
    parser.add_argument("--albums", type=int, default=40)
    parser.add_argument("--tagged-repeat", type=int, default=5)
    parser.add_argument("--before", metavar="REV", help="also time muscat's scans at this commit, alternating")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"tree", "library"}:
        parser.error("--parts takes tree, library or both")

    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        if args.before:
            global BEFORE
            code = work / "before"
            commit = export(args.before, code)
            # -P: `python -c` would put the current folder (this checkout) before PYTHONPATH.
            BEFORE = (commit, MUSCAT_AT, {**os.environ, "PYTHONPATH": str(code)})
        if "tree" in parts:
            run_tree(work, args)
        if "library" in parts:
            run_library(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
