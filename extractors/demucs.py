"""demucs: source separation into drums, bass, other and vocals, written as stem files.

Models come only from a local folder: `repo` (`.th` models named `<sig>` or `<sig>-<sha8>`,
`.yaml` bags), else `<models_dir>/demucs`, where `muscat models fetch demucs` puts Demucs'
published files (catalog/models.py); extraction never downloads one. `.th` files are pickles, so
only that folder is read, and a file is verified before anything loads it: against the checksum
its name carries (`<sig>-<sha256 prefix>.th`, as published) and the sha256 muscat recorded when it
fetched it; in muscat's own folder a `.th` with neither is refused. Without the model, or with a
file that fails its checksum, the extractor is unavailable (and says why); files are not marked
failed.

Stems go to `<artifacts_dir>/<model>/<name>-<audio id>/<stem>.<ext>`: one folder per audio, so
two files with the same name never share one, and names are made safe to stay inside
artifacts_dir. Each stem is written to a hidden temporary name and renamed, so a crash never
leaves a half stem that counts. They are written with soundfile (Demucs' own FLAC writer needs an
ffmpeg binary), OGG in blocks (libvorbis crashes on long single writes).

It runs in stages (catalog/model_stage.py) so that the GPU worker can batch windows of many
files: `prepare` cuts the track exactly where demucs.apply.apply_model does (for HTDemucs, whose
windows all have its training length; older models get every window at a full segment's valid
length, so their last window differs slightly from apply_model's), `forward` runs the
model (or the bag, each member weighted per source) on a batch of windows, `finish` adds the
windows up with demucs' triangular weights. With shifts, the random offsets are drawn from the
audio's id (the same audio gives the same stems) and shared by a bag's members (apply_model
draws them per member).
"""

from __future__ import annotations

import io
from pathlib import Path

from catalog.artifacts import track_folder, write_atomically
from catalog.blake2 import blake2b
from catalog.extractor import Artifact, Extractor, Made, Output

STEMS = ("drums", "bass", "other", "vocals")

EXTRACTOR = Extractor(
    name="demucs",
    version=1,
    device="gpu",
    description="Demucs source separation: stems as files, and each stem's share of the energy.",
    params={
        "model": "htdemucs_ft",
        "repo": "",  # local model folder
        "format": "flac",  # flac | mp3 | ogg | wav
        "bits": 16,  # flac: 16 or 24; wav: 16, 24 or 32 (float)
        "mp3_mode": "vbr",  # vbr | cbr
        "mp3_bitrate": 96,  # kbps, for cbr
        "mp3_quality": 7,  # LAME VBR quality 0 (best) .. 9; 7 is about 96 kbps
        "ogg_quality": 0.4,  # Vorbis quality 0..1
        "shifts": 1,
        "overlap": 0.25,
    },
    outputs=[Output(f"{stem}_share", "", (0, 1), "scalar", f"Share of the track's energy in the {stem} stem")
             for stem in STEMS]
    + [Output(f"{stem}_rms", "dBFS", (-60, 0), "scalar", f"RMS level of the {stem} stem") for stem in STEMS],
)

FORMATS = {"flac": "FLAC", "mp3": "MP3", "ogg": "OGG", "wav": "WAV"}


def _model_files(repo: Path, model: str) -> list[Path]:
    """The files a model name stands for in a local repo: a bag's members, or one model."""
    bag = repo / f"{model}.yaml"
    names = [model]
    if bag.is_file():
        import yaml

        names = list(yaml.safe_load(bag.read_text())["models"])
    files = [bag] if bag.is_file() else []
    for sig in names:
        found = [p for p in repo.glob("*.th") if p.stem == sig or p.stem.rsplit("-", 1)[0] == sig]
        if not found:
            return []
        files += found
    return files


def _repo(params) -> Path:  # type: ignore[no-untyped-def]
    """The folder models are read from: `repo` when set, else muscat's models folder for demucs."""
    from catalog.models import folder

    return Path(params["repo"]).expanduser() if params["repo"] else folder("demucs")


