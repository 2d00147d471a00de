"""Decoding speed per format: muscat's decoder against the ffmpeg command line, and libsndfile.

Encodes, per format, --files stereo files of --seconds each (default 10 of 30 s: chords, a beat
and some noise) with PyAV's encoders (FFmpeg in its wheel; Ogg Vorbis with the ffmpeg command
line's libvorbis when it has it, since PyAV's wheel has only FFmpeg's experimental native Vorbis
encoder), then times on the same files, page cache warm, each on one CPU core (the process is
pinned to it with sched_setaffinity, so a tool that starts threads gets no second core), the
best of --repeat runs (--stat median for the median; on a machine shared with other work the
best run is the one least disturbed), in CPU seconds (user + system, every thread; --clock wall
for wall seconds), the tools taking turns in each round:

  muscat      catalog.decode.decode(path, 3600) on each file -- decoding plus identity hashing,
              what muscat does once per file -- in one Python process per format; timed around
              the loop, after the imports and one untimed decode of a short file of the same
              format (so interpreter start-up and library loading are not counted)
  ffmpeg      ffmpeg -v error -nostdin -threads 1 -i W -threads 1 -i F1 ... -map 0:a:0 -f null -
              -map 1:a:0 -f null - ...: one process decoding the short file W and every file of
              the format to the null muxer (which converts to 16-bit PCM), minus the same command
              with W alone -- so, as for the others, neither its start-up (printed; about 0.1 s)
              nor the first decode is counted
  soundfile   soundfile.read(path, dtype="float32") on each file (libsndfile, no hashing), timed
              like muscat; whether libsndfile decodes the format at all, and every frame of it
  PyAV        each audio frame of the first audio stream decoded and turned into an array
              (frame.to_ndarray(), the codec's own sample format; codec thread_count 1, no
              hashing), timed like muscat: the cost of PyAV's decoding itself

and prints per format: seconds, realtime factor (audio seconds per second), and the ratio
to ffmpeg. Target (issue 12): muscat within 1.3x ffmpeg. A tool that decodes less than 99% of
the frames that were encoded is flagged (libsndfile stops early on some Opus files). Only the
public entry point `catalog.decode.decode(path, max_seconds) -> Audio` (with .frames,
.sample_rate, .audio_id) is used, so this runs unchanged whatever decoder is behind it.

    uv run python bench/decode.py [--files 10] [--seconds 30] [--repeat 5] [--stat min|median]
        [--formats wav,flac,mp3,ogg,opus,m4a,wma,wv,alac] [--cpu N] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# name -> (extension, PyAV codec, container, bit rate, sample rate, sample format, codec options).
# Lossless formats are 16-bit, as CDs are (left alone, PyAV takes a codec's first sample format:
# 8-bit for WavPack, 32-bit for ALAC); lossy ones take their codec's own.
FORMATS: dict[str, tuple[str, str, str | None, int | None, int, str | None, dict[str, str]]] = {
    "wav": ("wav", "pcm_s16le", "wav", None, 44100, "s16", {}),
    "flac": ("flac", "flac", "flac", None, 44100, "s16", {}),
    "mp3": ("mp3", "libmp3lame", "mp3", 192_000, 44100, None, {}),
    "ogg": ("ogg", "vorbis", "ogg", 192_000, 44100, None, {"strict": "experimental"}),
    "opus": ("opus", "libopus", "ogg", 128_000, 48000, None, {}),
    "m4a": ("m4a", "aac", "ipod", 192_000, 44100, None, {}),
    "wma": ("wma", "wmav2", "asf", 192_000, 44100, None, {}),
    "wv": ("wv", "wavpack", "wv", None, 44100, "s16p", {}),
    "alac": ("m4a", "alac", "ipod", None, 44100, "s16p", {}),
}
LABELS = {"ogg": "ogg vorbis", "m4a": "m4a (aac)", "alac": "alac (m4a)"}
TOOLS = ("muscat", "ffmpeg", "soundfile", "pyav")
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --- making the files ---------------------------------------------------------------------

def signal(seconds: float, rate: int, seed: int) -> np.ndarray:
    """int16 [frames, 2]: four chords, a kick-like beat and a little noise, different per seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = np.zeros((n, 2))
    bar = 4 * 60 / rng.uniform(90, 140)
    base = 110 * 2 ** (rng.integers(0, 12) / 12)
    for i, start in enumerate(np.arange(0, seconds, bar)):
        a, b = int(start * rate), min(n, int((start + bar) * rate))
        seg = t[a:b] - t[a]
        root = base * 2 ** ((0, 5, 7, 9)[i % 4] / 12)
        for k, interval in enumerate((0, 4, 7, 12)):
            f = root * 2 ** (interval / 12)
            tone = sum(np.sin(2 * np.pi * f * h * seg) / h for h in (1, 2, 3)) * np.exp(-0.7 * seg)
            out[a:b, 0] += tone * (1.0 - 0.2 * k)
            out[a:b, 1] += tone * (0.4 + 0.2 * k)
        for beat in range(4):
            c = a + int(beat * bar / 4 * rate)
            d = min(b, c + rate // 8)
            if c >= d:
                break
            seg2 = t[c:d] - t[c]
            out[c:d] += (np.sin(2 * np.pi * 55 * seg2) * np.exp(-30 * seg2))[:, None]
    out += 0.01 * rng.standard_normal(out.shape)
    out *= 0.8 / max(1e-9, np.abs(out).max())
    return (out * 32767).astype(np.int16)


def encode(path: str, pcm: np.ndarray, rate: int, codec: str, container: str | None,
           bit_rate: int | None, sample_format: str | None, options: dict[str, str]) -> None:
    import av

    with av.open(path, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo", options=dict(options))
        if bit_rate:
            stream.bit_rate = bit_rate
        if sample_format:
            stream.codec_context.format = sample_format
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


def ffmpeg_has_libvorbis() -> bool:
    if not shutil.which("ffmpeg"):
        return False
    done = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True)
    return "libvorbis" in done.stdout


def make_file(job: tuple[str, str, float, int, bool]) -> None:
    name, path, seconds, seed, libvorbis = job
    _, codec, container, bit_rate, rate, sample_format, options = FORMATS[name]
    pcm = signal(seconds, rate, seed)
    if name == "ogg" and libvorbis:
        wav = path + ".wav"
        encode(wav, pcm, rate, "pcm_s16le", "wav", None, "s16", {})
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", wav, "-c:a", "libvorbis", "-q:a", "6",
                        path], check=True)
        os.unlink(wav)
    else:
        encode(path, pcm, rate, codec, container, bit_rate, sample_format, options)


