"""drums: drum transcription with ADTOF's published architecture, from the user's weights file.

ADTOF cannot be installed from a registry and its weights are non-commercial: users bring the
checkpoint that ADTOF's PyTorch port writes (a dict with `model_weights` and `model_info`):
`weights` names it, else the one `muscat models add drums PATH` put in muscat's models folder
(verified against the sha256 recorded then). It is loaded with strict key matching. A missing file
makes the extractor unavailable: random weights are never used in its place.

Front end on the device (torch.stft and a log-spaced filterbank; the CPU runs the same code):
44.1 kHz mono, n_fft 2048, hop 441 (100 frames/s), 84 triangular bands (12 per octave,
20 Hz-20 kHz), log10(1 + x). Network: two conv blocks (32, 64 filters), three bidirectional GRU
layers of 60, five sigmoid outputs: kick, snare, tom, hi-hat, cymbal (GM notes 35, 38, 47, 42,
49). Onsets are activation peaks above a threshold per class, at least `min_gap` apart. It
listens to the drums stem when demucs separated one, else to the mix. It runs in stages
(catalog/model_stage.py): front end and network on the device, onset picking on the CPU.
"""

from __future__ import annotations

import struct
from pathlib import Path

from catalog.artifacts import track_folder, write_atomically
from catalog.blake2 import blake2b
from catalog.extractor import Artifact, Extractor, Made, Output

CLASSES = ("kick", "snare", "tom", "hihat", "cymbal")
GM_NOTES = (35, 38, 47, 42, 49)
RATE, N_FFT, HOP, FPS = 44100, 2048, 441, 100

EXTRACTOR = Extractor(
    name="drums",
    version=1,
    device="gpu",
    uses=("demucs",),  # the drums stem, when separated
    description="Drum onsets per class (ADTOF architecture) as a MIDI file, with counts and rates.",
    params={
        "weights": "",  # the ADTOF PyTorch checkpoint
        "thresholds": [0.5, 0.5, 0.5, 0.5, 0.5],  # per class, in CLASSES order
        "min_gap": 0.02,  # seconds between two onsets of one class
    },
    outputs=[o for name in CLASSES for o in (
        Output(f"{name}_onsets", "onsets", (0, 5000), "scalar", f"Number of {name} onsets"),
        Output(f"{name}_rate", "onsets/s", (0, 10), "scalar", f"{name.capitalize()} onsets per second"),
    )] + [Output("drum_onset_rate", "onsets/s", (0, 30), "scalar", "Drum onsets of all classes per second"),
          Output("drums_source", "", None, "categorical", "What it listened to: stems (drums) or mix")],
)