def _checksum_problem(files: list[Path], managed: bool = False) -> str | None:
    """Why a model file is not the file its name (`<sig>-<sha256 prefix>.th`) or the manifest of
    its folder says, if it is not; in muscat's own folder (`managed`), a `.th` that has neither.

    `.th` models are pickles, which run code when loaded: one whose content does not match
    (damaged, or substituted) is never loaded."""
    from catalog.models import FETCH_DEMUCS, name_checksum, recorded, recorded_problem, sha256

    for path in files:
        expected = name_checksum(path)
        if expected is not None and not sha256(path).startswith(expected):
            return (f"{path} is not the model its name says: the name carries checksum {expected}, the "
                    f"content hashes to {sha256(path)[:len(expected)]} (damaged or replaced; it is not "
                    "loaded)" + (f": `{FETCH_DEMUCS}` fetches it again" if managed else ""))
        problem = recorded_problem(path)
        if problem is not None:
            return problem + (f": `{FETCH_DEMUCS}` fetches it again" if managed else "")
        if managed and path.suffix == ".th" and expected is None and path.name not in recorded(path.parent):
            return (f"{path} carries no checksum and was not fetched by muscat, so it is not loaded (a model "
                    "of your own goes in a folder of your own: set repo under [extractors.demucs])")
    return None


def available(params):  # type: ignore[no-untyped-def]
    if params["format"] not in FORMATS:
        return f"format must be one of {', '.join(FORMATS)}, not {params['format']!r}"
    repo = _repo(params)
    if not params["repo"]:
        from catalog.models import FETCH_DEMUCS, NotInstalled

        files = _model_files(repo, params["model"]) if repo.is_dir() else []
        if not files:
            fetch = FETCH_DEMUCS + ("" if params["model"] == EXTRACTOR.params["model"] else f" --model {params['model']}")
            return NotInstalled(f"model {params['model']!r} is not installed in {repo}: `{fetch}` downloads it "
                                "(or set repo under [extractors.demucs] to a folder of .th models and .yaml bags)",
                                command=fetch)
        return _checksum_problem(files, managed=True)
    if not repo.is_dir():
        return f"the model folder {repo} does not exist"
    files = _model_files(repo, params["model"])
    if not files:
        present = sorted({p.stem for p in repo.glob("*.yaml")} | {p.stem.rsplit("-", 1)[0] for p in repo.glob("*.th")})
        return f"model {params['model']!r} is not in {repo} (found: {', '.join(present) or 'nothing'})"
    return _checksum_problem(files)


def weights_fingerprint(params):  # type: ignore[no-untyped-def]
    """The model files' identity, whichever folder holds them: a `.th` whose name carries its
    checksum by name and size (fetching it again, or copying the folder, changes nothing), a bag's
    `.yaml` by its content, any other file by name, size and modification time."""
    import hashlib  # here, for the sha256: OpenSSL is loaded only when demucs's models are there

    digest = blake2b(digest_size=8)
    for path in sorted(_model_files(_repo(params), params["model"])):
        st = path.stat()
        if path.suffix == ".yaml":
            digest.update(f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()};".encode())
        elif path.suffix == ".th" and "-" in path.stem:
            digest.update(f"{path.name}:{st.st_size};".encode())
        else:
            digest.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


def write_stem(path: Path, samples, rate: int, params) -> None:  # type: ignore[no-untyped-def]
    """Write one stem atomically (temporary name, then rename)."""
    import soundfile as sf

    fmt = params["format"]
    options: dict = {"format": FORMATS[fmt]}
    if fmt == "flac":
        options["subtype"] = "PCM_24" if params["bits"] == 24 else "PCM_16"
    elif fmt == "wav":
        options["subtype"] = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}[params["bits"]]
    elif fmt == "mp3":
        options["subtype"] = "MPEG_LAYER_III"
        if params["mp3_mode"] == "cbr":
            options["bitrate_mode"] = "CONSTANT"
            options["compression_level"] = min(1.0, max(0.0, (320 - params["mp3_bitrate"]) / (320 - 32)))
        else:
            options["bitrate_mode"] = "VARIABLE"
            options["compression_level"] = params["mp3_quality"] / 9
    elif fmt == "ogg":
        options["subtype"] = "VORBIS"
        options["compression_level"] = 1.0 - params["ogg_quality"]
    # Encoded in memory, then written by Python: libsndfile reports a full disk only as "System
    # error", Python's own write as the OSError it is.
    encoded = io.BytesIO()
    with sf.SoundFile(encoded, "w", rate, samples.shape[1], **options) as out:
        for start in range(0, len(samples), 65536):  # OGG: blocks, never one long write
            out.write(samples[start : start + 65536])
    write_atomically(path, encoded.getbuffer())


