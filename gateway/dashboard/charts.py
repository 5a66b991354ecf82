"""Server-side SVG line charts for the dashboard: no script, no stylesheet, nothing fetched.

Charts are built with ``xml.etree.ElementTree``, so every label (alias names come from users)
is escaped by construction, and styled with presentation attributes only, so the page's
Content-Security-Policy can forbid inline styles and scripts. Output is deterministic: the
same data gives the same bytes.

``line_chart`` is the general drawing; ``score_chart`` and ``traffic_chart`` turn the
dashboard's wire models into it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.evaluation.protocol import AliasDriftSummary, ScoreSeries, TrafficRow

PALETTE = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip
_INK = "#1f2933"
_MUTED = "#6b7785"
_GRID = "#e4e8ee"
_BAND = "#59a14f"
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 44, 14, 34, 26
_MAX_LEGEND_CHARS = 32


def served_label(alias: str, version: str | None) -> str:
    """``extract@v2`` when the version's name says it all, ``chat → support@v3`` otherwise."""
    if not version or version == alias or version.startswith(f"{alias}@"):
        return version or alias
    return f"{alias} → {version}"


@dataclass(frozen=True)
class Line:
    """One series: ``points`` are (x, y), x increasing."""

    label: str
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Band:
    """A shaded horizontal band from ``low`` to ``high`` (e.g. baseline mean ± sigma)."""

    low: float
    high: float
    label: str


