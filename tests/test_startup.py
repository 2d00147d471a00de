"""What `muscat status` and `muscat sql` skip to start fast gives the answers of what it replaces:
plugins found without importlib.metadata, libchromaprint found without loading it. (That they
skip it, and read through one DuckDB instance: tests/test_cli.py; how fast: bench/startup.py.)"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys

import pytest

from catalog.registry import plugin_entry_points
from extractors import chromaprint


def write_distribution(folder, name: str, entry_points: str) -> None:
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def importlib_values(group: str) -> list[str]:
    return [entry.value for entry in importlib.metadata.entry_points(group=group)]


def test_entry_points_are_the_ones_importlib_metadata_finds(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    # Comments, blank lines, spaces around '=', attributes and extras, other groups; a second
    # distribution of the same name later on sys.path is shadowed (the first one wins), one of
    # another name is not; an .egg-info that is a file has no entry points.
    write_distribution(first, "muscat_one", "# made by hand\n[console_scripts]\none = one:main\n\n"
                       "[muscat.extractors]\n  alpha=plug.alpha\n# a comment\nbeta = plug.mod:beta [fast]\n")
    write_distribution(second, "Muscat.One", "[muscat.extractors]\nshadowed = plug.shadowed\n")
    write_distribution(second, "muscat_two", "[muscat.extractors]\ngamma = plug.gamma\n")
    (second / "stray-1.0.egg-info").write_text("Metadata-Version: 1.0\nName: stray\n")
    for folder in (second, first):
        monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    ours = plugin_entry_points("muscat.extractors")
    assert ours == ["plug.alpha", "plug.mod:beta [fast]", "plug.gamma"]
    assert ours == importlib_values("muscat.extractors")
    for group in ("console_scripts", "pytest11", "no.such.group"):  # the installed environment's too
        assert plugin_entry_points(group) == importlib_values(group), group


def test_a_zip_on_sys_path_is_left_to_importlib_metadata(tmp_path, monkeypatch):
    import zipfile

    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\nVersion: 1.0\n")
        z.writestr("zipped-1.0.dist-info/entry_points.txt", "[muscat.extractors]\nzipped = zipped.ext\n")
    monkeypatch.syspath_prepend(str(archive))
    importlib.invalidate_caches()
    assert plugin_entry_points("muscat.extractors")[:1] == ["zipped.ext"]
    assert plugin_entry_points("muscat.extractors") == importlib_values("muscat.extractors")


def loads() -> bool:
    try:
        importlib.import_module("chromaprint")
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the look-up without loading is Linux's")
def test_libchromaprint_is_found_where_loading_it_finds_it(tmp_path, monkeypatch):
    assert chromaprint.library_found() == loads()
    # Only a library of this Python's machine counts, wherever it is listed.
    folder = tmp_path / "lib"
    folder.mkdir()
    monkeypatch.setattr(chromaprint, "LD_SO_CACHE", str(tmp_path / "no-cache"))
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{tmp_path / 'missing'}:{folder}")
    assert not chromaprint.library_found()
    (folder / "libchromaprint.so.1").write_text("not a library\n")
    assert not chromaprint.library_found()
    other = bytearray(open(sys.executable, "rb").read(64))
    other[18:20] = (0xB7 if other[18:20] != bytes([0xB7, 0]) else 0x3E).to_bytes(2, "little")  # aarch64 / x86-64
    (folder / "libchromaprint.so.0").write_bytes(bytes(other))
    assert not chromaprint.library_found()
    (folder / "libchromaprint.so.1").unlink()
    os.symlink(os.path.realpath(sys.executable), folder / "libchromaprint.so.1")  # an ELF file of this machine
    assert chromaprint.library_found()


def test_without_libchromaprint_the_reason_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(chromaprint, "LD_SO_CACHE", str(tmp_path / "no-cache"))
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    monkeypatch.setitem(sys.modules, "chromaprint", None)  # its import fails as without the library
    reason = chromaprint.available({"max_seconds": 120.0})
    assert reason is not None and "libchromaprint is not installed" in reason and "apt install" in reason


ESSENTIA_PROBE = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "lazy":
    from catalog.essentia_import import load
    es = load()
    made_at_import = sorted(n for n in vars(es) if isinstance(getattr(es, n), type) and hasattr(getattr(es, n), "__struct__"))
else:
    import essentia.standard as es
    made_at_import = None
from essentia import _essentia
signal = np.sin(np.arange(44100) * 0.05).astype(np.float32) * np.linspace(0, 1, 44100, dtype=np.float32)
window, spectrum = es.Windowing(type="hann"), es.Spectrum()
mfcc = [es.MFCC()(spectrum(window(frame)))[1].tolist() for frame in es.FrameGenerator(signal, 2048, 1024)]
out = {
    "made_at_import": made_at_import,
    "all_there": all(hasattr(es, name) for name in _essentia.keys()),
    "names": len(_essentia.keys()),
    "mfcc": mfcc,
    "resampled": es.Resample(inputSampleRate=44100, outputSampleRate=22050)(signal)[::500].tolist(),
    "loudness": float(es.LoudnessEBUR128(sampleRate=44100)(np.stack([signal, signal], axis=1))[2]),
}
try:
    es.NoSuchAlgorithm
except AttributeError as exc:
    out["missing"] = str(exc)
print(json.dumps(out))
"""


def test_essentia_made_on_demand_computes_as_the_eager_import():
    """catalog/essentia_import.py: the algorithms a worker uses are made when first used, and
    compute what they compute after a plain `import essentia.standard` (in fresh interpreters)."""
    import json
    import subprocess
    from pathlib import Path

    repo = str(Path(__file__).resolve().parent.parent)

    def probe(mode: str) -> dict:
        done = subprocess.run([sys.executable, "-c", ESSENTIA_PROBE, mode, repo], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    lazy, eager = probe("lazy"), probe("eager")
    assert lazy["made_at_import"] == ["FrameCutter", "FrameGenerator"]  # not the other ~290
    assert lazy["all_there"] and eager["all_there"] and lazy["names"] == eager["names"] > 250
    for key in ("mfcc", "resampled", "loudness"):
        assert lazy[key] == eager[key], key
    assert "NoSuchAlgorithm" in lazy["missing"] and "essentia.standard" in lazy["missing"]