def load_model(params, device: str):  # type: ignore[no-untyped-def]
    """The model (or bag) from the local folder, as a `Separation` ready on `device`."""
    from demucs.apply import BagOfModels
    from demucs.pretrained import get_model

    repo = _repo(params)
    problem = _checksum_problem(_model_files(repo, params["model"]), managed=not params["repo"])
    if problem is not None:  # checked again just before unpickling: files may have changed since
        raise ValueError(problem)
    model = get_model(params["model"], repo=repo)
    members = list(model.models) if isinstance(model, BagOfModels) else [model]
    weights = model.weights if isinstance(model, BagOfModels) else [[1.0] * len(model.sources)]
    return Separation(members, weights, device)


class Separation:
    """A model or a bag of them applied to windows: each member's output weighted per source."""

    def __init__(self, members, weights, device: str) -> None:  # type: ignore[no-untyped-def]
        import torch

        first = members[0]
        self.samplerate, self.channels, self.sources = first.samplerate, first.audio_channels, list(first.sources)
        # Windows are cut once for the whole bag: its members must agree on their geometry.
        self.segment_length = int(first.samplerate * first.segment)
        lengths = {_window_length(m, self.segment_length) for m in members}
        if len({int(m.samplerate * m.segment) for m in members}) > 1 or len(lengths) > 1:
            raise ValueError("the models of this bag use different segment lengths, which muscat does not batch")
        self.window_length = lengths.pop()
        self.members = [m.to(device).eval() for m in members]
        self.weights = [torch.tensor(w, dtype=torch.float32, device=device)[:, None, None] for w in weights]
        self.totals = sum(self.weights)

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        estimate = 0
        for member, weight in zip(self.members, self.weights):
            estimate = estimate + member(batch) * weight
        return estimate / self.totals


def _window_length(model, segment_length: int) -> int:  # type: ignore[no-untyped-def]
    """What the model is fed for a segment (HTDemucs: its training length; others: their valid length)."""
    return model.valid_length(segment_length) if hasattr(model, "valid_length") else segment_length


def model_info(model):  # type: ignore[no-untyped-def]
    return {"samplerate": model.samplerate, "channels": model.channels, "sources": model.sources,
            "segment_length": model.segment_length, "window_length": model.window_length}


def forward(model, batch):  # type: ignore[no-untyped-def]
    """[B, channels, window] -> [B, sources, channels, window]."""
    return model(batch)


def cuts(length: int, info: dict, overlap: float, shifts: list[int]) -> list[tuple[int, int, int, int]]:
    """Where demucs.apply.apply_model cuts a track of `length` samples, as (shift index, origin,
    offset, size) per window.

    Without shifts the track is cut as it is; with shifts, for each shift `s` (0 .. max_shift) the
    track read from `s - max_shift` (zeros before it). Segments of `segment_length` start every
    `stride` samples from that origin (`offset`, `size` valid samples); each is fed to the model as
    a window of `window_length` centred on it, with context from the track and zeros beyond."""
    segment = info["segment_length"]
    stride = int((1 - overlap) * segment)
    max_shift = int(0.5 * info["samplerate"])
    plan = []
    for index, shift in enumerate(shifts or [None]):
        origin = 0 if shift is None else shift - max_shift
        for offset in range(0, length - origin, stride):
            plan.append((index, origin, offset, min(segment, length - origin - offset)))
    return plan


def _window(mix, start: int, length: int):  # type: ignore[no-untyped-def]
    """mix[:, start:start + length], zeros where that falls outside the track."""
    import numpy as np

    out = np.zeros((mix.shape[0], length), np.float32)
    lo, hi = max(0, start), min(mix.shape[1], start + length)
    if hi > lo:
        out[:, lo - start : hi - start] = mix[:, lo:hi]
    return out


