"""Pictures of features: `muscat plot`, and the figures of `muscat report`.

Every figure is drawn by matplotlib (its object API, no pyplot: no GUI backend, nothing global),
with the feature's unit on its axis and its declared normal range (the extractor's declaration,
`feature_units`) shaded. Values are one per present file, as in `track_features`; a vector's
element is named as `feature_stats` names it (`chroma[C]`, `mfcc_mean[3]`).
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import MuscatError

if TYPE_CHECKING:
    import duckdb
    from matplotlib.figure import Figure

    from .config import Settings
    from .database import Database

FORMATS = (".png", ".svg", ".html")
GROUPINGS = ("split", "genre")
MAX_GROUPS = 8  # more genres than this: the rest are one group, "other"
RANGE_COLOUR = "#2ca02c"


class PlotError(MuscatError):
    """A feature, output file or grouping that cannot be plotted."""


@dataclass(frozen=True)
class FeatureInfo:
    """A plottable feature: a scalar, a categorical feature, or one element of a vector."""

    name: str  # as asked: bpm, chroma[C]
    feature: str  # as stored: chroma
    extractor: str
    kind: str  # scalar, categorical, or element
    unit: str
    low: float | None
    high: float | None
    description: str
    element: int | None = None  # 1-based, for vector elements

    @property
    def label(self) -> str:
        """The axis label: the name and its unit."""
        return f"{self.name} ({self.unit or 'no unit'})"


def _plain(text: str) -> str:
    # Matplotlib reads $...$ as mathematics: feature descriptions and tags are plain text.
    return text.replace("$", r"\$")


def feature_info(con: duckdb.DuckDBPyConnection, name: str) -> FeatureInfo:
    """What `name` is, from the extractors' declarations; an unknown name is a PlotError that
    suggests near names."""
    match = re.fullmatch(r"(\w+)\[([^\]]+)\]", name)
    feature = match.group(1) if match else name
    row = con.execute(
        "SELECT extractor, kind, unit, min, max, description, size, labels FROM extractor_outputs "
        "WHERE feature = ? ORDER BY extractor <> 'probe', extractor LIMIT 1",
        [feature],
    ).fetchone()
    if row is None:
        import difflib

        known = [f for (f,) in con.execute("SELECT DISTINCT feature FROM extractor_outputs").fetchall()]
        near = difflib.get_close_matches(feature, known, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else " (see muscat sql \"FROM feature_units\")"
        raise PlotError(f"{name}: no such feature{hint}")
    extractor, kind, unit, low, high, description, size, labels = row
    if kind == "vector":
        if not match or not size:
            example = f"{feature}[{labels[0] if labels else 0}]"
            raise PlotError(f"{name}: a vector of {size or 'varying length'}; plot one element, e.g. {example!r}"
                            if size else f"{name}: a vector of varying length cannot be plotted")
        key = match.group(2)
        if labels and key in labels:
            element = list(labels).index(key) + 1
        elif key.isdigit() and int(key) < size:
            element = int(key) + 1
        else:
            names = ", ".join(labels) if labels else f"0 to {size - 1}"
            raise PlotError(f"{name}: {feature} has no element {key!r} (elements: {names})")
        return FeatureInfo(name, feature, extractor, "element", unit, low, high, description, element)
    if match:
        raise PlotError(f"{name}: {feature} is not a vector")
    return FeatureInfo(name, feature, extractor, kind, unit, low, high, description)


def splits_available(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `muscat split` has made a split here: the `splits` view exists (catalogues from
    before migration 4 have none) and holds a row."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = 'splits' AND database_name = current_database()"
    ).fetchone()[0]
    return bool(exists) and con.execute("SELECT EXISTS (SELECT 1 FROM splits)").fetchone()[0]


def split_name(con: duckdb.DuckDBPyConnection, asked: str | None) -> str:
    """The split to group by: the one asked for, else the only one, else the one named 'default'."""
    if not splits_available(con):
        raise PlotError("--by split: this catalogue has no splits yet (make one with muscat split)")
    names = [n for (n,) in con.execute("SELECT DISTINCT name FROM splits ORDER BY name").fetchall()]
    if asked is not None:
        if asked not in names:
            raise PlotError(f"--split-name {asked!r}: no such split (there are: {', '.join(names) or 'none'})")
        return asked
    if len(names) == 1:
        return names[0]
    if "default" in names:
        return "default"
    raise PlotError(f"--by split: there are several splits ({', '.join(names) or 'none'}): choose one with "
                    "--split-name")


def values(con: duckdb.DuckDBPyConnection, features: Sequence[FeatureInfo], by: str | None = None,
           split: str | None = None) -> list[tuple[Any, ...]]:
    """Rows (group, value, [value2]) for each present file that has every feature; group is
    NULL without `by`."""
    columns, joins, params = [], [], []
    for i, info in enumerate(features):
        if info.kind == "element":
            joins.append(f"JOIN feature_vectors f{i} ON f{i}.path = l.path AND f{i}.extractor = ? "
                         f"AND f{i}.feature = ?")
            columns.append(f"f{i}.vector[{info.element}]::DOUBLE")
        else:
            joins.append(f"JOIN features f{i} ON f{i}.path = l.path AND f{i}.extractor = ? AND f{i}.feature = ?")
            columns.append(f"f{i}.text" if info.kind == "categorical" else f"f{i}.value")
        params += [info.extractor, info.feature]
    if by == "genre":
        group = "l.genre"
    elif by == "split":
        group = "s.split"
        joins.append("LEFT JOIN splits s ON s.path = l.path AND s.name = ?")
        params.append(split)
    else:
        group = "NULL"
    # NaN and infinities have no place on an axis
    present = " AND ".join(f"{c} IS NOT NULL" + ("" if info.kind == "categorical" else f" AND isfinite({c})")
                           for c, info in zip(columns, features))
    return con.execute(
        f"SELECT {group}, {', '.join(columns)} FROM library l {' '.join(joins)} WHERE {present} ORDER BY l.path",
        params,
    ).fetchall()


def _groups(rows: Sequence[tuple[Any, ...]], by: str | None) -> dict[str, list[tuple[Any, ...]]]:
    """Rows by group, biggest first; beyond MAX_GROUPS the smallest become 'other'."""
    if by is None:
        return {"": [row[1:] for row in rows]}
    missing = "(no split)" if by == "split" else "(no genre)"
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(missing if row[0] is None else str(row[0]), []).append(row[1:])
    order = sorted(grouped, key=lambda g: (g == missing, -len(grouped[g]), g))
    if by == "split":  # train, validation, test: in the order users know them
        known = ["train", "validation", "test"]
        order = sorted(order, key=lambda g: (g == missing, known.index(g) if g in known else 3, g))
    if len(order) > MAX_GROUPS:
        kept, rest = order[: MAX_GROUPS - 1], order[MAX_GROUPS - 1:]
        result = {g: grouped[g] for g in kept}
        result["other"] = [row for g in rest for row in grouped[g]]
        return result
    return {g: grouped[g] for g in order}


SMALL = (4.8, 3.0)  # the report's figures


def _figure(width: float = 6.4, height: float = 4.0) -> Figure:
    from matplotlib.figure import Figure

    if (width, height) == SMALL:
        # Fixed margins: the report draws ~70 of these, and constrained layout doubles the
        # time of each (0.25 -> 0.5 s here); their labels are short enough to fit.
        figure = Figure(figsize=(width, height))
        figure.subplots_adjust(left=0.14, right=0.97, bottom=0.17, top=0.9)
        return figure
    return Figure(figsize=(width, height), layout="constrained")


def _range_text(info: FeatureInfo) -> str:
    unit = f" {info.unit}" if info.unit else ""
    return f"normal {info.name}: {info.low:g} to {info.high:g}{unit} (declared)"


def axis_limits(data_low: float, data_high: float, info: FeatureInfo) -> tuple[float, float]:
    """The axis covers the data, and the declared range too unless that would squash the data
    (a range 5 times wider than the values): then the shading shows the part in view."""
    span = data_high - data_low
    if info.low is None or info.high is None:
        low, high = data_low, data_high
    else:
        low, high = min(data_low, info.low), max(data_high, info.high)
        if span > 0 and high - low > 5 * span:
            low, high = data_low, data_high
    pad = (high - low) * 0.04 or max(abs(high) * 0.05, 0.5)
    return low - pad, high + pad


def _shade(axis: Any, info: FeatureInfo, vertical: bool) -> None:
    if info.low is None or info.high is None:
        return
    span = axis.axvspan if vertical else axis.axhspan
    span(info.low, info.high, color=RANGE_COLOUR, alpha=0.12, lw=0, label=_range_text(info), zorder=0)


def histogram(info: FeatureInfo, groups: dict[str, list[tuple[Any, ...]]], size: tuple[float, float] = (6.4, 4.0),
              title: str | None = None) -> Figure:
    """A histogram of a numeric feature (stacked by group), or bars of a categorical one."""
    import numpy as np

    if info.kind == "categorical":
        categories = sorted({row[0] for rows in groups.values() for row in rows})
        heights = {g: [sum(1 for row in rows if row[0] == c) for c in categories] for g, rows in groups.items()}
        figure = bars(categories, heights, f"{info.name} (category)", "files",
                      title or f"{info.name}: {info.description}", size)
        return figure
    data = [np.array([row[0] for row in rows], float) for rows in groups.values()]
    every = np.concatenate(data)
    low, high = axis_limits(float(every.min()), float(every.max()), info)
    edges = np.histogram_bin_edges(every, bins="auto", range=(low, high))
    if len(edges) > 41:
        edges = np.linspace(low, high, 41)
    labelled = len(groups) > 1 or next(iter(groups), "") != ""
    figure, axis = _histogram_axes(info, size, title)
    axis.hist(data, bins=edges, stacked=True, label=[_plain(g) for g in groups] if labelled else None)
    axis.set_xlim(low, high)
    if labelled or info.low is not None:
        axis.legend(fontsize="small")
    return figure


def binned_histogram(info: FeatureInfo, edges: Sequence[float], counts: Sequence[int],
                     size: tuple[float, float] = (6.4, 4.0), title: str | None = None, legend: bool = True) -> Figure:
    """A histogram from counts per bin computed elsewhere (in DuckDB, for the report: a library
    of a million files never comes into memory); matplotlib draws it from them, weighting each
    bin's centre by its count."""
    import numpy as np

    edges = np.asarray(edges, float)
    figure, axis = _histogram_axes(info, size, title)
    axis.hist((edges[:-1] + edges[1:]) / 2, bins=edges, weights=np.asarray(counts, float))
    axis.set_xlim(edges[0], edges[-1])
    if legend and info.low is not None:
        axis.legend(fontsize="small")
    return figure