def make_files(work: Path, formats: list[str], files: int, seconds: float) -> dict[str, tuple[list[str], str]]:
    libvorbis = ffmpeg_has_libvorbis()
    made: dict[str, tuple[list[str], str]] = {}
    jobs = []
    for f_index, name in enumerate(formats):
        folder = work / name
        folder.mkdir()
        ext = FORMATS[name][0]
        paths = [str(folder / f"track{i:02d}.{ext}") for i in range(files)]
        warmup = str(folder / f"warmup.{ext}")
        made[name] = (paths, warmup)
        jobs += [(name, p, seconds, 1000 * f_index + i, libvorbis) for i, p in enumerate(paths)]
        jobs.append((name, warmup, 1.0, 1000 * f_index + 999, libvorbis))
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(make_file, jobs))
    return made


# --- timing, in a child process pinned to one core -----------------------------------------

def child(tool: str, warmup: str, paths: list[str]) -> None:
    """Decode `paths` with `tool` after one untimed decode of `warmup`; print a JSON result."""
    source = None
    if tool == "muscat":
        import catalog.decode
        from catalog.decode import decode

        source = catalog.decode.__file__

        def run(path: str) -> tuple[int, int]:
            audio = decode(path, 3600)
            return audio.frames, audio.sample_rate
    elif tool == "soundfile":
        import soundfile as sf

        def run(path: str) -> tuple[int, int]:
            data, rate = sf.read(path, dtype="float32", always_2d=True)
            return len(data), rate
    elif tool == "pyav":
        import av

        def run(path: str) -> tuple[int, int]:
            with av.open(path) as container:
                stream = container.streams.audio[0]
                stream.codec_context.thread_count = 1
                frames = 0
                for frame in container.decode(stream):
                    frame.to_ndarray()
                    frames += frame.samples
                return frames, stream.codec_context.sample_rate
    else:
        raise SystemExit(f"unknown tool {tool}")

    def attempt(path: str) -> tuple[int, int, str | None]:
        try:
            frames, rate = run(path)
            return frames, rate, None
        except Exception as exc:  # noqa: BLE001 -- a format a tool cannot read is a result here
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return 0, 0, f"{type(exc).__name__}: {reason}"[:200]

    attempt(warmup)
    wall, cpu = time.perf_counter(), time.process_time()
    results = [attempt(p) for p in paths]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu": cpu, "results": results, "source": source}))


