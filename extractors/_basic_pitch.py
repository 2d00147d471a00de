"""Basic Pitch (Spotify, Apache-2.0) on onnxruntime: shared by the `notes` and `bass_notes`
extractors.

The model is the ONNX file inside basic-pitch's wheel (`saved_models/icassp_2022/nmp.onnx`):
nothing is downloaded. basic-pitch's own inference (`basic_pitch.inference.predict`) reads the
file with librosa and runs its model one 2 s window at a time; here the windows are cut the same
way (22.05 kHz, 30 frames of overlap) from audio already decoded and run through onnxruntime in
batches, on the model's graph with three spots that onnxruntime runs slowly rewritten
(`faster_graph`: the same weights and operations, the same activations bit for bit). The notes
are then made by basic-pitch's own pure code (`note_creation.output_to_notes_polyphonic`,
`model_frames_to_time`), so they are the notes its `predict` gives, without its
TensorFlow/CoreML/TFLite back ends (which muscat does not install: see the README, Packaging).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.blake2 import blake2b

if TYPE_CHECKING:  # numpy is imported where it is used: `muscat status` lists extractors without it
    import numpy as np

MODEL_RATE = 22050  # basic_pitch.constants.AUDIO_SAMPLE_RATE
FFT_HOP = 256
WINDOW = MODEL_RATE * 2 - FFT_HOP  # AUDIO_N_SAMPLES: 43,844 samples per window
OVERLAP_FRAMES = 30  # as basic_pitch.inference.run_inference
FPS = MODEL_RATE / FFT_HOP  # 86.13 frames/s
LOWEST_HZ, HIGHEST_HZ = 27.5, 4186.0  # A0 and C8: the model's 88 note bins
# Windows per onnxruntime call. On one CPU thread a window costs the same batched or not (within
# 5% from 1 to 16 here; batch 4 against 1 at 0.99-1.04x with faster_graph: bench/notes.py).
BATCH = 4
STOCK_GRAPH = False  # True: nmp.onnx as it ships, without faster_graph's edits (bench/notes.py)
MODEL_IN_PACKAGE = "saved_models/icassp_2022/nmp.onnx"  # under basic_pitch/ in its wheel
_OUTPUTS = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0"]


@dataclass(frozen=True)
class Note:
    start: float  # s
    end: float  # s
    pitch: int  # MIDI note number
    amplitude: float  # the model's mean frame activation over the note, 0-1


def model_path() -> Path | None:
    """The ONNX model in the installed basic-pitch wheel, found without importing basic_pitch
    (its __init__ probes for TensorFlow and logs warnings)."""
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / MODEL_IN_PACKAGE


def available(params: dict[str, Any]) -> str | None:
    """Why Basic Pitch cannot run with `params` (a missing package, a bad setting), or None."""
    for key in ("onset_threshold", "frame_threshold"):
        if not 0 < params[key] < 1:
            return f"{key} must be between 0 and 1 (exclusive), not {params[key]}"
    if params["minimum_note_length"] < 0:
        return f"minimum_note_length must be 0 ms or more, not {params['minimum_note_length']}"
    low, high = params["minimum_frequency"], params["maximum_frequency"]
    if not 0 <= low < high:
        return f"minimum_frequency ({low} Hz) must be below maximum_frequency ({high} Hz), both 0 or more"
    path = model_path()
    if path is None:
        return "basic-pitch is not installed (uv sync installs it)"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (uv sync installs it)"
    if importlib.util.find_spec("onnx") is None:  # its protobuf classes: faster_graph
        return "onnx is not installed (uv sync installs it)"
    if not path.is_file():
        return f"the Basic Pitch model {path} is missing from its wheel"
    return None


def weights_fingerprint() -> str:
    path = model_path()
    assert path is not None
    st = path.stat()
    return _content_fingerprint(str(path), st.st_size, st.st_mtime_ns)


@functools.cache
def _content_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    # Once per process and state of the file: notes and bass_notes both ask, each `muscat status`.
    return blake2b(Path(path).read_bytes(), digest_size=8).hexdigest()


@functools.cache
def session(stock: bool = False) -> Any:
    """One onnxruntime session per process, on one thread: the CPU workers are one per core. The
    graph is nmp.onnx with `faster_graph`'s edits (the same values out, bit for bit), or as it
    ships when `stock`. onnxruntime's defaults are kept: all graph optimisations (its NCHWc
    convolutions; without them, ORT_ENABLE_EXTENDED, the model ran 0.77x) and sequential
    execution, which on one thread is all there is."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = model_path().read_bytes()
    return ort.InferenceSession(model if stock else faster_graph(model), options,
                                providers=["CPUExecutionProvider"])