def _histogram_axes(info: FeatureInfo, size: tuple[float, float], title: str | None) -> tuple[Figure, Any]:
    figure = _figure(*size)
    axis = figure.add_subplot()
    _shade(axis, info, vertical=True)
    axis.set_xlabel(_plain(info.label))
    axis.set_ylabel("files")
    axis.yaxis.get_major_locator().set_params(integer=True)
    if size == SMALL:  # long tick labels (192000) would run into each other
        axis.xaxis.get_major_locator().set_params(nbins=5)
    axis.set_title(_plain(title or f"{info.name}: {info.description}"), fontsize="medium", wrap=True)
    return figure, axis


def scatter(x: FeatureInfo, y: FeatureInfo, groups: dict[str, list[tuple[Any, ...]]]) -> Figure:
    """A scatter of two numeric features, coloured by group, both declared ranges shaded."""
    import numpy as np

    figure = _figure()
    axis = figure.add_subplot()
    labelled = len(groups) > 1 or next(iter(groups), "") != ""
    for group, rows in groups.items():
        points = np.array(rows, float)
        axis.scatter(points[:, 0], points[:, 1], s=14, alpha=0.8, label=_plain(group) if labelled else None)
    every = np.array([row for rows in groups.values() for row in rows], float)
    axis.set_xlim(*axis_limits(float(every[:, 0].min()), float(every[:, 0].max()), x))
    axis.set_ylim(*axis_limits(float(every[:, 1].min()), float(every[:, 1].max()), y))
    if None not in (x.low, x.high, y.low, y.high):  # where both are normal: one rectangle
        from matplotlib.patches import Rectangle

        axis.add_patch(Rectangle((x.low, y.low), x.high - x.low, y.high - y.low, color=RANGE_COLOUR, alpha=0.12,
                                 lw=0, zorder=0, label=_plain(f"{_range_text(x)}; {_range_text(y)}")))
    else:
        _shade(axis, x, vertical=True)
        _shade(axis, y, vertical=False)
    axis.set_xlabel(_plain(x.label))
    axis.set_ylabel(_plain(y.label))
    axis.set_title(_plain(f"{y.name} against {x.name} ({len(every):,} files)"), fontsize="medium")
    axis.legend(fontsize="small")
    return figure


