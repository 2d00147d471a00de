"""`muscat report OUT.html`: one self-contained page describing the dataset.

The numbers come from the catalogue's views in one read (histogram counts are computed by
DuckDB, so a large library never comes into memory); the figures are drawn afterwards by
matplotlib (catalog/plots.py) as inline SVG, with the catalogue released. The page has no
script and loads nothing from anywhere: it opens offline, and can be mailed or archived as it is.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MuscatError
from .plots import SMALL, FeatureInfo, axis_limits, bars, binned_histogram, page, splits_available, svg

if TYPE_CHECKING:
    import duckdb

    from .config import Settings
    from .database import Database

BINS = 30
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}  # Essentia spells some keys flat
MAX_FAILURE_ROWS = 30


class ReportError(MuscatError):
    """An output file or catalogue the report cannot be made for."""


@dataclass
class Histogram:
    info: FeatureInfo
    count: int
    mean: float
    edges: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    categories: dict[str, int] | None = None  # categorical features: value -> files


@dataclass
class ReportData:
    """Everything the page shows, read in one go."""

    catalogue: str
    generated: str
    overview: list[tuple[str, str]]
    formats: list[tuple[Any, ...]]  # codec, files, hours
    sample_rates: list[tuple[Any, ...]]  # rate, files
    channels: list[tuple[Any, ...]]
    failures: list[tuple[Any, ...]]  # extractor, reason, files
    keys: dict[str, dict[str, int]]  # scale -> tonic -> files
    chroma: tuple[list[str], list[float], list[float]] | None  # labels, means, standard deviations
    splits: list[tuple[Any, ...]] | None  # name, split, files, hours; None: no splits view
    histograms: list[Histogram]


def _histograms(con: duckdb.DuckDBPyConnection) -> list[Histogram]:
    """Counts per bin of every scalar feature, and counts per value of the categorical ones,
    in three queries over `features` (not three per feature: each reads the views anew)."""
    outputs = con.execute(
        "SELECT feature, extractor, kind, unit, min, max, description FROM extractor_outputs "
        "WHERE kind IN ('scalar', 'categorical') AND feature NOT IN ('key', 'scale') "
        "ORDER BY extractor <> 'probe', extractor, position"
    ).fetchall()
    numbers = {(e, f): rest for e, f, *rest in con.execute(
        "SELECT extractor, feature, count(value), avg(value), min(value), max(value) FROM features "
        "WHERE value IS NOT NULL AND isfinite(value) GROUP BY ALL").fetchall()}
    texts: dict[tuple[str, str], dict[str, int]] = {}
    for e, f, text, n in con.execute(
            "SELECT extractor, feature, text, count(*) FROM features WHERE text IS NOT NULL "
            "GROUP BY ALL ORDER BY text").fetchall():
        texts.setdefault((e, f), {})[text] = n
    found = []
    for feature, extractor, kind, unit, low, high, description in outputs:
        info = FeatureInfo(feature, feature, extractor, kind, unit, low, high, description)
        if kind == "categorical":
            if (extractor, feature) in texts:
                values = texts[(extractor, feature)]
                found.append(Histogram(info, sum(values.values()), 0.0, categories=values))
        elif numbers.get((extractor, feature), [0])[0]:
            count, mean, smallest, largest = numbers[(extractor, feature)]
            lo, hi = axis_limits(smallest, largest, info)
            found.append(Histogram(info, count, mean, [lo + i * (hi - lo) / BINS for i in range(BINS + 1)],
                                   [0] * BINS))
    numeric = [h for h in found if h.categories is None]
    by_feature = {(h.info.extractor, h.info.feature): h for h in numeric}
    if numeric:
        for extractor, feature, index, n in con.execute(
            "SELECT f.extractor, f.feature, least(greatest(floor((f.value - b.lo) / b.width)::INTEGER, 0), ? - 1), "
            "count(*) FROM features f JOIN (SELECT unnest(?) AS extractor, unnest(?) AS feature, "
            "unnest(?::DOUBLE[]) AS lo, unnest(?::DOUBLE[]) AS width) b USING (extractor, feature) "
            "WHERE f.value IS NOT NULL AND isfinite(f.value) GROUP BY ALL",
            [BINS, [h.info.extractor for h in numeric], [h.info.feature for h in numeric],
             [h.edges[0] for h in numeric], [(h.edges[-1] - h.edges[0]) / BINS for h in numeric]],
        ).fetchall():
            by_feature[(extractor, feature)].counts[index] += n
    return found


def gather(con: duckdb.DuckDBPyConnection, catalogue: str) -> ReportData:
    """Read what the page shows from an open catalogue connection."""
    from .clock import utc_now

    present, missing, audio, seconds, size = con.execute(
        "SELECT count(*) FILTER (WHERE status = 'present'), count(*) FILTER (WHERE status = 'missing'), "
        "(SELECT count(DISTINCT audio_id) FROM library), (SELECT sum(duration_s) FROM library), "
        "(SELECT sum(size) FROM library) FROM files"
    ).fetchone()
    unique_seconds = con.execute(
        "SELECT sum(d) FROM (SELECT any_value(duration_s) AS d FROM library WHERE audio_id IS NOT NULL "
        "GROUP BY audio_id)").fetchone()[0]
    roots = con.execute("SELECT count(*) FROM roots").fetchone()[0]
    unprobed = con.execute("SELECT count(*) FROM library WHERE duration_s IS NULL").fetchone()[0]
    overview = [
        ("files", f"{present:,} present, {missing:,} missing"),
        ("audio", f"{audio:,} distinct (copies and retagged files share one)"),
        ("duration", f"{_duration((seconds or 0) / 3600)} in all files, {_duration((unique_seconds or 0) / 3600)} "
                     "of distinct audio"),
        ("size", f"{(size or 0) / 2**30:,.2f} GiB"),
        ("roots", f"{roots:,}"),
        ("not decoded", f"{unprobed:,} files (not probed yet, or failed)"),
    ]
    formats = con.execute(
        "SELECT coalesce(codec, '(not probed)'), count(*), sum(duration_s) / 3600 FROM library "
        "GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    sample_rates = con.execute(
        "SELECT sample_rate, count(*) FROM library WHERE sample_rate IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall()
    channels = con.execute(
        "SELECT channels, count(*) FROM library WHERE channels IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall()
    failures = con.execute(
        # the first line of the error is its reason; details after it differ file by file
        "SELECT extractor, split_part(error, chr(10), 1) AS reason, count(*) FROM failed "
        "GROUP BY ALL ORDER BY 3 DESC, 1, 2").fetchall()
    keys: dict[str, dict[str, int]] = {}
    for tonic, scale, n in con.execute(
        "SELECT k.text, s.text, count(*) FROM features k "
        "JOIN features s ON s.path = k.path AND s.extractor = 'key' AND s.feature = 'scale' "
        "WHERE k.extractor = 'key' AND k.feature = 'key' AND k.text IS NOT NULL GROUP BY ALL"
    ).fetchall():
        tonic = FLATS.get(tonic, tonic)
        keys.setdefault(scale or "?", {}).setdefault(tonic, 0)
        keys[scale or "?"][tonic] += n
    chroma = None
    labels_row = con.execute(
        "SELECT labels FROM extractor_outputs WHERE extractor = 'hpcp' AND feature = 'chroma'").fetchone()
    if labels_row:
        stats = con.execute(
            "SELECT list(mean ORDER BY i), list(spread ORDER BY i), max(n) FROM ("
            "  SELECT i, avg(x) AS mean, stddev_pop(x) AS spread, count(*) AS n FROM ("
            "    SELECT unnest(vector) AS x, unnest(generate_series(1, len(vector))) AS i FROM feature_vectors"
            "    WHERE extractor = 'hpcp' AND feature = 'chroma') GROUP BY i)").fetchone()
        if stats and stats[2]:
            chroma = (list(labels_row[0] or PITCH_CLASSES), [float(x) for x in stats[0]],
                      [float(x or 0) for x in stats[1]])
    splits = None
    if splits_available(con):
        splits = con.execute(
            "SELECT s.name, s.split, count(*), sum(l.duration_s) / 3600 FROM splits s "
            "JOIN library l USING (path) GROUP BY ALL ORDER BY 1, 2").fetchall()
    return ReportData(catalogue, utc_now().strftime("%Y-%m-%d %H:%M UTC"), overview, formats, sample_rates,
                      channels, failures, keys, chroma, splits, _histograms(con))


def _duration(hours: float | None) -> str:
    if not hours:
        return "0"
    return f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:,.1f} min"


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="n">{value:,.2f}</td>'
        if isinstance(value, int):
            return f'<td class="n">{value:,}</td>'
        return f"<td>{html.escape('' if value is None else str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _figure(kind: str, name: str, figure: Any, caption: str) -> str:
    return (f'<figure class="{kind}" data-name="{html.escape(name)}">{svg(figure, caption)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render(data: ReportData) -> str:
    """The page for `data`."""
    small = SMALL
    parts = [f"<h1>muscat report</h1>\n<p>{html.escape(data.catalogue)} &middot; {html.escape(data.generated)}</p>",
             "<h2>Dataset</h2>", _table(["", ""], data.overview)]
    parts.append("<h2>Formats and sample rates</h2>")
    parts.append(_table(["codec", "files", "duration"], [(r[0], r[1], _duration(r[2])) for r in data.formats]))
    formats_and_rates = []
    if data.formats:
        formats_and_rates.append(_figure("overview", "formats", bars(
            [r[0] for r in data.formats], {"": [r[1] for r in data.formats]}, "codec", "files",
            "Files per codec", small), "files per codec"))
    if data.sample_rates:
        formats_and_rates.append(_figure("overview", "sample_rates", bars(
            [f"{r[0] / 1000:g}" for r in data.sample_rates], {"": [r[1] for r in data.sample_rates]},
            "sample rate (kHz)", "files", "Files per sample rate", small), "files per sample rate (kHz)"))
    if data.channels:
        formats_and_rates.append(_figure("overview", "channels", bars(
            [str(r[0]) for r in data.channels], {"": [r[1] for r in data.channels]}, "channels (count)", "files",
            "Files per channel count", small), "files per number of channels"))
    parts.append(f'<div class="grid">{"".join(formats_and_rates)}</div>')
    parts.append("<h2>Failures</h2>")
    if data.failures:
        shown = data.failures[:MAX_FAILURE_ROWS]
        parts.append(_table(["extractor", "reason", "files"], [tuple(r) for r in shown]))
        if len(data.failures) > len(shown):
            parts.append(f"<p>{len(data.failures) - len(shown):,} more reasons: "
                         "<code>muscat sql \"FROM failed\"</code></p>")
    else:
        parts.append("<p>No failures.</p>")
    parts.append("<h2>Keys and chroma</h2>")
    harmony = []
    if data.keys:
        scales = sorted(data.keys, key=lambda s: (s != "major", s))
        harmony.append(_figure("keys", "key_scale", bars(
            list(PITCH_CLASSES), {s: [data.keys[s].get(p, 0) for p in PITCH_CLASSES] for s in scales},
            "key (tonic; bars stacked by scale)", "files", "Key and scale (key extractor)"),
            "files per key, major and minor stacked"))
    if data.chroma:
        labels, means, spread = data.chroma
        harmony.append(_figure("chroma", "chroma", bars(
            labels, {"": means}, "pitch class", "mean share (no unit; sums to 1)",
            "Mean chroma profile (hpcp), with its standard deviation", errors=spread),
            "mean chroma over all files, C first; the whiskers are one standard deviation"))
    parts.append(f'<div class="grid">{"".join(harmony)}</div>' if harmony else "<p>No key or chroma results yet.</p>")
    if data.splits is not None:
        parts.append("<h2>Splits</h2>")
        parts.append(_table(["name", "split", "files", "duration"],
                            [(r[0], r[1], r[2], _duration(r[3])) for r in data.splits]))
        names = sorted({r[0] for r in data.splits})
        splits = sorted({r[1] for r in data.splits},
                        key=lambda s: (["train", "validation", "test"] + [s]).index(s))
        files = {(r[0], r[1]): r[2] for r in data.splits}
        if names:
            parts.append(f'<div class="grid">{_figure("splits", "splits", bars(names, {s: [files.get((n, s), 0) for n in names] for s in splits}, "split name", "files", "Files per split"), "files per split, stacked, for each named split")}</div>')
    parts.append("<h2>Features</h2>")
    parts.append("<p>One value per present file (copies of one audio each count); the shaded band is the "
                 "normal range the extractor declares.</p>")
    extractor = None
    grid: list[str] = []
    for item in data.histograms:
        if item.info.extractor != extractor:
            if grid:
                parts.append(f'<div class="grid">{"".join(grid)}</div>')
                grid = []
            extractor = item.info.extractor
            parts.append(f"<h3>{html.escape(extractor)}</h3>")
        info = item.info
        if item.categories is not None:
            figure = bars(list(item.categories), {"": list(item.categories.values())}, f"{info.name} (category)",
                          "files", info.name, small)
            caption = f"{info.name}: {info.description} ({item.count:,} files)"
        else:
            figure = binned_histogram(info, item.edges, item.counts, size=small, title=info.name, legend=False)
            normal = "" if info.low is None else f"; normal {info.low:g} to {info.high:g} {info.unit}".rstrip()
            caption = (f"{info.name} ({info.unit or 'no unit'}): {info.description}; {item.count:,} files, "
                       f"mean {item.mean:.4g}{normal}")
        grid.append(_figure("histogram", info.name, figure, caption))
    if grid:
        parts.append(f'<div class="grid">{"".join(grid)}</div>')
    if not data.histograms:
        parts.append("<p>No features extracted yet (muscat extract).</p>")
    return page("muscat report", "\n".join(parts))


def report(db: Database, settings: Settings, out: str | Path) -> ReportData:
    """Write the page to `out` (an .html file); returns what it shows."""
    from .artifacts import write_atomically
    from .database import require_catalogue
    from .extractor_state import sync_extractors

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{out}: the report is an HTML page: name it OUT.html")
    if not out.parent.is_dir():
        raise ReportError(f"{out}: the folder {out.parent} does not exist")
    require_catalogue(db)
    sync_extractors(db, settings)
    with db.read() as con:
        data = gather(con, str(db.path))
    write_atomically(out, render(data).encode())
    return data
