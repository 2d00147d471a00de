"""Tags, read with mutagen: for new and changed files only, outside the catalogue's lock.

Reading. `read(path)` opens one file and returns its tags as `(key, value)` pairs, in the order
the keys first appear, and a problem (None when fine). A file whose first 128 bytes show no
container mutagen reads tags from, and whose end holds no ID3v1 or APEv2 tag, is left at that
(one open, one or two small reads: a cold scan of 100,000 non-audio files pays about a second
for it). Otherwise the container is recognised as `mutagen.File` does (the first bytes, then the
name), but only the tags are parsed, never the audio stream: a damaged stream is the decoder's
business, not a tag problem. Keys are named the way mutagen's easy interfaces name them,
lowercased:

- Vorbis comments (FLAC, Ogg Vorbis, Opus, Speex, Ogg-FLAC) already are: their keys lowercased.
- ID3 (MP3, AAC, TTA, and the ID3 chunk of WAV, AIFF, DSF, DSDIFF): EasyID3's names (TPE1
  artist, TRCK tracknumber, TCON genre with ID3v1 genre numbers resolved, TDRC date, UFID of
  musicbrainz.org musicbrainz_trackid, TXXX:MusicBrainz Album Id musicbrainz_albumid, RVA2
  replaygain_*_gain/peak, TMCL performer:ROLE, ...), taken from EasyID3's own registry. Frames it
  has no name for: TXXX:DESC is DESC lowercased, COMM comment (COMM:DESC comment:desc, except
  the empty and the ID3v1 description), USLT lyrics, TSSE encoder, TIPL's roles their role
  lowercased, any other text or URL frame its frame id lowercased ('tkey', 'wcom').
- MP4 atoms: EasyMP4's names (©ART artist, trkn tracknumber as '3/12', freeform MusicBrainz
  ids, ...); others: ©wrt composer, ©lyr lyrics, ©too encoder, cpil compilation, a freeform
  `----:MEAN:NAME` NAME lowercased, any other atom its name lowercased ('©mvn', 'stik').
- APEv2 (APE, WavPack, Musepack, TAK, OptimFROG, and MP3s with an APE tag): the key lowercased,
  with Year date, Track tracknumber, Disc discnumber, 'Album Artist' albumartist, Publisher
  organization, Weblink website, Subtitle version, 'EAN/UPC' barcode.
- ASF (WMA): Title title, Author artist, WM/AlbumTitle album, WM/AlbumArtist albumartist,
  WM/Genre genre, WM/Year date, WM/TrackNumber tracknumber, WM/PartOfSet discnumber,
  MusicBrainz/Track Id musicbrainz_trackid, ... (see _ASF); others lowercased ('wm/mood').

A file with both ID3 and APEv2 tags (MP3, TTA) takes each key from ID3 where ID3 has it, else
from APEv2. Binary values (cover art, private frames, ratings) and values longer than
MAX_VALUE characters are skipped; empty values too. Several values of one key are several
pairs, in their order.

A file mutagen does not recognise, or recognises by its name only and cannot parse, has no tags,
and that is no problem (a text file named .mp3, an empty .flac). A file whose first bytes say
what it is but whose tags cannot be parsed has a problem: 'tags: ID3: ...', unless the parse ran
into the end of a file that is cut (see _cut): a truncated file is the decoder's to report.

Storing (`pending`, `update`): the scanner asks for the present files of the folders it scanned
whose `tags_read_at` is NULL or older than `changed_at` (new and changed files, those of a
catalogue from before tags, those a killed scan did not reach), reads them outside the write
transaction (in a `spawn` process pool when there are many; the coordinator runs DuckDB threads
and must not fork), and writes them through Arrow in short batches: `file_tags` rows, the
first value of the library's tag columns on `files`, `tags_read_at`, and the problem (or none)
in `tags_error` and `scan_problems`.

On the first scan of a root every file is new: the forked folder walkers read those tags, in
the walk through the open that stats each file (`read_open`) or once they have walked
(`read_block`), before the write transaction, a `Block` per folder (`pack_block`, see
catalog/walker.py), and the scanner writes them with the files, in the reconciliation's
transaction (`block_files`, `block_tables`, `store`), stamped with the scan's time, which is the
files' `changed_at`: they count as read since the last change. Those the walkers left (beyond
their budget, or a file gone before it was read) are due, and are read as above.

This module must not import duckdb or pyarrow at import time: the tag-reading processes load it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .database import utc_now

if TYPE_CHECKING:
    import duckdb

    from .database import Database

# A value this long is a payload (an embedded picture in text), not a tag.
MAX_VALUE = 100_000
# The columns `library` shows (first value of each key); track and disc numbers as integers.
TEXT_COLUMNS = ("artist", "album", "albumartist", "title", "genre", "date")
NUMBER_COLUMNS = {"track_number": "tracknumber", "disc_number": "discnumber"}
# A track or disc number: digits, optionally '/total' ('3/12' is 3); anything else is NULL.
# RE2 syntax: DuckDB applies it when tags are written.
NUMBER_PATTERN = r"^\s*(\d+)\s*(/\s*\d*\s*)?$"
# Below this many files, or with fewer cores, reading in this process beats starting a pool of
# them (each reading process costs ~0.3 s to start; on 2 busy cores a pool of 2 was slower than
# one process even for 10,000 files).
POOL_THRESHOLD = 4000
POOL_MIN_CORES = 4
# Files per task sent to a reading process, and at most this many files per write batch.
CHUNK = 64
BATCH_FILES = 20000
# A write batch is also written once reading has gone on this long since the last one.
BATCH_SECONDS = 2.0

Pairs = list[tuple[str, str]]


class Vanished(Exception):
    """The file was gone when its tags were to be read (the next scan sees why)."""


# -- reading -------------------------------------------------------------------------------


_OPEN = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def read(path: bytes | str, dir_fd: int | None = None) -> tuple[Pairs, str | None]:
    """The tags of one file as (key, value) pairs, and a problem with them (or None); `path`
    relative to the open folder `dir_fd` when given.

    Raises Vanished when the file no longer exists."""
    try:
        fd = os.open(path, _OPEN, dir_fd=dir_fd)
    except FileNotFoundError:
        raise Vanished(os.fsdecode(path)) from None
    except OSError as exc:
        return [], unreadable(exc)
    try:
        return read_open(fd, path)
    finally:
        os.close(fd)


def read_open(fd: int, name: bytes | str, size: int | None = None) -> tuple[Pairs, str | None]:
    """read() of a file open as `fd` (left open), named `name`; `size`, when known, spares a
    stat. The walkers read new files' tags this way, through the open that also stats them."""
    try:
        if not _may_hold_tags(fd, size):
            return [], None
        with open(fd, "rb", closefd=False) as fileobj:
            return _read(fileobj, os.fsdecode(name))
    except OSError as exc:
        return [], unreadable(exc)


