"""Model files: where muscat looks for them, whether they are whole, and how a user gets them.

`muscat models` lists, per model-based extractor, the files it needs, where, and whether each is
present and verified; `muscat models fetch demucs` downloads Demucs' published models;
`muscat models add drums PATH` installs the user's ADTOF checkpoint (its licence forbids shipping
or fetching it). Nothing else in muscat downloads anything: `extract` and `watch` never do.

Layout: a folder per extractor under `models_dir` (default: the user's data folder,
`~/.local/share/muscat/models`), each with a `manifest.json` holding the sha256 and size of every
file muscat put there. Model files are loaded only once they match: Demucs' `.th` files are
pickles (loading one runs code), so a file whose content is not the recorded one, or not the one
its name's checksum (`<sig>-<sha256 prefix>.th`, as Demucs publishes them) says, is refused before
anything unpickles it.

Demucs' files come from where Demucs itself gets them: the list of signatures and checksums, and
the bags' `.yaml`, ship inside the installed demucs package (`demucs/remote/files.txt` and
`demucs/remote/<model>.yaml`); the `.th` files are downloaded from `https://dl.fbaipublicfiles.com/demucs/`
(or a mirror, `[models] demucs_url`, laid out the same way). The folder they land in is a Demucs
model repo: `demucs -n htdemucs_ft --repo FOLDER` reads it too, without network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import MuscatError

if TYPE_CHECKING:
    import urllib.request

    from .config import Settings

MANIFEST = "manifest.json"

# What each model-based extractor's files are under, and where they are published.
LICENCES = {
    "demucs": "MIT (Demucs, by Meta AI; its pretrained weights are published with the code)",
    "drums": "CC BY-NC-SA 4.0 (ADTOF's models): non-commercial use only, so muscat cannot ship or "
             "download them",
    "bass_pitch": "LGPL-3.0 (PESTO)",
    "notes": "Apache-2.0 (Basic Pitch, by Spotify)",
    "bass_notes": "Apache-2.0 (Basic Pitch, by Spotify)",
}


def _basic_pitch_model(params: dict[str, Any]) -> str:
    from extractors._basic_pitch import MODEL_IN_PACKAGE

    return MODEL_IN_PACKAGE


# Extractors whose weights ship inside a wheel muscat installs: (distribution, the end of the
# file's path in it, from the extractor's parameters).
IN_WHEEL: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "bass_pitch": ("pesto-pitch", lambda params: f"weights/{params['model']}.ckpt"),
    "notes": ("basic-pitch", _basic_pitch_model),
    "bass_notes": ("basic-pitch", _basic_pitch_model),
}
ADTOF_SOURCE = ("ADTOF publishes its models with its code at https://github.com/MZehren/ADTOF; the "
                "PyTorch checkpoint muscat reads is in ADTOF's PyTorch port, https://github.com/xavriley/"
                "ADTOF-pytorch (src/adtof_pytorch/data/adtof_frame_rnn_pytorch_weights.pth)")
ADD_DRUMS = "muscat models add drums PATH"
FETCH_DEMUCS = "muscat models fetch demucs"

# Progress of one download: (file name, bytes so far, bytes in all or None when not known).
Progress = Callable[[str, int, "int | None"], None]


class NotInstalled(str):
    """An unavailability reason meaning "an optional model that is not installed": `muscat doctor`
    shows it as `off` with `command`, not as a failure."""

    command: str

    def __new__(cls, reason: str, command: str = "") -> NotInstalled:
        made = super().__new__(cls, reason)
        made.command = command
        return made


class ModelError(MuscatError):
    """A model file that cannot be fetched or added (exit status 2)."""


# -- where model files live ------------------------------------------------------------------

_models_dir: Path | None = None


def use(models_dir: Path) -> None:
    """The models folder of this process (set from the settings whenever extractors are loaded)."""
    global _models_dir
    _models_dir = Path(models_dir)


def folder(extractor: str) -> Path:
    """The folder muscat keeps `extractor`'s model files in."""
    from .config import default_models_dir

    return (_models_dir or default_models_dir()) / extractor


# -- checksums and the manifest --------------------------------------------------------------