def bars(labels: Sequence[str], heights: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str,
         size: tuple[float, float] = (6.4, 3.6), errors: Sequence[float] | None = None) -> Figure:
    """Bars per label, stacked by series (the key/scale distribution, mean profiles, splits)."""
    import numpy as np

    figure = _figure(*size)
    axis = figure.add_subplot()
    bottom = np.zeros(len(labels))
    for series, values_ in heights.items():
        heights_ = np.array(values_, float)
        # whiskers below a bar stop at 0: the shares and counts drawn here are never negative
        whiskers = [np.minimum(errors, heights_), errors] if errors is not None and len(heights) == 1 else None
        axis.bar([_plain(str(label)) for label in labels], heights_, bottom=bottom, label=_plain(series) or None,
                 yerr=whiskers, capsize=2)
        bottom += heights_
    axis.set_xlabel(_plain(xlabel))
    axis.set_ylabel(_plain(ylabel))
    axis.set_title(_plain(title), fontsize="medium")
    if len(heights) > 1:
        axis.legend(fontsize="small")
    if len(labels) > 12:
        axis.tick_params(axis="x", labelrotation=60, labelsize="small")
    return figure


def _svg_document(figure: Figure, description: str = "") -> str:
    # Text kept as text (not paths): smaller, searchable, and the labels stay readable as such.
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "muscat"}):
        figure.savefig(out, format="svg", metadata={"Description": description or None, "Date": None})
    return out.getvalue()