def prepare(audio, params, info, inputs):  # type: ignore[no-untyped-def]
    """The track at the model's rate and channels, normalised as demucs.api does, cut in windows."""
    import numpy as np
    import torch
    from demucs.audio import convert_audio

    wav = torch.from_numpy(np.ascontiguousarray(audio.whole().T))
    # Demucs converts channels only when it also resamples: give it the model's layout.
    mix = convert_audio(wav, audio.sample_rate, info["samplerate"], info["channels"]).numpy()
    reference = mix.mean(axis=0)
    mean = float(reference.mean())
    std = float(reference.std(ddof=1)) + 1e-8 if len(reference) > 1 else 1.0
    mix = (mix - mean) / std
    # Shifts are drawn from the audio's own id: the same audio gives the same stems every time.
    rng = np.random.default_rng(int(audio.audio_id[:15], 16))
    shifts = [int(rng.integers(0, int(0.5 * info["samplerate"]) + 1)) for _ in range(params["shifts"])]
    plan = cuts(mix.shape[1], info, params["overlap"], shifts)
    window = info["window_length"]
    items = np.stack([_window(mix, origin + offset - (window - size) // 2, window)
                      for _, origin, offset, size in plan]) if plan else np.zeros((0, mix.shape[0], window), np.float32)
    return items, {"plan": plan, "length": mix.shape[1], "mean": mean, "std": std, "shifts": max(1, len(shifts))}


def finish(audio, params, info, state, outputs, inputs):  # type: ignore[no-untyped-def]
    """Overlap-add the windows' stems with demucs' triangular weights, then write the stem files."""
    import numpy as np

    segment, window, length = info["segment_length"], info["window_length"], state["length"]
    weight = np.concatenate([np.arange(1, segment // 2 + 1), np.arange(segment - segment // 2, 0, -1)]).astype(np.float32)
    weight /= weight.max()
    total = np.zeros((len(info["sources"]), info["channels"], length), np.float32)
    shift_sum = shift_weight = None
    current, shift_origin = None, 0
    for (index, origin, offset, size), out in zip(state["plan"], _items(outputs)):
        if index != current:  # a new shift: what the last one summed goes into the total
            if current is not None:
                total += _normalised(shift_sum, shift_weight, shift_origin)
            current, shift_origin = index, origin
            shift_sum = np.zeros((*total.shape[:2], length - origin), np.float32)
            shift_weight = np.zeros(length - origin, np.float32)
        trim = (window - size) // 2
        shift_sum[..., offset : offset + size] += weight[:size] * out[..., trim : trim + size]
        shift_weight[offset : offset + size] += weight[:size]
    if current is not None:
        total += _normalised(shift_sum, shift_weight, shift_origin)
    stems = total / state["shifts"] * state["std"] + state["mean"]
    arrays = {name: np.ascontiguousarray(stems[info["sources"].index(name)].T) for name in STEMS}
    return _write_stems(audio, params, inputs, arrays, info["samplerate"])


def _items(blocks):  # type: ignore[no-untyped-def]
    for block in blocks:
        yield from block


def _normalised(summed, weights, origin: int):  # type: ignore[no-untyped-def]
    """One shift's overlap-added output divided by its weights, from the track's first sample."""
    return summed[..., -origin:] / weights[-origin:]


def _write_stems(audio, params, inputs, arrays, rate: int):  # type: ignore[no-untyped-def]
    import numpy as np

    folder = track_folder(inputs.artifacts_dir, params["model"], audio.path, audio.audio_id)
    written = []
    for name in STEMS:
        path = folder / f"{name}.{params['format']}"
        write_stem(path, arrays[name], rate, params)
        written.append(Artifact(f"stem:{name}", params["format"], str(path), path.stat().st_size))
    energy = {name: float(np.mean(arrays[name].astype(np.float64) ** 2)) for name in STEMS}
    total = sum(energy.values())
    result = {}
    for name in STEMS:
        result[f"{name}_share"] = energy[name] / total if total > 0 else None
        result[f"{name}_rms"] = max(-120.0, 10 * float(np.log10(energy[name]))) if energy[name] > 0 else -120.0
    # The stems stay in memory for hpcp, drums and bass_pitch in this job.
    return Made(result, written, leaves={"stems": arrays, "sample_rate": rate})