def _onnx_proto() -> Any:
    """onnx's generated protobuf classes (onnx/onnx_ml_pb2.py), loaded without the onnx package's
    __init__, which imports ml_dtypes and onnx.helper (1-2 s of every worker's start here) for
    nothing `faster_graph` uses. protobuf keeps one descriptor per file, so a later `import onnx`
    in the same process gets these same classes."""
    spec = importlib.util.find_spec("onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("onnx is not installed (uv sync installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "onnx_ml_pb2.py"
    loaded = importlib.util.spec_from_file_location("muscat_onnx_ml_pb2", path)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def faster_graph(model: bytes) -> bytes:
    """nmp.onnx with three spots that onnxruntime's CPU kernels run slowly rewritten: the same
    weights, the same operations on the same numbers, so the same values out, bit for bit
    (tests/test_notes.py compares it with the stock graph on music). A model without these
    spots (another basic-pitch) is returned as it is.

    1. The batch normalisation after the CQT multiplies and adds [batch, 172, 309, 1] by
       constants of shape [1]: onnxruntime broadcasts that element by element (1.5 ms for 53 k
       numbers). As [1, 1, 1, 1] the same products run as one block (0.04 ms).
    2. The CQT's normalisation multiplies [batch, 309, 172, 2] (real and imaginary parts) by a
       constant [309, 1, 1]: spans of 1 element again. Repeated to [309, 1, 2], the same factor
       for both parts, it broadcasts over the frames only.
    3. The harmonic stacking concatenates eight [batch, 172, 309, 1] along the last axis (one
       float at a time), keeps 264 bins and transposes to [batch, 8, 172, 264]. The same data
       read as [batch, 1, 172, 309] (a reshape, no copy), concatenated on axis 1 and cut to 264
       bins is that tensor already, without the element-wise copy or the transpose.
    Together, on one thread, the model runs 1.05-1.15x as fast, the whole extractor 1.03-1.09x
    (bench/notes.py, its row on the stock graph)."""
    import numpy as np

    proto = _onnx_proto()
    graph_model = proto.ModelProto()
    graph_model.ParseFromString(model)
    graph = graph_model.graph
    tensors = {t.name: t for t in graph.initializer}
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def constant(node: Any, dims: tuple[int, ...]) -> Any:
        found = [tensors[i] for i in node.input if i in tensors and tuple(tensors[i].dims) == dims]
        return found[0] if len(found) == 1 and len(users[found[0].name]) == 1 else None

    def floats(tensor: Any) -> np.ndarray:
        return np.frombuffer(tensor.raw_data, "<f4") if tensor.raw_data else np.array(tensor.float_data, np.float32)

    norm = [n for n in graph.node if n.op_type in ("Mul", "Add")
            and n.name.startswith("model_1/batch_normalization/FusedBatchNormV3;")]
    scale = [n for n in graph.node if n.op_type == "Mul" and n.name.startswith("model_1/cq_t2010v2_1/mul_1;")]
    stack = [n for n in graph.node if n.op_type == "Concat"
             and n.name.startswith("model_1/harmonic-stacking-diff/concat;")]
    scalars = [constant(n, (1,)) for n in norm]
    factor = constant(scale[0], (309, 1, 1)) if len(scale) == 1 else None
    cut = users.get(stack[0].output[0], []) if len(stack) == 1 else []
    turn = users.get(cut[0].output[0], []) if len(cut) == 1 and cut[0].op_type == "Slice" else []

    def ints(name: str) -> list[int]:
        return np.frombuffer(tensors[name].raw_data, "<i8").tolist() if name in tensors else []

    big = 2**31 - 1  # what tf2onnx writes for "to the end"
    if (len(norm) != 2 or None in scalars or factor is None or len(turn) != 1  # (one stack, one cut)
            or len(stack[0].input) != 8 or len(cut[0].input) != 4 or ints(cut[0].input[1]) != [0, 0, 0, 0]
            or ints(cut[0].input[2]) != [big, big, 264, big] or ints(cut[0].input[3]) != [0, 1, 2, 3]
            or turn[0].op_type != "Transpose"
            or [list(a.ints) for a in turn[0].attribute if a.name == "perm"] != [[0, 3, 1, 2]]):
        return model
    for tensor in scalars:  # 1.
        tensor.dims[:] = [1, 1, 1, 1]
    repeated = np.repeat(floats(factor).reshape(309, 1, 1), 2, axis=2)  # 2.
    del factor.float_data[:]
    factor.dims[:] = [309, 1, 2]
    factor.raw_data = repeated.astype("<f4").tobytes()

    def integers(name: str, values: list[int]) -> str:
        graph.initializer.append(proto.TensorProto(name=name, dims=[len(values)], data_type=proto.TensorProto.INT64,
                                                   raw_data=np.array(values, "<i8").tobytes()))
        return name

    concat = stack[0]  # 3.
    shape = integers("muscat/harmonic_planes", [-1, 1, 172, 309])
    planes = [proto.NodeProto(op_type="Reshape", name=f"muscat/harmonic_plane_{i}", input=[name, shape],
                              output=[f"muscat/harmonic_plane_{i}"]) for i, name in enumerate(concat.input)]
    at = list(graph.node).index(concat)
    for offset, node in enumerate(planes):  # just before the concat: the order stays topological
        graph.node.insert(at + offset, node)
    concat.input[:] = [p.output[0] for p in planes]
    for attribute in concat.attribute:
        if attribute.name == "axis":
            attribute.i = 1
    cut[0].input[1:] = [integers("muscat/bins_start", [0]), integers("muscat/bins_end", [264]),
                        integers("muscat/bins_axis", [3])]
    turn[0].op_type = "Identity"
    del turn[0].attribute[:]
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:  # the cut's old bounds
        graph.initializer.remove(tensor)
    return graph_model.SerializeToString()


class _OnDemand(types.ModuleType):
    """Stands in for a module while basic_pitch.note_creation imports it; the real one is
    imported the first time something of it is used."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


def note_creation() -> Any:
    """basic_pitch.note_creation, imported without basic_pitch's start-up warnings about the back
    ends muscat deliberately leaves out. mir_eval and resampy, which it uses only in its
    sonification helpers, are imported on demand: they would add 3-9 s (scipy.stats, numba) to
    every worker's start for nothing muscat calls."""
    import logging  # here: `muscat status` imports this module for the availability check

    placed = [name for name in ("mir_eval", "resampy") if name not in sys.modules]
    for name in placed:
        sys.modules[name] = _OnDemand(name)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import basic_pitch.note_creation as module
    finally:
        logging.disable(previous)
        for name in placed:  # later imports get the real modules
            if isinstance(sys.modules.get(name), _OnDemand):
                del sys.modules[name]
    return module


def to_model_rate(mono_44k: np.ndarray) -> np.ndarray:
    """44.1 kHz mono to Basic Pitch's 22.05 kHz, with soxr's HQ filter (what librosa.load, and so
    basic-pitch's predict, uses)."""
    import numpy as np
    import soxr

    resampled = soxr.resample(np.asarray(mono_44k, dtype=np.float32), 44100, MODEL_RATE, quality="HQ")
    return resampled.astype(np.float32, copy=False)


def activations(signal: np.ndarray) -> dict[str, np.ndarray]:
    """The model's note, onset and contour activations for 22.05 kHz mono audio, [frames, bins],
    cut into windows and unwrapped exactly as basic_pitch.inference.run_inference does."""
    import numpy as np

    overlap = OVERLAP_FRAMES * FFT_HOP
    hop = WINDOW - overlap
    lead = overlap // 2  # basic-pitch pads the start with half an overlap of silence
    count = -(-(lead + len(signal)) // hop)  # a window every hop of the padded signal
    windows = np.zeros((count, WINDOW, 1), np.float32)
    for i in range(count):  # straight from the signal: no padded copy of it first
        first = i * hop - lead
        a, b = max(first, 0), min(first + WINDOW, len(signal))
        windows[i, a - first : b - first, 0] = signal[a:b]
    model = session(stock=STOCK_GRAPH)
    trim = OVERLAP_FRAMES // 2
    kept: dict[str, np.ndarray] = {}  # [windows, frames kept, bins]: each batch written in place
    for first in range(0, count, BATCH):
        outputs = model.run(_OUTPUTS, {"serving_default_input_2:0": windows[first : first + BATCH]})
        for key, value in zip(("note", "onset", "contour"), outputs):
            middle = value[:, trim:-trim]  # as unwrap_output: half the overlap off each end
            if key not in kept:
                kept[key] = np.empty((count, *middle.shape[1:]), value.dtype)
            kept[key][first : first + len(middle)] = middle
    frames = int(np.floor(len(signal) * (FPS / MODEL_RATE)))
    return {key: value.reshape(-1, value.shape[2])[:frames] for key, value in kept.items()}


def transcribe(signal: np.ndarray, params: dict[str, Any]) -> list[Note]:
    """Notes in 22.05 kHz mono audio, by Basic Pitch's own note creation with `params`'
    onset_threshold, frame_threshold, minimum_note_length (ms), minimum/maximum_frequency (Hz)
    and melodia_trick, sorted by start."""
    import numpy as np

    output = activations(signal)
    if len(output["note"]) < 2:
        return []
    creation = note_creation()
    # As predict(): ms to frames; a bound at or beyond the model's own range is no bound.
    min_len = int(np.round(params["minimum_note_length"] / 1000 * FPS))
    low = params["minimum_frequency"] if params["minimum_frequency"] > LOWEST_HZ else None
    high = params["maximum_frequency"] if params["maximum_frequency"] < HIGHEST_HZ else None
    # On silence basic-pitch rescales onsets inferred from frames by 0/0: NaN, which no
    # threshold passes, so no notes, as it should be; its warning says nothing useful.
    with np.errstate(invalid="ignore", divide="ignore"):
        events = creation.output_to_notes_polyphonic(
            output["note"], output["onset"], onset_thresh=params["onset_threshold"],
            frame_thresh=params["frame_threshold"], min_note_len=min_len, infer_onsets=True,
            max_freq=high, min_freq=low, melodia_trick=params["melodia_trick"],
        )
    times = creation.model_frames_to_time(output["contour"].shape[0])
    notes = [Note(float(times[a]), float(times[b]), int(pitch), float(amp)) for a, b, pitch, amp in events]
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def monophonic(notes: list[Note], min_seconds: float, together: float = 0.05) -> list[Note]:
    """One note at a time. Of notes starting within `together` seconds of each other (an octave
    or a harmonic read beside the fundamental) the strongest stays; a weaker note that starts and
    ends inside a sounding one is an overtone read beside it and goes; otherwise a note still
    sounding when the next one starts is cut there. What is left shorter than `min_seconds` goes."""
    kept: list[Note] = []
    for note in sorted(notes, key=lambda n: (n.start, -n.amplitude)):
        if kept and note.start - kept[-1].start < together:
            if note.amplitude > kept[-1].amplitude:
                kept[-1] = note
            continue
        if kept and kept[-1].end > note.start:
            if note.end <= kept[-1].end and note.amplitude < kept[-1].amplitude:
                continue
            kept[-1] = Note(kept[-1].start, note.start, kept[-1].pitch, kept[-1].amplitude)
        kept.append(note)
    return [n for n in kept if n.end - n.start >= min_seconds]


def midi_bytes(notes: list[Note], program: int, name: str) -> bytes:
    """A MIDI file (pretty_midi, 120 BPM) of `notes` on one instrument; velocity from amplitude."""
    import numpy as np
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    instrument = pretty_midi.Instrument(program=program, name=name)
    for n in notes:
        velocity = int(np.clip(round(127 * n.amplitude), 1, 127))
        instrument.notes.append(pretty_midi.Note(velocity=velocity, pitch=n.pitch, start=n.start, end=n.end))
    midi.instruments.append(instrument)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def polyphony_mean(notes: list[Note]) -> float | None:
    """Notes sounding at once, averaged over the time some note sounds (a sweep over the note
    boundaries: sum of durations over the length of their union)."""
    edges = sorted([(n.start, 1) for n in notes] + [(n.end, -1) for n in notes])
    sounding, covered, previous = 0, 0.0, 0.0
    for time, step in edges:
        if sounding > 0:
            covered += time - previous
        sounding += step
        previous = time
    total = sum(n.end - n.start for n in notes)
    return total / covered if covered > 0 else None


def pitch_class_profile(notes: list[Note]) -> list[float]:
    """Duration-weighted share of each pitch class, C first, summing to 1 (flat without notes)."""
    import numpy as np

    profile = np.zeros(12)
    for n in notes:
        profile[n.pitch % 12] += n.end - n.start
    if profile.sum() <= 0:
        return [1 / 12] * 12
    return (profile / profile.sum()).tolist()