_hashed: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def sha256(path: Path) -> str:
    """The file's sha256 (hex), computed once per process for each (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _hashed:
        import hashlib  # here: OpenSSL is loaded only where a sha256 is computed

        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        _hashed[key] = digest.hexdigest()
    return _hashed[key]


def name_checksum(path: Path) -> str | None:
    """The sha256 prefix a `<sig>-<checksum>.th` name carries (Demucs' convention), if any."""
    if path.suffix != ".th" or "-" not in path.stem:
        return None
    return path.stem.rsplit("-", 1)[1].lower()


def recorded(where: Path) -> dict[str, dict[str, Any]]:
    """What the manifest of a models folder records: file name -> {sha256, bytes, source}."""
    try:
        data = json.loads((where / MANIFEST).read_text())
    except (OSError, ValueError):  # none, or damaged: nothing is recorded (fetch and add write it anew)
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def recorded_problem(path: Path) -> str | None:
    """Why `path` is not the file its folder's manifest records, if it is not (None when the
    manifest does not list it)."""
    entry = recorded(path.parent).get(path.name)
    if entry is None or not entry.get("sha256"):
        return None
    actual = sha256(path)
    if actual != entry["sha256"]:
        return (f"{path} is not the file muscat recorded: its sha256 was {entry['sha256'][:16]}..., the content "
                f"hashes to {actual[:16]}... (damaged or replaced; it is not loaded)")
    return None


def _record(where: Path, entries: dict[str, dict[str, Any] | None]) -> None:
    """Add (or, with None, remove) manifest entries, written atomically."""
    files = recorded(where)
    for name, entry in entries.items():
        if entry is None:
            files.pop(name, None)
        else:
            files[name] = entry
    temporary = where / f".{MANIFEST}.tmp-{os.getpid()}"
    temporary.write_text(json.dumps({"files": dict(sorted(files.items()))}, indent=2) + "\n")
    os.replace(temporary, where / MANIFEST)


def added(extractor: str) -> Path | None:
    """The file `muscat models add` installed for `extractor`, if any."""
    names = sorted(recorded(folder(extractor)))
    return folder(extractor) / names[-1] if names else None


# -- Demucs: what a model is made of ----------------------------------------------------------


def _demucs_remote() -> Path:
    spec = find_spec("demucs")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("demucs is not installed: `uv sync` installs it")
    return Path(list(spec.submodule_search_locations)[0]) / "remote"


def _parse_files_txt(text: str) -> dict[str, str]:
    """Signature -> path under the root URL, as demucs.pretrained._parse_remote_files reads it."""
    root, found = "", {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("root:"):
            root = line.split(":", 1)[1].strip()
        else:
            found[line.split("-", 1)[0]] = root + line
    return found


@dataclass
class DemucsPlan:
    """The files of one Demucs model: its bag's yaml (None for a single signature) and members."""

    model: str
    base_url: str
    yaml_text: str | None
    members: dict[str, str]  # signature -> path under base_url (`<root><sig>-<sha8>.th`)

    @property
    def names(self) -> list[str]:
        return ([f"{self.model}.yaml"] if self.yaml_text is not None else []) + \
               [path.rsplit("/", 1)[-1] for path in self.members.values()]

    def url(self, sig: str) -> str:
        return self.base_url + self.members[sig]


def _packaged_plan(model: str, base_url: str) -> DemucsPlan | None:
    """The plan from the demucs package alone, when it knows the model."""
    import yaml

    remote = _demucs_remote()
    listing = _parse_files_txt((remote / "files.txt").read_text())
    bag = remote / f"{model}.yaml"
    if bag.is_file():
        text = bag.read_text()
        sigs = list(yaml.safe_load(text)["models"])
        if all(sig in listing for sig in sigs):
            return DemucsPlan(model, base_url, text, {sig: listing[sig] for sig in sigs})
    elif model in listing:
        return DemucsPlan(model, base_url, None, {model: listing[model]})
    return None


def known_demucs_models() -> list[str]:
    return sorted(p.stem for p in _demucs_remote().glob("*.yaml"))


def demucs_plan(model: str, base_url: str, timeout: float = 30) -> DemucsPlan:
    """The files of `model`: from the demucs package when it lists the model (its checksums are
    the package's, whatever a mirror serves), else from the mirror's own `<model>.yaml` and
    `files.txt` (laid out as demucs/remote is)."""
    import yaml

    plan = _packaged_plan(model, base_url)
    if plan is not None:
        return plan
    if base_url == _default_demucs_url():
        raise ModelError(f"demucs knows no model named {model!r} (its models: {', '.join(known_demucs_models())}); "
                         "a mirror (`[models] demucs_url`) may serve others with their .yaml and files.txt")
    listing = _parse_files_txt((_demucs_remote() / "files.txt").read_text())
    try:
        text = _get_text(base_url + f"{model}.yaml", timeout)
        mirrored = _parse_files_txt(_get_text(base_url + "files.txt", timeout))
    except _Unreachable as exc:
        raise ModelError(f"could not get the list of {model}'s files from {base_url}: {exc.reason}. Fetch "
                         f"{base_url}{model}.yaml, its files.txt and the .th files it lists by hand into "
                         f"the models folder, then run `{FETCH_DEMUCS}` again to verify them") from None
    try:
        sigs = list(yaml.safe_load(text)["models"])
    except Exception:  # noqa: BLE001 - any malformed yaml
        raise ModelError(f"{base_url}{model}.yaml is not a Demucs bag (no models list)") from None
    members = {}
    for sig in sigs:
        path = listing.get(sig) or mirrored.get(sig)
        if path is None:
            raise ModelError(f"{base_url}files.txt does not list {sig}, a member of {model}")
        if name_checksum(Path(path)) is None:
            raise ModelError(f"{base_url}files.txt lists {path} without a checksum in its name: muscat "
                             "fetches only files it can verify")
        members[sig] = path
    return DemucsPlan(model, base_url, text, members)


def _default_demucs_url() -> str:
    from .config import DEMUCS_URL

    return DEMUCS_URL


# -- downloads --------------------------------------------------------------------------------


class _Unreachable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# http.client and urllib (with ssl and email) are imported where a download starts: every
# command that lists extractors loads this module, `muscat status` and `sql` among them.


def _request(url: str, start: int = 0) -> urllib.request.Request:
    import urllib.request

    from . import __version__

    headers = {"User-Agent": f"muscat/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, headers=headers)


def _open(url: str, start: int, timeout: float):  # type: ignore[no-untyped-def]
    import http.client
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(_request(url, start), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # what we have is the whole file already (or more)
            return None
        raise _Unreachable(f"HTTP {exc.code} {exc.reason} for {url}") from None
    except urllib.error.URLError as exc:
        raise _Unreachable(f"{url}: {getattr(exc.reason, 'strerror', None) or exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Unreachable(f"{url}: {exc}") from None


def _get_text(url: str, timeout: float) -> str:
    response = _open(url, 0, timeout)
    with response:
        return response.read().decode()


def _total(response, start: int) -> int | None:  # type: ignore[no-untyped-def]
    """The whole file's size, from Content-Range (a resumed download) or Content-Length."""
    ranged = response.headers.get("Content-Range", "")
    if ranged.rpartition("/")[2].isdigit():
        return int(ranged.rpartition("/")[2])
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def download(url: str, target: Path, expected: str, progress: Progress | None = None,
             timeout: float = 60, attempts: int = 5) -> int:
    """Download `url` to `target`, verified: the file's sha256 must start with `expected`.

    The bytes go to `.<name>.part` beside it, resumed with an HTTP Range request after a dropped
    connection (here, up to `attempts` times in a row without progress, or on the next call);
    the file is renamed into place only once verified. A mismatch deletes the download and raises
    ModelError naming the file; a server that cannot be reached raises _Unreachable (the partial
    file stays, to be resumed). Returns the bytes downloaded now."""
    import http.client

    part = target.with_name(f".{target.name}.part")
    fetched, stalled, restarted = 0, 0, False
    while True:
        start = part.stat().st_size if part.exists() else 0
        response = _open(url, start, timeout)
        if response is not None:
            with response:
                if start and getattr(response, "status", None) != 206:
                    start = 0  # the server sent the whole file: start again
                total = _total(response, start)
                done = start
                try:
                    with part.open("ab" if start else "wb") as out:
                        while block := response.read(1 << 20):
                            out.write(block)
                            done += len(block)
                            if progress:
                                progress(target.name, done, total)
                except (OSError, http.client.HTTPException):
                    pass  # the connection dropped: resume below
                fetched += done - start
                if total is not None and done < total:
                    stalled = 0 if done > start else stalled + 1
                    if stalled >= attempts:
                        raise _Unreachable(f"{url}: the connection kept dropping at {done:,} of {total:,} bytes")
                    continue
        actual = sha256(part)
        if actual.startswith(expected):
            break
        part.unlink()
        if start and not restarted:  # resumed onto bytes from elsewhere: once more, from the start
            restarted = True
            continue
        raise ModelError(f"{target.name} from {url} does not match the checksum in its name ({expected}; "
                         f"the download hashes to {actual[:len(expected)]}): it was deleted, nothing was "
                         "installed. Try again, or fetch it from another mirror (`[models] demucs_url`)")
    os.replace(part, target)
    st = target.stat()
    _hashed[(str(target), st.st_size, st.st_mtime_ns)] = actual
    return fetched


# -- fetch and add ----------------------------------------------------------------------------


@dataclass
class FetchReport:
    extractor: str
    model: str
    folder: Path
    files: list[dict[str, Any]] = field(default_factory=list)  # {name, path, bytes, downloaded}

    @property
    def downloaded_bytes(self) -> int:
        return sum(f["downloaded"] for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {"extractor": self.extractor, "model": self.model, "folder": str(self.folder),
                "files": self.files, "downloaded_bytes": self.downloaded_bytes}


def _params(settings: Settings, name: str) -> dict[str, Any]:
    from .registry import load_extractors

    loaded = {e.name: e for e in load_extractors(settings)}
    if name not in loaded:
        raise ModelError(f"no extractor named {name!r}")
    return loaded[name].params


def demucs_folder(settings: Settings, params: dict[str, Any]) -> Path:
    """Where demucs reads its models: `repo` when set, else `<models_dir>/demucs`."""
    return Path(params["repo"]).expanduser() if params["repo"] else settings.models_dir / "demucs"


def fetch(settings: Settings, name: str, model: str | None = None, progress: Progress | None = None,
          log: Callable[[str], None] | None = None) -> FetchReport:
    """Download and verify an extractor's published model files into the folder it reads them from."""
    use(settings.models_dir)
    if name == "drums":
        raise ModelError(f"muscat cannot fetch ADTOF's weights: their licence is {LICENCES['drums']}. "
                         f"{ADTOF_SOURCE}; once you have it, `{ADD_DRUMS}` installs it")
    if name in IN_WHEEL:
        raise ModelError(f"{name} has nothing to fetch: its weights ship in the {IN_WHEEL[name][0]} wheel")
    if name != "demucs":
        raise ModelError(f"muscat fetches models for demucs only (drums: `{ADD_DRUMS}`), not for {name!r}")
    params = _params(settings, "demucs")
    model = model or params["model"]
    target = demucs_folder(settings, params)
    plan = demucs_plan(model, settings.demucs_url)
    report = FetchReport("demucs", model, target)
    say = log or (lambda message: None)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the models folder {target}: {exc.strerror}") from None
    for sig, path in plan.members.items():
        file = target / path.rsplit("/", 1)[-1]
        expected = name_checksum(file) or ""
        if file.is_file():
            from extractors.demucs import _checksum_problem

            problem = _checksum_problem([file])
            if problem is None:
                report.files.append({"name": file.name, "path": str(file), "bytes": file.stat().st_size,
                                     "downloaded": 0})
                _record(target, {file.name: _entry(file, plan.url(sig))})
                continue
            say(f"{problem}: downloading it again")
            file.unlink()
        try:
            got = download(plan.url(sig), file, expected, progress)
        except _Unreachable as exc:
            missing = [plan.url(s) for s, p in plan.members.items()
                       if not (target / p.rsplit("/", 1)[-1]).is_file()]
            raise ModelError(
                f"could not download {model}: {exc.reason}. To install it by hand, download\n  "
                + "\n  ".join(missing)
                + f"\ninto {target}/ and run `{FETCH_DEMUCS}"
                + ("" if model == params["model"] else f" --model {model}")
                + "` again: it verifies them (and writes the bag's .yaml, which comes with demucs) "
                "without downloading") from None
        _record(target, {file.name: _entry(file, plan.url(sig))})
        report.files.append({"name": file.name, "path": str(file), "bytes": file.stat().st_size, "downloaded": got})
        say(f"{file.name}: {file.stat().st_size / 2**20:,.1f} MiB, sha256 verified")
    if plan.yaml_text is not None:
        bag = target / f"{model}.yaml"
        temporary = target / f".{bag.name}.tmp-{os.getpid()}"
        temporary.write_text(plan.yaml_text)
        os.replace(temporary, bag)
        _record(target, {bag.name: _entry(bag, "demucs package" if _packaged_plan(model, plan.base_url)
                                          else plan.base_url + bag.name)})
        report.files.insert(0, {"name": bag.name, "path": str(bag), "bytes": bag.stat().st_size, "downloaded": 0})
    return report


def _entry(path: Path, source: str) -> dict[str, Any]:
    return {"sha256": sha256(path), "bytes": path.stat().st_size, "source": source}


def add(settings: Settings, name: str, source: str | os.PathLike[str]) -> dict[str, Any]:
    """Install the user's checkpoint for `name` (drums): loaded strictly into the architecture
    first, then copied into `<models_dir>/drums` with its sha256 in the manifest."""
    use(settings.models_dir)
    if name == "demucs":
        raise ModelError(f"demucs' models are fetched (`{FETCH_DEMUCS}`), or read from a folder of your own: set "
                         "repo under [extractors.demucs]")
    if name != "drums":
        raise ModelError(f"`muscat models add` takes drums' weights only, not {name!r}")
    path = Path(source).expanduser().absolute()
    if not path.is_file():
        raise ModelError(f"{path} is not a file")
    from extractors import drums

    try:
        drums.load(str(path), "cpu")
    except ValueError as exc:
        raise ModelError(f"not added: {exc}") from None
    digest = sha256(path)
    where = settings.models_dir / "drums"
    dest = where / f"adtof-{digest[:8]}.pth"
    before = recorded(where) if where.is_dir() else {}
    try:
        where.mkdir(parents=True, exist_ok=True)
        temporary = where / f".{dest.name}.part"
        import shutil  # here: its archive modules cost ~10 ms, and `muscat status` imports this module

        shutil.copyfile(path, temporary)
        if sha256(temporary) != digest:
            temporary.unlink()
            raise ModelError(f"copying {path} to {where} changed it (the copy hashes differently): nothing was added")
        os.replace(temporary, dest)
    except OSError as exc:
        raise ModelError(f"cannot copy {path} into {where}: {exc.strerror}") from None
    _record(where, {**{old: None for old in before if old != dest.name},
                    dest.name: {"sha256": digest, "bytes": dest.stat().st_size, "source": str(path)}})
    for old in before:
        if old != dest.name and (where / old).is_file():
            (where / old).unlink()
    params = _params(settings, "drums")
    return {"extractor": "drums", "path": str(dest), "sha256": digest, "bytes": dest.stat().st_size,
            "source": str(path), "overridden_by": params["weights"] or None}


# -- the listing ------------------------------------------------------------------------------


def _file(path: Path, problem: str | None = None, verified: bool | None = None) -> dict[str, Any]:
    present = path.is_file()
    return {"name": path.name, "path": str(path), "present": present,
            "verified": bool(present and problem is None and verified),
            "bytes": path.stat().st_size if present else None, "problem": problem if present else None}


def listing(settings: Settings) -> list[dict[str, Any]]:
    """`muscat models --json` (contract): per model-based extractor, {extractor, files: [{name, path,
    present, verified, bytes}], licence, source}, with folder, command, ready and reason added."""
    from .registry import load_extractors

    loaded = {e.name: e for e in load_extractors(settings)}
    entries = []
    if "demucs" in loaded:
        entries.append(_demucs_entry(settings, loaded["demucs"]))
    if "drums" in loaded:
        entries.append(_drums_entry(settings, loaded["drums"]))
    entries += [_wheel_entry(loaded[name]) for name in IN_WHEEL if name in loaded]
    return entries


def _state(extractor: Any) -> dict[str, Any]:
    return {"ready": extractor.runnable,
            "reason": None if extractor.available else str(extractor.unavailable_reason),
            "enabled": extractor.enabled, "off_reason": extractor.off_reason}


def _demucs_entry(settings: Settings, extractor: Any) -> dict[str, Any]:
    import yaml

    from extractors.demucs import _checksum_problem

    params = extractor.params
    where = demucs_folder(settings, params)
    managed = not params["repo"]
    try:
        plan = _packaged_plan(params["model"], settings.demucs_url)
        expected = plan.names if plan else []
    except ModelError:
        expected = []
    bag = where / f"{params['model']}.yaml"
    if not expected and bag.is_file():  # a model of the user's own, or one a mirror served
        try:
            sigs = list(yaml.safe_load(bag.read_text())["models"])
        except Exception:  # noqa: BLE001
            sigs = []
        expected = [bag.name] + [next((p.name for p in where.glob("*.th") if p.stem.rsplit("-", 1)[0] == sig
                                       or p.stem == sig), f"{sig}.th") for sig in sigs]
    files = []
    for name in expected or [bag.name]:
        path = where / name
        if path.suffix == ".yaml":
            problem = recorded_problem(path) if path.is_file() else None
            packaged = _demucs_remote() / path.name
            verified = path.is_file() and (path.name in recorded(where) or
                                           (packaged.is_file() and packaged.read_bytes() == path.read_bytes()))
        else:
            problem = _checksum_problem([path], managed) if path.is_file() else None
            verified = path.is_file() and (name_checksum(path) is not None or path.name in recorded(where))
        files.append(_file(path, problem, verified))
    source = settings.demucs_url + (" (a mirror)" if settings.demucs_url != _default_demucs_url() else "") + \
        ": the files the installed demucs lists in demucs/remote/files.txt, checked against the checksums " \
        "in their names; the bag's .yaml comes with demucs"
    return {"extractor": "demucs", "model": params["model"], "folder": str(where), "files": files,
            "licence": LICENCES["demucs"], "source": source,
            "command": FETCH_DEMUCS, **_state(extractor)}


def _drums_entry(settings: Settings, extractor: Any) -> dict[str, Any]:
    params = extractor.params
    where = settings.models_dir / "drums"
    if params["weights"]:
        path = Path(params["weights"]).expanduser()
        problem = None
        if path.is_file():
            from extractors import drums

            try:
                drums.load(str(path), "cpu")
            except ValueError as exc:
                problem = str(exc)
        files = [_file(path, problem, verified=True)]  # verified: it loads strictly into the architecture
    else:
        names = sorted(recorded(where)) if where.is_dir() else []
        files = [_file(where / n, recorded_problem(where / n) if (where / n).is_file() else None, verified=True)
                 for n in names]
        if not files:
            files = [_file(where / "adtof-<sha8>.pth")]
    return {"extractor": "drums", "folder": str(where), "files": files, "licence": LICENCES["drums"],
            "source": ADTOF_SOURCE, "command": ADD_DRUMS, **_state(extractor)}


def _wheel_entry(extractor: Any) -> dict[str, Any]:
    """Weights installed with a wheel: verified against the sha256 its RECORD holds."""
    import base64
    from importlib.metadata import PackageNotFoundError, distribution

    dist_name, wanted_file = IN_WHEEL[extractor.name]
    wanted = wanted_file(extractor.params)
    files = []
    try:
        dist = distribution(dist_name)
        for record in dist.files or []:
            if str(record).endswith(wanted):
                path = Path(dist.locate_file(record))
                problem = None
                if path.is_file() and record.hash is not None and record.hash.mode == "sha256":
                    expected = base64.urlsafe_b64decode(record.hash.value + "==").hex()
                    if sha256(path) != expected:
                        problem = (f"{path} is not the file its wheel installed (sha256 differs): "
                                   f"`uv sync --reinstall-package {dist_name}`")
                files.append(_file(path, problem, verified=record.hash is not None))
    except PackageNotFoundError:
        pass
    return {"extractor": extractor.name, "folder": str(Path(files[0]["path"]).parent) if files else None,
            "files": files, "licence": LICENCES[extractor.name],
            "source": f"the {dist_name} wheel (installed with muscat; nothing to fetch)", "command": None,
            **_state(extractor)}