def nice_ticks(low: float, high: float, *, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``low..high``."""
    if high <= low:
        high = low + 1
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-6:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high - step * 1e-6:
        ticks.append(round(value, 10))
    return ticks


def line_chart(
    lines: Sequence[Line],
    *,
    title: str,
    x_format: Callable[[float], str],
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    y_range: tuple[float, float] | None = None,
    band: Band | None = None,
    width: int = 560,
    height: int = 220,
    empty_text: str = "no data yet",
) -> str:
    """An SVG line chart (one ``<path class="series">`` per line) as a string."""
    svg = ET.Element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": "chart",
            "viewBox": f"0 0 {width} {height}",
            "width": str(width),
            "height": str(height),
            "role": "img",
            "aria-label": title,
            "font-family": _FONT,
            "font-size": "11",
        },
    )
    ET.SubElement(svg, "title").text = title
    _legend(svg, lines, band, width=width)
    points = [p for line in lines for p in line.points]
    if not points:
        _text(svg, width / 2, height / 2, empty_text, anchor="middle", fill=_MUTED, size=13)
        return ET.tostring(svg, encoding="unicode")

    xs = [x for x, _ in points]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_range is None:
        ys = [y for _, y in points] + ([band.low, band.high] if band else [])
        y_ticks = nice_ticks(min(0.0, min(ys)), max(ys) or 1.0)
    else:
        y_ticks = nice_ticks(*y_range)
    y_low, y_high = y_ticks[0], y_ticks[-1]
    left, right = _PAD_LEFT, width - _PAD_RIGHT
    top, bottom = _PAD_TOP, height - _PAD_BOTTOM

    def sx(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def sy(y: float) -> float:
        clamped = min(max(y, y_low), y_high)
        return bottom - (clamped - y_low) / (y_high - y_low) * (bottom - top)

    for tick in y_ticks:
        y = sy(tick)
        _line(svg, left, y, right, y, stroke=_GRID)
        _text(svg, left - 6, y + 3.5, y_format(tick), anchor="end", fill=_MUTED)
    for i in range(5):
        x_value = x_low + (x_high - x_low) * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        _text(svg, sx(x_value), bottom + 16, x_format(x_value), anchor=anchor, fill=_MUTED)
    _line(svg, left, bottom, right, bottom, stroke="#c5ccd6")

    if band is not None:
        band_top, band_bottom = sy(band.high), sy(band.low)
        rect = ET.SubElement(
            svg,
            "rect",
            {
                "class": "band",
                "x": _num(left),
                "y": _num(band_top),
                "width": _num(right - left),
                "height": _num(max(band_bottom - band_top, 1.0)),
                "fill": _BAND,
                "fill-opacity": "0.14",
            },
        )
        ET.SubElement(rect, "title").text = band.label
        mid = sy((band.low + band.high) / 2)
        _line(svg, left, mid, right, mid, stroke=_BAND, dash="4 3", opacity="0.8")

    for index, line in enumerate(lines):
        color = PALETTE[index % len(PALETTE)]
        coords = [(sx(x), sy(y)) for x, y in line.points]
        if not coords:
            continue
        d = "M" + " L".join(f"{_num(x)},{_num(y)}" for x, y in coords)
        path = ET.SubElement(
            svg,
            "path",
            {
                "class": "series",
                "d": d,
                "fill": "none",
                "stroke": color,
                "stroke-width": "2",
                "stroke-linejoin": "round",
                "stroke-linecap": "round",
            },
        )
        ET.SubElement(path, "title").text = line.label
        if len(coords) <= 40:
            for (x, y), (_, value) in zip(coords, line.points, strict=True):
                dot = ET.SubElement(
                    svg, "circle", {"cx": _num(x), "cy": _num(y), "r": "2.6", "fill": color}
                )
                ET.SubElement(dot, "title").text = f"{line.label}: {y_format(value)}"
    return ET.tostring(svg, encoding="unicode")


def baseline_band(drift: AliasDriftSummary | None) -> Band | None:
    """The alias's baseline mean ± sigma (clipped to 0..1), or None before it has one."""
    if drift is None or drift.baseline_mean is None:
        return None
    mean, sigma = drift.baseline_mean, drift.baseline_sigma or 0.0
    label = f"baseline {mean:.3f} ± {sigma:.3f}"
    return Band(max(mean - sigma, 0.0), min(mean + sigma, 1.0), label)


def score_chart(
    series: Sequence[ScoreSeries], *, title: str, drift: AliasDriftSummary | None = None
) -> str:
    """Mean score over time, one line per version, with the alias's baseline band (``drift``:
    the alias's entry in the summary; the baseline is the alias's, not a version's)."""
    lines = [
        Line(served_label(s.alias, s.version), [(_epoch(p.at), p.mean) for p in s.points])
        for s in series
    ]
    band = baseline_band(drift)
    # Zoom to where the scores are (in steps of 0.1, up to 1.0) so the band stays readable.
    lows = [y for line in lines for _, y in line.points] + ([band.low] if band else [])
    floor = max(math.floor((min(lows, default=0.0) - 0.05) * 10) / 10, 0.0)
    return line_chart(
        lines,
        title=title,
        x_format=lambda ts: datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M"),
        y_format=lambda v: f"{v:g}",
        y_range=(floor, 1.0),
        band=band,
        empty_text="no scored samples yet",
    )


def traffic_chart(rows: Sequence[TrafficRow], *, title: str, width: int = 560) -> str:
    """Requests per minute over the recent window, one line per model and version."""
    lines = []
    peak = 0.0
    for row in rows:
        peak = max([peak, *row.per_minute])
        count = len(row.per_minute)
        points = [(float(i - count + 1), float(n)) for i, n in enumerate(row.per_minute)]
        label = served_label(row.model, row.version)
        lines.append(Line(label, points))
    return line_chart(
        lines,
        title=title,
        x_format=lambda m: "now" if round(m) == 0 else f"{round(m)}m",
        y_format=lambda v: f"{v:g}",
        y_range=(0.0, max(peak, 5.0)),
        width=width,
        empty_text="no requests in the window",
    )


def _legend(svg: ET.Element, lines: Sequence[Line], band: Band | None, *, width: int) -> None:
    x = float(_PAD_LEFT)
    entries = [(line.label, PALETTE[i % len(PALETTE)], False) for i, line in enumerate(lines)]
    if band is not None:
        entries.append((band.label, _BAND, True))
    for label, color, is_band in entries:
        short = label if len(label) <= _MAX_LEGEND_CHARS else label[: _MAX_LEGEND_CHARS - 1] + "…"
        advance = 22 + 6.4 * len(short)
        if x + advance > width and x > _PAD_LEFT:
            break
        group = ET.SubElement(svg, "g", {"class": "legend"})
        ET.SubElement(group, "title").text = label
        if is_band:
            ET.SubElement(
                group,
                "rect",
                {"x": _num(x), "y": "8", "width": "14", "height": "10", "fill": color,
                 "fill-opacity": "0.25"},
            )  # fmt: skip
        else:
            _line(group, x, 13, x + 14, 13, stroke=color, width="2.5")
        _text(group, x + 19, 17, short, fill=_INK)
        x += advance


def _line(
    parent: ET.Element,
    x1: float,
    y1: float,
    x2: float,
    y2: float,
    *,
    stroke: str,
    width: str = "1",
    dash: str | None = None,
    opacity: str | None = None,
) -> None:
    attrs = {
        "x1": _num(x1), "y1": _num(y1), "x2": _num(x2), "y2": _num(y2),
        "stroke": stroke, "stroke-width": width,
    }  # fmt: skip
    if dash:
        attrs["stroke-dasharray"] = dash
    if opacity:
        attrs["stroke-opacity"] = opacity
    ET.SubElement(parent, "line", attrs)


def _text(
    parent: ET.Element,
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    fill: str = _INK,
    size: int | None = None,
) -> None:
    attrs = {"x": _num(x), "y": _num(y), "text-anchor": anchor, "fill": fill}
    if size:
        attrs["font-size"] = str(size)
    ET.SubElement(parent, "text", attrs).text = text


def _epoch(at: datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken as UTC, like everything we store."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _num(value: float) -> str:
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