def pin(cpu: int):
    def pinned() -> None:
        os.sched_setaffinity(0, {cpu})
    return pinned


def run_child(tool: str, warmup: str, paths: list[str], cpu: int) -> dict:
    env = {**os.environ, **SINGLE_THREAD_ENV}
    done = subprocess.run([sys.executable, __file__, "--child", tool, warmup, *paths], capture_output=True,
                          text=True, env=env, preexec_fn=pin(cpu))
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return {"wall": float("nan"), "cpu": float("nan"), "results": [(0, 0, f"crashed: {tail}")] * len(paths)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def ffmpeg_cmd(paths: list[str]) -> list[str]:
    cmd = ["ffmpeg", "-v", "error", "-nostdin"]
    for p in paths:
        cmd += ["-threads", "1", "-i", p]
    for i in range(len(paths)):
        cmd += ["-map", f"{i}:a:0", "-threads", "1", "-f", "null", "-"]
    return cmd


def run_ffmpeg(paths: list[str], cpu: int) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(ffmpeg_cmd(paths), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=pin(cpu))
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    problem = None if code == 0 and not err.strip() else f"exit {code}: {' '.join(err.split())[:200]}"
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "problem": problem}


# --- the report ----------------------------------------------------------------------------

def frames_check(results: list, expected: int) -> str:
    """'' when every file gave at least 99% of the encoded frames, else what went wrong."""
    errors = [r[2] for r in results if r[2]]
    if errors:
        return f"{len(errors)}/{len(results)} failed: {errors[0]}"
    short = [r[0] for r in results if r[0] < 0.99 * expected]
    if short:
        return f"{len(short)}/{len(results)} short: {min(short):,} of {expected:,} frames"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stat", choices=("min", "median"), default="min", help="best run (default) or the median")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--cpu", type=int, default=None, help="the core to pin to (default: the last allowed)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="what the table compares: CPU seconds (default; steadier on a shared machine) or wall")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2:])
        return
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        parser.error(f"unknown formats {unknown}; known: {', '.join(FORMATS)}")
    if not shutil.which("ffmpeg"):
        raise SystemExit("the ffmpeg command line is needed (Debian: apt-get install ffmpeg)")
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))

    work = Path(tempfile.mkdtemp(prefix="muscat-decode-bench-"))
    try:
        print(f"encoding {args.files} files of {args.seconds:g} s per format ({', '.join(formats)}) under {work} ...",
              flush=True)
        started = time.perf_counter()
        made = make_files(work, formats, args.files, args.seconds)
        print(f"  {time.perf_counter() - started:.1f} s; vorbis encoder: "
              f"{'libvorbis (ffmpeg command line)' if ffmpeg_has_libvorbis() else 'FFmpeg native vorbis (PyAV)'}",
              flush=True)
        for paths, warmup in made.values():  # warm the page cache for everyone alike
            for p in [warmup, *paths]:
                Path(p).read_bytes()

        rows = []
        decoder_source = "?"
        pick = min if args.stat == "min" else statistics.median
        for name in formats:
            paths, warmup = made[name]
            rate = FORMATS[name][4]
            expected = int(args.seconds * rate)
            runs: dict[str, list[dict]] = {t: [] for t in TOOLS}
            for _ in range(args.repeat):
                for tool in TOOLS:
                    if tool == "ffmpeg":  # all files after the short one, less the short one alone
                        alone, both = run_ffmpeg([warmup], cpu), run_ffmpeg([warmup, *paths], cpu)
                        runs[tool].append({"wall": both["wall"], "cpu": both["cpu"], "alone wall": alone["wall"],
                                           "alone cpu": alone["cpu"], "problem": both["problem"] or alone["problem"]})
                    else:
                        runs[tool].append(run_child(tool, warmup, paths, cpu))
                        decoder_source = runs[tool][-1].get("source") or decoder_source
            row = {"format": name, "mib": sum(os.path.getsize(p) for p in paths) / 2**20}
            for tool in TOOLS:
                for clock in ("wall", "cpu"):
                    row[f"{tool} {clock}"] = pick(r[clock] for r in runs[tool])
                    if tool == "ffmpeg":  # the best (or median) of each, then the difference
                        row[f"ffmpeg alone {clock}"] = pick(r[f"alone {clock}"] for r in runs[tool])
                        row[f"ffmpeg {clock}"] -= row[f"ffmpeg alone {clock}"]
                row[tool] = row[f"{tool} {args.clock}"]
                if tool == "ffmpeg":
                    row["ffmpeg note"] = next((r["problem"] for r in runs[tool] if r["problem"]), "")
                else:
                    row[tool + " note"] = frames_check(runs[tool][-1]["results"], expected)
            rows.append(row)
            print(f"  {name}: muscat {row['muscat']:.3f} s, ffmpeg {row['ffmpeg']:.3f} s, "
                  f"soundfile {row['soundfile']:.3f} s, PyAV {row['pyav']:.3f} s", flush=True)

        audio = args.files * args.seconds
        print()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores (each tool pinned to core {cpu}), "
              f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
        ff_version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
        import av
        import soundfile as sf

        print(f"{ff_version.split(' Copyright')[0]}; PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}); "
              f"libsndfile {sf.__libsndfile_version__}")
        clock = "CPU seconds (user + system, all threads)" if args.clock == "cpu" else "wall seconds"
        print(f"files:   {args.files} x {args.seconds:g} s stereo per format ({audio:g} s of audio); "
              f"{'best' if args.stat == 'min' else 'median'} of {args.repeat} runs; {clock}, each tool on one core")
        alone = statistics.median(row[f"ffmpeg alone {args.clock}"] for row in rows)
        print(f"ffmpeg:  (a 1 s file, then all files) in one process, minus the 1 s file alone "
              f"({alone:.3f} s: start-up, mostly), -threads 1")
        print("muscat, soundfile, PyAV: one process per format, imports and a first decode (the 1 s file) not counted")
        print(f"muscat:  catalog.decode.decode from {decoder_source}\n")
        print(f"{'format':12} {'MiB':>6} | {'muscat s':>8} {'x rt':>6} {'/ffmpeg':>7} | {'ffmpeg s':>8} {'x rt':>6} | "
              f"{'sndfile s':>9} {'x rt':>6} {'/ffmpeg':>7} | {'PyAV s':>7} {'x rt':>6} {'/ffmpeg':>7}")
        notes = []
        for row in rows:
            ff = row["ffmpeg"]
            if ff < 0.05:
                notes.append(f"{LABELS.get(row['format'], row['format'])}: ffmpeg took {ff:.3f} s, too little to "
                             "compare (the clock's resolution, start-up jitter): use more --files or --seconds")
                ff = max(ff, 1e-3)
            cells = []
            for tool in ("muscat", "soundfile", "pyav"):
                note = row[tool + " note"]
                if note.startswith(f"{args.files}/{args.files} failed"):
                    cells.append(None)
                else:
                    seconds = max(row[tool], 1e-6)
                    cells.append((seconds, audio / seconds, seconds / ff))
                if note:
                    notes.append(f"{LABELS.get(row['format'], row['format'])}, {tool}: {note.replace(str(work), 'TMP')}")
            if row["ffmpeg note"]:
                notes.append(f"{LABELS.get(row['format'], row['format'])}, ffmpeg: {row['ffmpeg note']}")

            def fmt(cell, width: int) -> str:
                if cell is None:
                    return f"{'cannot':>{width}} {'':>6} {'':>7}"
                s, rt, ratio = cell
                mark = "*" if ratio > 1.3 else " "
                return f"{s:{width}.3f} {rt:6.0f} {ratio:6.2f}{mark}"

            m = cells[0]
            target = "" if m is None else ("ok" if m[2] <= 1.3 else "MISSED")
            print(f"{LABELS.get(row['format'], row['format']):12} {row['mib']:6.1f} | {fmt(m, 8)} | "
                  f"{ff:8.3f} {audio / ff:6.0f} | {fmt(cells[1], 9)} | {fmt(cells[2], 7)}  {target}")
        print(f"\nx rt: audio seconds per {args.clock} second; /ffmpeg: seconds over ffmpeg's (* above the 1.3x target);"
              " the last column: muscat within 1.3x ffmpeg")
        print("muscat includes identity hashing; soundfile and PyAV decode only.")
        wall_over_cpu = {t: max(0.0, sum(r[t + " wall"] for r in rows)) / max(1e-9, sum(r[t + " cpu"] for r in rows))
                         for t in TOOLS}
        print("wall / CPU time, all formats: " + ", ".join(f"{t} {v:.2f}" for t, v in wall_over_cpu.items())
              + "  (near 1 on an idle core; more when other processes share it)")
        if notes:
            print("\nflagged (fewer than 99% of the encoded frames, errors, or too short to time):")
            for line in notes:
                print(f"  {line}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