def svg(figure: Figure, description: str = "") -> str:
    """The figure as an inline <svg> element, for an HTML page."""
    text = _svg_document(figure, description)
    return text[text.index("<svg"):]


def page(title: str, body: str) -> str:
    """A self-contained HTML page: no script, no stylesheet, no font from anywhere else."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 75rem; padding: 0 1rem;
        color: #222; background: #fff; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 0.5rem 0; }}
td, th {{ padding: 0.2rem 0.7rem; border-bottom: 1px solid #eee; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr)); gap: 1rem; }}
figure {{ margin: 0; }} figure svg {{ width: 100%; height: auto; }}
figcaption {{ font-size: 0.85rem; color: #555; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def write(figure: Figure, out: Path, title: str, description: str) -> None:
    """Save as PNG, SVG or a self-contained HTML page, by the file's suffix, atomically."""
    from .artifacts import write_atomically

    suffix = out.suffix.lower()
    if suffix == ".html":
        body = f"<h1>{html.escape(title)}</h1>\n<figure>{svg(figure, description)}</figure>"
        data = page(title, body).encode()
    elif suffix == ".svg":
        data = _svg_document(figure, description).encode()
    else:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=150, metadata={"Title": title, "Description": description})
        data = buffer.getvalue()
    write_atomically(out, data)


@dataclass
class PlotReport:
    """What `plot` drew."""

    out: str
    files: int  # files with a value (with both values, for a scatter)
    groups: dict[str, int]  # files per group; {"": n} ungrouped


def plot(db: Database, settings: Settings, features: Sequence[str], out: str | Path, by: str | None = None,
         split: str | None = None) -> PlotReport:
    """A histogram of one feature, or a scatter of two, into `out` (.png, .svg or .html)."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise PlotError(f"--out {out}: the file must end in {', '.join(FORMATS)}")
    if not out.parent.is_dir():
        raise PlotError(f"--out {out}: the folder {out.parent} does not exist")
    if not 1 <= len(features) <= 2:
        raise PlotError("name one feature (a histogram) or two (a scatter)")
    if by is not None and by not in GROUPINGS:
        raise PlotError(f"--by {by!r}: choose one of {', '.join(GROUPINGS)}")
    from .database import require_catalogue
    from .extractor_state import sync_extractors

    require_catalogue(db)
    sync_extractors(db, settings)
    with db.read() as con:
        infos = [feature_info(con, name) for name in features]
        if len(infos) == 2:
            for info in infos:
                if info.kind == "categorical":
                    raise PlotError(f"{info.name}: a scatter needs numbers, and {info.name} is categorical")
        chosen_split = split_name(con, split) if by == "split" else None
        rows = values(con, infos, by, chosen_split)
    if not rows:
        names = " and ".join(features)
        raise PlotError(f"no file has a value for {names} yet (run muscat extract --only "
                        f"{','.join(dict.fromkeys(i.extractor for i in infos))})")
    groups = _groups(rows, by)
    if len(infos) == 1:
        figure = histogram(infos[0], groups)
        description = f"x: {infos[0].label if infos[0].kind != 'categorical' else infos[0].name}; y: files"
    else:
        figure = scatter(infos[0], infos[1], groups)
        description = f"x: {infos[0].label}; y: {infos[1].label}"
    write(figure, out, " / ".join(i.name for i in infos), description)
    return PlotReport(str(out), len(rows), {g: len(r) for g, r in groups.items()})