def filterbank():  # type: ignore[no-untyped-def]
    """[fft bins, 84] triangular filters on a 12-per-octave grid (madmom's construction)."""
    import numpy as np

    fft_freqs = np.fft.fftfreq(N_FFT, 1 / RATE)[: N_FFT // 2]
    left, right = np.floor(np.log2(20 / 440) * 12), np.ceil(np.log2(20000 / 440) * 12)
    freqs = 440 * 2 ** (np.arange(left, right) / 12)
    freqs = freqs[(freqs >= 20) & (freqs <= 20000)]
    bins = np.unique(np.abs(fft_freqs[None, :] - freqs[:, None]).argmin(axis=1))
    bank = np.zeros((N_FFT // 2, len(bins) - 2), np.float32)
    for i, (start, center, stop) in enumerate(zip(bins[:-2], bins[1:-1], bins[2:])):
        if stop - start < 2:
            center, stop = start, start + 1
        bank[start:center, i] = np.linspace(0, 1, center - start, endpoint=False)
        bank[center:stop, i] = np.linspace(1, 0, stop - center, endpoint=False)
        bank[:, i] /= bank[:, i].sum()
    return bank


def build_model(bands: int):  # type: ignore[no-untyped-def]
    """ADTOF's network, with the module names of its PyTorch port."""
    import torch
    from torch import nn

    class ADTOF(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks, width, channels = [], bands, 1
            for filters in (32, 64):
                blocks.append(nn.Sequential(
                    nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(filters, eps=1e-3),
                    nn.Conv2d(filters, filters, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(filters, eps=1e-3),
                    nn.MaxPool2d((1, 3), (1, 3), ceil_mode=True), nn.Dropout(0.3),
                ))
                width, channels = -(-width // 3), filters
            self.cnn_blocks = nn.ModuleList(blocks)
            sizes = [channels * width, 120, 120]
            self.gru_layers = nn.ModuleList(nn.GRU(s, 60, batch_first=True, bidirectional=True) for s in sizes)
            self.output_layer = nn.Linear(120, len(CLASSES))

        def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [batch, time, bins, 1]
            x = frames.permute(0, 3, 1, 2)
            for block in self.cnn_blocks:
                x = block(x)
            x = x.permute(0, 2, 1, 3).flatten(2)  # [batch, time, channels * bins]
            for gru in self.gru_layers:
                x, _ = gru(x)
            return torch.sigmoid(self.output_layer(x))

    return ADTOF()


def load(path: str, device: str):  # type: ignore[no-untyped-def]
    """The network with the checkpoint's weights, keys matched strictly, and the filterbank.

    Loaded once per process that holds models (catalog/model_stage.ModelCache keeps it)."""
    import torch

    # Tensors and plain values only: a checkpoint that needs code run to load is refused.
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several kinds here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not a plain weights file ({first})") from None
    if not isinstance(checkpoint, dict) or "model_weights" not in checkpoint:
        raise ValueError(f"{path} is not an ADTOF checkpoint (no model_weights in it)")
    model = build_model(filterbank().shape[1])
    state = checkpoint["model_weights"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not an ADTOF checkpoint (its model_weights is no state dict)")
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in wanted]
    shapes = [f"{k} {tuple(state[k].shape)} instead of {tuple(wanted[k].shape)}" for k in wanted
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(wanted[k].shape)]
    mismatches = [f"{label}: {_some(keys)}" for label, keys in
                  (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes)) if keys]
    if mismatches:
        raise ValueError(f"{path} does not match ADTOF's architecture: {'; '.join(mismatches)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match ADTOF's architecture: {exc}") from None
    return model.to(device).eval(), torch.from_numpy(filterbank()).to(device)


def _some(keys: list[str], shown: int = 8) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _weights(params) -> Path | None:  # type: ignore[no-untyped-def]
    """The checkpoint: `weights` when set, else the one `muscat models add drums` installed."""
    from catalog.models import added

    return Path(params["weights"]).expanduser() if params["weights"] else added("drums")


def available(params):  # type: ignore[no-untyped-def]
    from catalog.models import ADD_DRUMS, NotInstalled, recorded_problem

    path = _weights(params)
    if path is None:
        return NotInstalled("no weights file: ADTOF's weights are non-commercial and cannot come with muscat; "
                            f"`{ADD_DRUMS}` installs ADTOF's PyTorch checkpoint (`muscat models` says where it "
                            "is published), or set weights under [extractors.drums]", command=ADD_DRUMS)
    if not path.is_file():
        return f"the weights file {path} does not exist" + ("" if params["weights"] else f": `{ADD_DRUMS}` again")
    if not params["weights"]:
        problem = recorded_problem(path)
        if problem is not None:
            return f"{problem}: `{ADD_DRUMS}` again"
    if len(params["thresholds"]) != len(CLASSES):
        return f"thresholds needs {len(CLASSES)} values ({', '.join(CLASSES)})"
    return None


def weights_fingerprint(params):  # type: ignore[no-untyped-def]
    return blake2b(_weights(params).read_bytes(), digest_size=8).hexdigest()


def load_model(params, device: str):  # type: ignore[no-untyped-def]
    from catalog.models import recorded_problem

    path = _weights(params)
    problem = None if path is None or params["weights"] else recorded_problem(path)
    if path is None or problem is not None:  # checked again just before loading: files may have changed
        raise ValueError(problem or "no weights file")
    return load(str(path), device)


def prepare(audio, params, info, inputs):  # type: ignore[no-untyped-def]
    """The drums stem when demucs separated one, else the mix: mono at 44.1 kHz, one item."""
    stem = inputs.stems_mono("demucs", ("drums",))
    signal = stem if stem is not None else audio.mono()
    return signal[None], {"source": "stems" if stem is not None else "mix", "seconds": len(signal) / RATE}


def forward(model, batch):  # type: ignore[no-untyped-def]
    """[B, samples] -> [B, frames, 5] class activations at 100 frames/s, front end included."""
    import torch

    net, bank = model
    spec = torch.stft(batch, N_FFT, HOP, window=torch.hann_window(N_FFT, device=batch.device),
                      center=True, return_complex=True).abs()[:, : N_FFT // 2].transpose(1, 2)  # [B, frames, bins]
    return net(torch.log10(1 + spec @ bank)[..., None])


def pick_onsets(curve, threshold: float, min_gap: float) -> list[float]:  # type: ignore[no-untyped-def]
    """Times (s) of local maxima above `threshold`, at least `min_gap` apart."""
    import numpy as np

    before = np.concatenate([[-np.inf], curve[:-1]])
    after = np.concatenate([curve[1:], [-np.inf]])
    peaks = np.flatnonzero((curve >= threshold) & (curve > before) & (curve >= after))  # a plateau's first frame
    onsets: list[float] = []
    for index in peaks:
        if not onsets or index / FPS - onsets[-1] >= min_gap:
            onsets.append(float(index / FPS))
    return onsets


def midi_bytes(onsets: dict[str, list[float]]) -> bytes:
    """A type-0 MIDI file: each onset a 50 ms note on channel 10, at 120 BPM, 480 ticks per beat."""
    events = []
    for name, note in zip(CLASSES, GM_NOTES):
        for t in onsets[name]:
            tick = round(t * 960)
            events += [(tick, 0x99, note, 100), (tick + 48, 0x89, note, 0)]
    events.sort()
    body, previous = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20"), 0  # tempo: 500,000 us per beat
    for tick, status, note, velocity in events:
        body += _varlen(tick - previous) + bytes([status, note, velocity])
        previous = tick
    body += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    while value > 0x7F:
        value >>= 7
        out.insert(0, (value & 0x7F) | 0x80)
    return bytes(out)


def finish(audio, params, info, state, outputs, inputs):  # type: ignore[no-untyped-def]
    import numpy as np

    curves = np.concatenate(list(outputs))[0]
    onsets = {name: pick_onsets(curves[:, i], params["thresholds"][i], params["min_gap"])
              for i, name in enumerate(CLASSES)}
    midi = track_folder(inputs.artifacts_dir, "drums", audio.path, audio.audio_id) / "drums.mid"
    write_atomically(midi, midi_bytes(onsets))
    seconds = max(state["seconds"], 1e-9)
    result: dict[str, object] = {}
    for name in CLASSES:
        result[f"{name}_onsets"] = len(onsets[name])
        result[f"{name}_rate"] = len(onsets[name]) / seconds
    result["drum_onset_rate"] = sum(len(v) for v in onsets.values()) / seconds
    result["drums_source"] = state["source"]
    return Made(result, [Artifact("midi", "mid", str(midi), midi.stat().st_size)])