def unreadable(exc: OSError) -> str:
    """The problem of a file whose tags cannot be read because the file cannot be."""
    return f"tags: cannot read the file: {exc.strerror or exc}"


def read_many(paths: list[bytes]) -> list[tuple[Pairs, str | None] | None]:
    """read() for each path; None for one that vanished. What a reading process runs."""
    out: list[tuple[Pairs, str | None] | None] = []
    for path in paths:
        try:
            out.append(read(path))
        except Vanished:
            out.append(None)
    return out


@dataclass
class Block:
    """The tags of one folder's files, read by a walker (catalog/walker.py) and carried to the
    scanner with the folder's listing, packed so that the scanner holds no Python object per
    value: for each file, in the listing's order, its number of pairs (`counts`, None when no
    file has any); each pair's key and value as UTF-8 with int32 offsets, and its ordinal; the
    problems by file, and the files that vanished before they were read (left unread)."""

    files: int
    counts: Any = None  # array('I'), one per file
    ordinals: Any = None  # array('i'), one per pair
    key_offsets: Any = None  # array('i'), pairs + 1
    key_data: bytes = b""
    value_offsets: Any = None
    value_data: bytes = b""
    errors: dict[int, str] | None = None
    vanished: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        """About what the block weighs, for the walk's budget."""
        pairs = len(self.ordinals) if self.ordinals is not None else 0
        return 64 + 4 * self.files + 12 * pairs + len(self.key_data) + len(self.value_data)


def read_block(folder: bytes, names: list[bytes]) -> Block:
    """read() for each file of one folder (absolute path, exact bytes), packed as a Block.

    Each file is opened relative to the open folder: the kernel then looks up one name per file
    instead of the whole path (a fifth of the cost of reading 100,000 small files)."""
    try:
        dir_fd = os.open(folder or b".", _OPEN | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:  # the folder is gone, and its files with it
        return Block(len(names), vanished=tuple(range(len(names))))
    except OSError:
        dir_fd = None  # each file then says why it cannot be read
    try:
        return _read_block(folder, names, dir_fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _read_block(folder: bytes, names: list[bytes], dir_fd: int | None) -> Block:
    prefix = folder + b"/" if folder and dir_fd is None else b""

    def each() -> Iterator[tuple[Pairs, str | None] | None]:
        for name in names:
            try:
                yield read(prefix + name, dir_fd)
            except Vanished:
                yield None

    return pack_block(each())


def pack_block(results: Iterable[tuple[Pairs, str | None] | None]) -> Block:
    """The Block of one folder's files from read()'s result for each, in the listing's order;
    None for a file gone before it was read (left unread)."""
    from array import array

    counts = array("I")
    ordinals = array("i")
    key_offsets, value_offsets = array("i", [0]), array("i", [0])
    keys: list[bytes] = []
    values: list[bytes] = []
    key_end = value_end = 0
    errors: dict[int, str] = {}
    vanished: list[int] = []
    files = 0
    for index, result in enumerate(results):
        files += 1
        if result is None:
            vanished.append(index)
            counts.append(0)
            continue
        pairs, problem = result
        if problem is not None:
            errors[index] = problem
        counts.append(len(pairs))
        if not pairs:
            continue
        seen: dict[str, int] = {}
        for key, value in pairs:
            ordinal = seen.get(key, 0)
            seen[key] = ordinal + 1
            # mutagen gives str; one with a lone surrogate has no UTF-8 form: '?' for it.
            key_b, value_b = key.encode("utf-8", "replace"), value.encode("utf-8", "replace")
            key_end += len(key_b)
            value_end += len(value_b)
            keys.append(key_b)
            values.append(value_b)
            key_offsets.append(key_end)
            value_offsets.append(value_end)
            ordinals.append(ordinal)
    if not keys:
        return Block(files, errors=errors or None, vanished=tuple(vanished))
    return Block(files, counts, ordinals, key_offsets, b"".join(keys), value_offsets, b"".join(values),
                 errors or None, tuple(vanished))


def block_files(block: Block) -> tuple[list[bool], list[str | None]]:
    """For each file of a Block: whether it was read (not gone), and its problem."""
    read = [True] * block.files
    for index in block.vanished:
        read[index] = False
    problems: list[str | None] = [None] * block.files
    for index, problem in (block.errors or {}).items():
        problems[index] = problem
    return read, problems


def block_tables(blocks: list[tuple[int, Block]]) -> Any:
    """The tags of Blocks whose files have ids `first, first + 1, ...` (the scanner's
    seen_id), as one Arrow table (id, key, ordinal, value)."""
    from array import array

    import pyarrow as pa

    ids = array("q")
    ordinals = array("i")
    keys: list[Any] = []
    values: list[Any] = []
    for first, block in blocks:
        if block.counts is None:
            continue
        for index, count in enumerate(block.counts):
            if count:
                ids.extend([first + index] * count)
        ordinals.extend(block.ordinals)
        pairs = len(block.ordinals)
        keys.append(pa.StringArray.from_buffers(pairs, pa.py_buffer(block.key_offsets), pa.py_buffer(block.key_data)))
        values.append(pa.StringArray.from_buffers(pairs, pa.py_buffer(block.value_offsets),
                                                  pa.py_buffer(block.value_data)))

    def ints(numbers: Any, kind: Any) -> Any:  # from the array's buffer, as it is
        return pa.Array.from_buffers(kind, len(numbers), [None, pa.py_buffer(numbers)])

    def strings(parts: list[Any]) -> Any:
        return pa.concat_arrays(parts) if parts else pa.nulls(0, pa.string())

    return pa.table({
        "id": ints(ids, pa.int64()), "key": strings(keys), "ordinal": ints(ordinals, pa.int32()),
        "value": strings(values),
    })


# First bytes by which mutagen knows a container that can hold tags (mutagen.File's scores);
# a file with none of them, and no ID3v1 or APEv2 tag at its end, is not opened by mutagen.
_MAGIC = (b"ID3", b"fLaC", b"OggS", b"RIFF", b"FORM", b"MAC ", b"wvpk", b"MPCK", b"MP+", b"tBaK",
          b"OFR ", b"TTA", b"DSD ", b"FRM8", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", b"\x0b\x77",
          b"MThd")
# ... and what marks an MP4 anywhere in its first bytes; in a file shorter than that, also an
# APEv2 tag.
_IN_HEADER = re.compile(rb"ftyp|moov")
_IN_WHOLE_FILE = re.compile(rb"ftyp|moov|APETAGEX")


def _may_hold_tags(fd: int, size: int | None = None) -> bool:
    """Whether a file's first or last bytes show something mutagen can read tags from: the
    cheap look that spares mutagen (and its exceptions) the files it would not recognise."""
    header = os.pread(fd, 128, 0)
    if header.startswith(_MAGIC) or header[:1] == b"\xff" and header[1:2] >= b"\xe0":  # MPEG audio, ADTS
        return True
    if len(header) < 128:  # the whole file: an APEv2 tag takes 32 bytes, ID3v1 128
        return _IN_WHOLE_FILE.search(header) is not None
    if _IN_HEADER.search(header) is not None:
        return True
    if size is None:
        size = os.fstat(fd).st_size
    footer = header if size <= 128 else os.pread(fd, 160, max(0, size - 160))
    return b"APETAGEX" in footer or footer[-128:-125] == b"TAG"


def _read(fileobj: Any, name: str) -> tuple[Pairs, str | None]:
    kinds = _kinds()
    try:
        header = fileobj.read(128)
    except OSError:
        header = b""
    lowered = name.lower()
    best: tuple[int, str] = (0, "")
    best_kind = None
    for kind in kinds:
        score = (kind.score(lowered, fileobj, header), kind.__name__)
        if score[0] > 0 and score > best:
            best, best_kind = score, kind
    if best_kind is None:
        return [], None
    reader, what = _READERS[best_kind.__name__]
    if reader is None:
        return [], None
    recognised = best_kind.score("", fileobj, header) > 0  # by its first bytes, not its name
    tracked = _Tracked(fileobj)
    try:
        fileobj.seek(0)
        return _clean(reader(tracked, best_kind)), None
    except Exception as exc:  # mutagen raises many kinds (struct.error and ValueError too)
        if not recognised or (tracked.hit_end and _cut(fileobj, best_kind.__name__)):
            return [], None
        return [], f"tags: {getattr(exc, 'tag_format', what)}: {_message(exc, name, fileobj.name)}"


class _Tracked:
    """A file object that notes whether a read came back short (the file ended)."""

    def __init__(self, fileobj: Any) -> None:
        self._f = fileobj
        self.hit_end = False

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        if size is None or size < 0 or len(data) < size:
            self.hit_end = True
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _cut(fileobj: Any, kind: str) -> bool:
    """Whether a parse that ran into the end of the file met a cut file, not a broken tag.

    A cut file is the decoder's to report (it fails as truncated); a tag that claims more than
    its own block, in a file whose structure is whole, is a tag problem. The structure is
    checked where it is cheap to: an ID3v2 tag's declared size, and FLAC's chain of metadata
    block headers; for other containers, running into the end means the file is cut.
    """
    size = os.fstat(fileobj.fileno()).st_size
    fileobj.seek(0)
    head = fileobj.read(10)
    offset = 0
    if head[:3] == b"ID3" and len(head) == 10:
        offset = 10 + sum((head[6 + i] & 0x7F) << (7 * (3 - i)) for i in range(4))
        if offset > size:
            return True
        if kind not in ("FLAC",):
            return False  # the ID3v2 tag lies within the file: it is the tag that is broken
    if kind != "FLAC":
        return True
    fileobj.seek(offset)
    if fileobj.read(4) != b"fLaC":
        return True
    position = offset + 4
    while True:
        fileobj.seek(position)
        block = fileobj.read(4)
        if len(block) < 4:
            return True
        position += 4 + int.from_bytes(block[1:4], "big")
        if position > size:
            return True
        if block[0] & 0x80:  # the last metadata block: the chain is whole
            return False


def _message(exc: BaseException, name: str, opened_as: Any) -> str:
    """mutagen's message without the file's name (scan_problems names the file)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    for form in (repr(os.fsencode(name)), repr(name), name):
        text = text.replace(form, "")
    if text.startswith(repr(opened_as) + " "):  # mutagen names the file by its descriptor
        text = text[len(repr(opened_as)) :]
    text = text.strip(" :")
    return text if text and text != "error" else "cannot be parsed"


def _clean(pairs: Iterable[tuple[str, Any]]) -> Pairs:
    out: Pairs = []
    for key, value in pairs:
        if not isinstance(value, str):
            continue
        value = value.strip("\x00")
        key = key.strip().lower()
        if key and value.strip() and len(value) <= MAX_VALUE:
            out.append((key, value))
    return out


def _merge(first: Pairs, second: Pairs) -> Pairs:
    """`first`, then the pairs of `second` whose key `first` does not have."""
    have = {k for k, _ in first}
    return first + [(k, v) for k, v in second if k not in have]


class _TagError(Exception):
    """A tag block failed to parse; `tag_format` names which one (ID3 or APEv2 on an MP3)."""

    def __init__(self, tag_format: str, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.tag_format = tag_format


# --- ID3 ---


def _id3_names() -> tuple[dict[str, str], dict[str, str]]:
    """EasyID3's names: text frame id -> key, lowercased TXXX description -> key."""
    from mutagen.easyid3 import EasyID3

    text: dict[str, str] = {}
    txxx: dict[str, str] = {}
    for key in EasyID3.Get:
        if "*" in key or key in ("genre", "website", "musicbrainz_trackid"):
            continue
        easy = EasyID3()
        try:
            easy[key] = ["2000"]  # a value every setter takes (dates, numbers, text)
        except Exception:
            continue
        for frame in easy._EasyID3__id3.values():
            if frame.FrameID == "TXXX":
                txxx[frame.desc.lower()] = key
            elif frame.FrameID.startswith("T"):
                text[frame.FrameID] = key
    return text, txxx


_ID3_EXTRA = {"TSSE": "encoder"}
_ID3_SKIP_COMMENT = ("", "id3v1 comment")


def _id3_pairs(id3: Any) -> Pairs:
    from mutagen.id3 import TextFrame, UrlFrame

    text, txxx = _names("id3")
    easy: list[tuple[str, Any]] = []
    other: list[tuple[str, Any]] = []
    for frame in id3.values():
        fid = frame.FrameID
        if fid == "TXXX":
            key = txxx.get(frame.desc.lower())
            target = easy if key else other
            target += [(key or frame.desc.lower() or "txxx", str(v)) for v in frame.text]
        elif fid == "TCON":
            easy += [("genre", g) for g in frame.genres]
        elif fid == "UFID":
            if frame.owner == "http://musicbrainz.org":
                easy.append(("musicbrainz_trackid", frame.data.decode("ascii", "replace")))
        elif fid == "WOAR":
            easy.append(("website", frame.url))
        elif fid == "RVA2":
            desc = frame.desc.lower()
            easy += [(f"replaygain_{desc}_gain", "%+f dB" % frame.gain),
                     (f"replaygain_{desc}_peak", "%f" % frame.peak)]
        elif fid == "TMCL":
            easy += [("performer:" + role.lower(), person) for role, person in frame.people]
        elif fid == "TIPL":
            other += [(role.lower(), person) for role, person in frame.people]
        elif fid in text:
            easy += [(text[fid], str(v)) for v in frame.text]
        elif fid == "COMM":
            desc = frame.desc.lower()
            key = "comment" if desc in _ID3_SKIP_COMMENT else f"comment:{desc}"
            other += [(key, str(v)) for v in frame.text]
        elif fid == "USLT":
            other.append(("lyrics", frame.text))
        elif fid == "WXXX":
            other.append((frame.desc.lower() or "wxxx", frame.url))
        elif isinstance(frame, TextFrame):
            other += [(_ID3_EXTRA.get(fid, fid.lower()), str(v)) for v in frame.text]
        elif isinstance(frame, UrlFrame):
            other.append((fid.lower(), frame.url))
    return _clean(easy + other)


def _id3_of(fileobj: Any) -> Pairs:
    """The ID3 tags at the start or (ID3v1) the end of the file; none when there are none."""
    from mutagen.id3 import ID3, ID3NoHeaderError

    try:
        fileobj.seek(0)
        return _id3_pairs(ID3(fileobj))
    except ID3NoHeaderError:
        return []
    except Exception as exc:
        raise _TagError("ID3", exc) from exc


def _ape_of(fileobj: Any) -> Pairs:
    from mutagen.apev2 import APENoHeaderError, APEv2

    try:
        fileobj.seek(0)
        return _ape_pairs(APEv2(fileobj))
    except APENoHeaderError:
        return []
    except Exception as exc:
        raise _TagError("APEv2", exc) from exc


def _read_id3_then_ape(fileobj: Any, kind: Any) -> Pairs:
    return _merge(_id3_of(fileobj), _ape_of(fileobj))


def _read_ape_then_id3(fileobj: Any, kind: Any) -> Pairs:
    return _merge(_ape_of(fileobj), _id3_of(fileobj))


def _read_id3_chunk(fileobj: Any, kind: Any) -> Pairs:
    """WAV, AIFF, DSF, DSDIFF: the ID3 tag in the file's own chunk (or DSF's pointer)."""
    from mutagen.id3 import ID3NoHeaderError

    tags_class = _ID3_CHUNK_CLASSES[kind.__name__]()
    try:
        return _id3_pairs(tags_class(fileobj))
    except ID3NoHeaderError:
        return []


def _id3_chunk_classes() -> dict[str, Callable[[], Any]]:
    def wave() -> Any:
        from mutagen.wave import _WaveID3
        return _WaveID3

    def aiff() -> Any:
        from mutagen.aiff import _IFFID3
        return _IFFID3

    def dsf() -> Any:
        from mutagen.dsf import _DSFID3
        return _DSFID3

    def dsdiff() -> Any:
        from mutagen.dsdiff import _DSDIFFID3
        return _DSDIFFID3

    return {"WAVE": wave, "AIFF": aiff, "DSF": dsf, "DSDIFF": dsdiff}


_ID3_CHUNK_CLASSES = _id3_chunk_classes()

# --- APEv2 ---

_APE = {
    "year": "date", "track": "tracknumber", "disc": "discnumber", "album artist": "albumartist",
    "publisher": "organization", "weblink": "website", "subtitle": "version", "ean/upc": "barcode",
}


def _ape_pairs(ape: Any) -> Pairs:
    from mutagen.apev2 import BINARY

    pairs: list[tuple[str, Any]] = []
    for key, value in ape.items():
        if value.kind == BINARY:
            continue
        name = _APE.get(key.lower(), key.lower())
        pairs += [(name, str(v)) for v in value] if hasattr(value, "__iter__") else [(name, str(value))]
    return _clean(pairs)


def _read_ape(fileobj: Any, kind: Any) -> Pairs:
    return _ape_of(fileobj)


# --- Vorbis comments ---


_VORBIS_SKIP = {"metadata_block_picture", "coverart", "coverartmime"}


def _vorbis_pairs(comments: Any) -> Pairs:
    if comments is None:
        return []
    return [(k, v) for k, v in _clean(comments) if k not in _VORBIS_SKIP]


def _read_flac(fileobj: Any, kind: Any) -> Pairs:
    return _vorbis_pairs(kind(fileobj).tags)


def _read_ogg(fileobj: Any, kind: Any) -> Pairs:
    # What OggFileType.load does, without finding the last page (the stream's length).
    try:
        info = kind._Info(fileobj)
        return _vorbis_pairs(kind._Tags(fileobj, info))
    except EOFError:
        raise ValueError("no appropriate stream found") from None


# --- MP4 ---


def _mp4_names() -> dict[str, str]:
    """EasyMP4's names: atom key -> key."""
    from mutagen.easymp4 import EasyMP4Tags

    names: dict[str, str] = {}
    for key in EasyMP4Tags.Get:
        easy = EasyMP4Tags()
        try:
            easy[key] = ["1"]
        except Exception:
            continue
        for atom in easy._EasyMP4Tags__mp4:
            names[atom.lower() if atom.startswith("----") else atom] = key
    return names


_MP4_EXTRA = {"\xa9wrt": "composer", "\xa9lyr": "lyrics", "\xa9too": "encoder", "cpil": "compilation"}


def _mp4_value(atom: str, value: Any) -> str | None:
    from mutagen.mp4 import AtomDataType, MP4Cover, MP4FreeForm

    if isinstance(value, MP4Cover):
        return None
    if isinstance(value, MP4FreeForm):
        if value.dataformat in (AtomDataType.UTF8, AtomDataType.IMPLICIT):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return None
        if value.dataformat == AtomDataType.UTF16:
            return bytes(value).decode("utf-16-be", "replace")
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):  # trkn, disk: (number, total), as EasyMP4 gives them
        number, total = (list(value) + [0, 0])[:2]
        return f"{number}/{total}" if total else str(number)
    if isinstance(value, (str, int)):
        return str(value)
    return None


def _read_mp4(fileobj: Any, kind: Any) -> Pairs:
    from mutagen.mp4 import Atoms, MP4Tags

    atoms = Atoms(fileobj)
    if not MP4Tags._can_load(atoms):
        return []
    tags = MP4Tags(atoms, fileobj)
    names = _names("mp4")
    easy: list[tuple[str, Any]] = []
    other: list[tuple[str, Any]] = []
    for atom, values in tags.items():
        freeform = atom.startswith("----")
        key = names.get(atom.lower() if freeform else atom)
        target = easy if key else other
        if key is None:
            key = atom.split(":", 2)[-1].lower() if freeform else _MP4_EXTRA.get(atom, atom.lower())
        for value in values if isinstance(values, list) else [values]:
            text = _mp4_value(atom, value)
            if text is not None:
                target.append((key, text))
    return _clean(easy + other)


# --- ASF ---

_ASF = {
    "title": "title", "author": "artist", "wm/albumtitle": "album", "wm/albumartist": "albumartist",
    "wm/genre": "genre", "wm/year": "date", "wm/originalreleaseyear": "originaldate",
    "wm/tracknumber": "tracknumber", "wm/partofset": "discnumber", "wm/composer": "composer",
    "wm/conductor": "conductor", "wm/writer": "lyricist", "wm/publisher": "organization",
    "wm/isrc": "isrc", "wm/beatsperminute": "bpm", "wm/mood": "mood", "wm/lyrics": "lyrics",
    "copyright": "copyright", "description": "comment", "wm/barcode": "barcode",
    "wm/catalogno": "catalognumber", "wm/language": "language", "wm/encodedby": "encodedby",
    "wm/contentgroupdescription": "grouping", "wm/setsubtitle": "discsubtitle",
    "wm/subtitle": "version", "wm/albumsortorder": "albumsort", "wm/artistsortorder": "artistsort",
    "wm/titlesortorder": "titlesort", "wm/albumartistsortorder": "albumartistsort",
    "wm/composersortorder": "composersort", "wm/media": "media",
    "wm/encodingsettings": "encoder",
    "musicbrainz/track id": "musicbrainz_trackid", "musicbrainz/album id": "musicbrainz_albumid",
    "musicbrainz/artist id": "musicbrainz_artistid",
    "musicbrainz/album artist id": "musicbrainz_albumartistid",
    "musicbrainz/release group id": "musicbrainz_releasegroupid",
    "musicbrainz/release track id": "musicbrainz_releasetrackid",
    "musicbrainz/work id": "musicbrainz_workid", "musicbrainz/trm id": "musicbrainz_trmid",
    "musicbrainz/disc id": "musicbrainz_discid",
    "musicbrainz/album status": "musicbrainz_albumstatus",
    "musicbrainz/album type": "musicbrainz_albumtype",
    "musicbrainz/album release country": "releasecountry", "musicip/puid": "musicip_puid",
    "acoustid/id": "acoustid_id", "acoustid/fingerprint": "acoustid_fingerprint",
}


def _read_asf(fileobj: Any, kind: Any) -> Pairs:
    from mutagen.asf import ASFBoolAttribute, ASFByteArrayAttribute, ASFGUIDAttribute

    pairs: list[tuple[str, Any]] = []
    for key, attribute in kind(fileobj).tags:
        if isinstance(attribute, (ASFByteArrayAttribute, ASFGUIDAttribute)):
            continue
        value = attribute.value
        text = ("1" if value else "0") if isinstance(attribute, ASFBoolAttribute) else str(value)
        pairs.append((_ASF.get(key.lower(), key.lower()), text))
    return _clean(pairs)


# --- which reader for which of mutagen's file types ---

_READERS: dict[str, tuple[Callable[[Any, Any], Pairs] | None, str]] = {
    "MP3": (_read_id3_then_ape, "ID3"),
    "TrueAudio": (_read_id3_then_ape, "ID3"),
    "AAC": (_read_id3_then_ape, "ID3"),
    "ID3FileType": (_read_id3_then_ape, "ID3"),
    "WavPack": (_read_ape_then_id3, "APEv2"),
    "Musepack": (_read_ape_then_id3, "APEv2"),
    "MonkeysAudio": (_read_ape_then_id3, "APEv2"),
    "OptimFROG": (_read_ape_then_id3, "APEv2"),
    "TAK": (_read_ape_then_id3, "APEv2"),
    "APEv2File": (_read_ape, "APEv2"),
    "FLAC": (_read_flac, "FLAC"),
    "OggVorbis": (_read_ogg, "Ogg Vorbis"),
    "OggOpus": (_read_ogg, "Ogg Opus"),
    "OggFLAC": (_read_ogg, "Ogg FLAC"),
    "OggSpeex": (_read_ogg, "Ogg Speex"),
    "OggTheora": (_read_ogg, "Ogg Theora"),
    "MP4": (_read_mp4, "MP4"),
    "ASF": (_read_asf, "ASF"),
    "WAVE": (_read_id3_chunk, "WAV ID3"),
    "AIFF": (_read_id3_chunk, "AIFF ID3"),
    "DSF": (_read_id3_chunk, "DSF ID3"),
    "DSDIFF": (_read_id3_chunk, "DSDIFF ID3"),
    "AC3": (None, ""),
    "SMF": (None, ""),
}

_cache: dict[str, Any] = {}


def load_readers() -> None:
    """Import mutagen's readers now (~0.1 s of CPU, more under load): the watcher does at its
    start, so that its first change does not, inside the write batch that reads its tags."""
    _kinds()


def _kinds() -> list[Any]:
    """mutagen's file types, as mutagen.File considers them."""
    kinds = _cache.get("kinds")
    if kinds is None:
        from mutagen.aac import AAC
        from mutagen.ac3 import AC3
        from mutagen.aiff import AIFF
        from mutagen.apev2 import APEv2File
        from mutagen.asf import ASF
        from mutagen.dsdiff import DSDIFF
        from mutagen.dsf import DSF
        from mutagen.flac import FLAC
        from mutagen.id3 import ID3FileType
        from mutagen.monkeysaudio import MonkeysAudio
        from mutagen.mp3 import MP3
        from mutagen.mp4 import MP4
        from mutagen.musepack import Musepack
        from mutagen.oggflac import OggFLAC
        from mutagen.oggopus import OggOpus
        from mutagen.oggspeex import OggSpeex
        from mutagen.oggtheora import OggTheora
        from mutagen.oggvorbis import OggVorbis
        from mutagen.optimfrog import OptimFROG
        from mutagen.smf import SMF
        from mutagen.tak import TAK
        from mutagen.trueaudio import TrueAudio
        from mutagen.wave import WAVE
        from mutagen.wavpack import WavPack

        kinds = [MP3, TrueAudio, OggTheora, OggSpeex, OggVorbis, OggFLAC, FLAC, AIFF, APEv2File,
                 MP4, ID3FileType, WavPack, Musepack, MonkeysAudio, OptimFROG, ASF, OggOpus, AAC,
                 AC3, SMF, TAK, DSF, DSDIFF, WAVE]
        kinds = [k for k in kinds if k.__name__ in _READERS]
        _cache["kinds"] = kinds
    return kinds


def _names(which: str) -> Any:
    names = _cache.get(which)
    if names is None:
        names = _cache[which] = _id3_names() if which == "id3" else _mp4_names()
    return names


# -- storing -------------------------------------------------------------------------------


@dataclass
class _Todo:
    file_id: int
    path: bytes  # absolute, exact bytes
    changed_at: datetime


def pending(con: duckdb.DuckDBPyConnection, scopes: Iterable[tuple[int, str, bool]]) -> list[_Todo]:
    """Present files in the scanned (root_id, folder, recursive) scopes whose tags are unread
    or older than their last change: one query per scope, no per-file work when none are."""
    todo: list[_Todo] = []
    for root_id, prefix, recursive in scopes:
        scope = "(? = '' OR f.dir = ? OR starts_with(f.dir, ? || '/'))" if recursive else "(? = ? AND f.dir = ?)"
        rows = con.execute(
            f"""
            SELECT f.file_id, r.path, f.dir, f.name, f.raw_path, f.changed_at
            FROM files f JOIN roots r USING (root_id)
            WHERE f.root_id = ? AND f.status = 'present'
              AND (f.tags_read_at IS NULL OR f.tags_read_at < f.changed_at) AND {scope}
            ORDER BY f.file_id
            """,
            [root_id, prefix, prefix, prefix],
        ).fetchall()
        for file_id, root, folder, name, raw, changed_at in rows:
            root_b = os.fsencode(root)
            if raw is not None:
                path = root_b + b"/" + raw
            else:
                path = root_b + b"/" + os.fsencode(f"{folder}/{name}" if folder else name)
            todo.append(_Todo(file_id, path, changed_at))
    return todo


def update(
    db: Database,
    todo: list[_Todo],
    workers: int | None = None,
    on_problem: Callable[[str, str], None] | None = None,
) -> int:
    """Read the tags of `todo` and write them in short batches; returns how many were written.

    `on_problem(path, reason)` hears each file whose tags could not be parsed."""
    written = 0
    batch: list[tuple[_Todo, tuple[Pairs, str | None]]] = []
    last = time.monotonic()
    for item, result in _read_all(todo, workers):
        if result is None:  # vanished: the next scan marks it missing
            continue
        batch.append((item, result))
        if result[1] is not None and on_problem is not None:
            on_problem(os.fsdecode(item.path), result[1])
        if len(batch) >= BATCH_FILES or time.monotonic() - last >= BATCH_SECONDS:
            written += _write(db, batch)
            batch, last = [], time.monotonic()
    if batch:
        written += _write(db, batch)
    return written


def _read_all(todo: list[_Todo], workers: int | None) -> Iterator[tuple[_Todo, Any]]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # One core stays with this process, which writes the batches.
    processes = min(workers or cores, cores - 1, 8, len(todo) // CHUNK + 1)
    if len(todo) < POOL_THRESHOLD or cores < POOL_MIN_CORES or processes < 2:
        for item in todo:
            try:
                yield item, read(item.path)
            except Vanished:
                yield item, None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_interrupts)
    try:
        for chunk, results in zip(chunks, pool.map(read_many, [[t.path for t in c] for c in chunks])):
            yield from zip(chunk, results)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_interrupts() -> None:
    """Ctrl-C is the coordinator's to handle: a reading process just stops with the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def update_in(
    con: duckdb.DuckDBPyConnection,
    todo: list[_Todo],
    on_problem: Callable[[str, str], None] | None = None,
) -> int:
    """Read the tags of `todo` and write them inside the caller's transaction; for a handful of
    files (what `watch` hands over), whose reading takes milliseconds, where a write batch of
    their own would cost another attach, commit and checkpoint before the next change is taken."""
    batch = []
    for item, result in _read_all(todo, None):
        if result is None:
            continue
        batch.append((item, result))
        if result[1] is not None and on_problem is not None:
            on_problem(os.fsdecode(item.path), result[1])
    return _store_batch(con, batch) if batch else 0


def _write(db: Database, batch: list[tuple[_Todo, tuple[Pairs, str | None]]]) -> int:
    with db.write() as con:
        return _store_batch(con, batch)


def _store_batch(con: duckdb.DuckDBPyConnection, batch: list[tuple[_Todo, tuple[Pairs, str | None]]]) -> int:
    import pyarrow as pa

    from .columns import column

    file_ids: list[int] = []
    keys: list[str] = []
    ordinals: list[int] = []
    values: list[str] = []
    for item, (pairs, _) in batch:
        seen: dict[str, int] = {}
        for key, value in pairs:
            ordinal = seen.get(key, 0)
            seen[key] = ordinal + 1
            file_ids.append(item.file_id)
            keys.append(key)
            ordinals.append(ordinal)
            values.append(value)
    tags_arrow = pa.table({
        "id": column(file_ids, pa.int64()),
        "key": column(keys, pa.string()),
        "ordinal": column(ordinals, pa.int32()),
        "value": column(values, pa.string()),
    })
    read_arrow = pa.table({
        "file_id": column([item.file_id for item, _ in batch], pa.int64()),
        "changed_at": column([item.changed_at for item, _ in batch], pa.timestamp("us")),
        "error": column([error for _, (_, error) in batch], pa.string()),
    })
    con.register("tags_read_arrow", read_arrow)
    try:
        # Only files that are still as the scan left them (another scan may have changed one).
        written, _ = store(
            con, tags_arrow,
            """
            SELECT b.file_id AS id, b.file_id, b.error,
                   r.path || '/' || CASE WHEN f.dir = '' THEN f.name ELSE f.dir || '/' || f.name END AS path,
                   f.root_id
            FROM tags_read_arrow b
            JOIN files f ON f.file_id = b.file_id AND f.changed_at = b.changed_at AND f.status = 'present'
            JOIN roots r ON r.root_id = f.root_id
            """,
            [], utc_now(),
        )
    finally:
        con.unregister("tags_read_arrow")
    return written


def store(
    con: duckdb.DuckDBPyConnection, tags_arrow: Any, batch_sql: str, params: list[Any], read_at: datetime
) -> tuple[int, list[tuple[int, str]]]:
    """Write the tags of a batch of files, inside the caller's transaction.

    `batch_sql` selects the files to write, as (id, file_id, error, path, root_id): `id` is
    the key of the rows of `tags_arrow` (id, key, ordinal, value) that are the file's tags.
    Their `file_tags` rows are replaced, the library's columns set to each key's first value,
    `tags_read_at` to `read_at` and `tags_error` (and their tag problem in scan_problems) to
    `error`. Returns how many files were written, and (id, error) of those with a problem."""
    columns = list(TEXT_COLUMNS) + list(NUMBER_COLUMNS)
    con.register("tags_arrow", tags_arrow)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE tag_batch AS {batch_sql}", params)
        # Statements that would write nothing are left out (no tags at all, no problem): a
        # few milliseconds each of the watcher's way from a closed file to `library`.
        batch = con.execute("SELECT id, error FROM tag_batch ORDER BY id").fetchall()
        written = len(batch)
        problems = [(id_, error) for id_, error in batch if error is not None]
        con.execute("DELETE FROM file_tags WHERE file_id IN (SELECT file_id FROM tag_batch)")
        if len(tags_arrow):
            con.execute(
                "INSERT INTO file_tags SELECT b.file_id, t.key, t.ordinal, t.value "
                "FROM tags_arrow t JOIN tag_batch b USING (id)"
            )
        con.execute(
            f"""
            UPDATE files SET tags_read_at = ?, tags_error = u.error,
                   {", ".join(f"{c} = u.{c}" for c in columns)}
            FROM (
                SELECT b.file_id, b.error, {", ".join(f"s.{c}" for c in columns)}
                FROM tag_batch b
                LEFT JOIN ({first_values("tags_arrow")}) s USING (id)
            ) u
            WHERE files.file_id = u.file_id
            """,
            [read_at],
        )
        con.execute(
            "DELETE FROM scan_problems WHERE starts_with(reason, 'tags: ') "
            "AND (root_id, path) IN (SELECT (root_id, path) FROM tag_batch)"
        )
        if problems:
            con.execute(
                "INSERT INTO scan_problems SELECT root_id, path, error, ? FROM tag_batch WHERE error IS NOT NULL",
                [read_at],
            )
        con.execute("DROP TABLE temp.tag_batch")
    finally:
        con.unregister("tags_arrow")
    return written, problems


def first_values(tags_table: str) -> str:
    """SELECT of (id, the library's tag columns) from a table of (id, key, ordinal, value):
    each key's first value, track and disc numbers as integers or NULL."""
    first = ",\n".join(
        f"any_value(value) FILTER (WHERE key = '{key}' AND ordinal = 0) AS {key}" for key in TEXT_COLUMNS
    ) + "".join(
        f",\nTRY_CAST(regexp_extract(any_value(value) FILTER (WHERE key = '{key}' AND ordinal = 0), "
        f"'{NUMBER_PATTERN}', 1) AS INTEGER) AS {column}"
        for column, key in NUMBER_COLUMNS.items()
    )
    return f"SELECT id, {first} FROM {tags_table} GROUP BY id"


def record_problems_sql(scope: str) -> str:
    """INSERT of the tag problems of present files in `scope` (a condition on `f`) whose tags
    are current, into scan_problems: what a scan's replacement of its problems keeps."""
    return f"""
        INSERT INTO scan_problems
        SELECT f.root_id,
               r.path || '/' || CASE WHEN f.dir = '' THEN f.name ELSE f.dir || '/' || f.name END,
               f.tags_error, f.tags_read_at
        FROM files f JOIN roots r USING (root_id)
        WHERE f.status = 'present' AND f.tags_error IS NOT NULL AND f.tags_read_at >= f.changed_at
          AND {scope}
    """

