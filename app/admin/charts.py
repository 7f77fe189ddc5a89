"""Inline SVG charts drawn on the server (pure): no script, no style attributes, every label escaped.

Colours come from CSS classes in admin.css; each mark carries a <title>, which browsers show on hover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from app.admin.render import plain_markers

WIDTH = 640
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28


@dataclass(frozen=True)
class Bar:
    """One labelled value; `note` is its hover text (the label and value when empty)."""

    label: str
    value: float
    note: str = ""


@dataclass(frozen=True)
class Series:
    """One line of a line chart: a name, a CSS class and a value per x (None: no data there)."""

    name: str
    css: str
    values: Sequence[float | None]


def _t(value: object) -> str:
    """Text for SVG: escaped, invisible characters shown."""
    return str(escape(plain_markers(str(value))))


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2g}"


def _svg(width: int, height: int, label: str, body: Sequence[str]) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_t(label)}">'
    )
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704 - every text is escaped by _t


def _axis(height: int, top_value: float, unit: str) -> list[str]:
    base = height - BOTTOM
    return [
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">'
        f"{_t(_num(top_value) + unit)}</text>",
        f'<text class="tick" x="{LEFT - 4}" y="{base}" text-anchor="end">0</text>',
    ]


def columns(bars: Sequence[Bar], *, label: str, height: int = 160, every: int = 1, unit: str = "") -> Markup:
    """Vertical columns, one per bar; x labels on every `every`-th column."""
    top = max((b.value for b in bars), default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - TOP - BOTTOM
    step = plot_w / max(len(bars), 1)
    body = _axis(height, top, unit)
    for n, bar in enumerate(bars):
        h = plot_h * bar.value / top
        x = LEFT + n * step
        note = bar.note or f"{bar.label}: {_num(bar.value)}{unit}"
        body.append(
            f'<rect class="col" x="{x + 1:.1f}" y="{height - BOTTOM - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}"><title>{_t(note)}</title></rect>'
        )
        if n % every == 0:
            body.append(
                f'<text class="tick" x="{x + step / 2:.1f}" y="{height - BOTTOM + 14}" '
                f'text-anchor="middle">{_t(bar.label)}</text>'
            )
    return _svg(WIDTH, height, label, body)


def stacked(
    groups: Sequence[tuple[str, Sequence[float]]],
    series: Sequence[tuple[str, str]],
    *,
    label: str,
    height: int = 180,
) -> Markup:
    """One column per group, stacked by series (name, CSS class), with a legend."""
    totals = [sum(values) for _, values in groups]
    top = max(totals, default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT - 90, height - TOP - BOTTOM
    step = plot_w / max(len(groups), 1)
    body = _axis(height, top, "")
    for n, (name, values) in enumerate(groups):
        x = LEFT + n * step + step * 0.15
        y = float(height - BOTTOM)
        for (series_name, css), value in zip(series, values, strict=True):
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            body.append(
                f'<rect class="{_t(css)}" x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}">'
                f"<title>{_t(f'{name} {series_name}: {_num(value)}')}</title></rect>"
            )
        body.append(
            f'<text class="tick" x="{x + step * 0.35:.1f}" y="{height - BOTTOM + 14}" '
            f'text-anchor="middle">{_t(name)} ({_num(totals[n])})</text>'
        )
    for n, (series_name, css) in enumerate(series):
        y = TOP + n * 16
        body.append(f'<rect class="{_t(css)}" x="{WIDTH - 84}" y="{y}" width="10" height="10"/>')
        body.append(f'<text class="tick" x="{WIDTH - 70}" y="{y + 9}">{_t(series_name)}</text>')
    return _svg(WIDTH, height, label, body)


def hbars(
    rows: Sequence[Bar],
    *,
    label: str,
    maximum: float = 1.0,
    fmt: Callable[[float], str] = lambda v: f"{v:.0%}",
) -> Markup:
    """Horizontal bars from 0 to `maximum`, labelled on the left and valued on the right."""
    row_h, name_w = 22, 150
    height = TOP + row_h * len(rows) + 8
    plot_w = WIDTH - name_w - 60
    body = []
    for n, row in enumerate(rows):
        y = TOP + n * row_h
        w = plot_w * max(0.0, min(row.value, maximum)) / (maximum or 1.0)
        body.append(
            f'<text class="tick" x="{name_w - 6}" y="{y + 14}" text-anchor="end">{_t(row.label[:24])}</text>'
        )
        body.append(f'<rect class="track" x="{name_w}" y="{y + 3}" width="{plot_w}" height="14"/>')
        body.append(
            f'<rect class="col" x="{name_w}" y="{y + 3}" width="{w:.1f}" height="14">'
            f"<title>{_t(row.note or row.label)}</title></rect>"
        )
        body.append(f'<text class="tick" x="{name_w + plot_w + 6}" y="{y + 14}">{_t(fmt(row.value))}</text>')
    return _svg(WIDTH, height, label, body)


def diverging(
    rows: Sequence[Bar], *, label: str, fmt: Callable[[float], str] = lambda v: f"{v:+.0%}"
) -> Markup:
    """Bars left (negative, class `neg`) or right (positive, `pos`) of a zero line; values in [-1, 1]."""
    row_h, name_w = 22, 170
    height = TOP + row_h * len(rows) + 8
    half = (WIDTH - name_w - 60) / 2
    zero = name_w + half
    body = [f'<line class="axis" x1="{zero}" y1="{TOP - 4}" x2="{zero}" y2="{height - 4}"/>']
    for n, row in enumerate(rows):
        y = TOP + n * row_h
        w = half * min(abs(row.value), 1.0)
        x = zero if row.value >= 0 else zero - w
        css = "pos" if row.value >= 0 else "neg"
        body.append(
            f'<text class="tick" x="{name_w - 6}" y="{y + 14}" text-anchor="end">{_t(row.label[:28])}</text>'
        )
        body.append(
            f'<rect class="{css}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="14">'
            f"<title>{_t(row.note or row.label)}</title></rect>"
        )
        body.append(f'<text class="tick" x="{WIDTH - 52}" y="{y + 14}">{_t(fmt(row.value))}</text>')
    return _svg(WIDTH, height, label, body)


def lines(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    label: str,
    height: int = 170,
    every: int = 6,
    unit: str = "",
) -> Markup:
    """Lines over shared x labels (gaps where a value is None), with dots, a legend and hover values."""
    values = [v for s in series for v in s.values if v is not None]
    top = max(values, default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT - 70, height - TOP - BOTTOM
    step = plot_w / max(len(labels) - 1, 1)
    body = _axis(height, top, unit)

    def point(n: int, v: float) -> tuple[float, float]:
        return LEFT + n * step, height - BOTTOM - plot_h * v / top

    for n, text in enumerate(labels):
        if n % every == 0:
            body.append(
                f'<text class="tick" x="{LEFT + n * step:.1f}" y="{height - BOTTOM + 14}" '
                f'text-anchor="middle">{_t(text)}</text>'
            )
    # The last series is drawn on top; a missing value is skipped, the line joins its neighbours.
    for k, line in enumerate(series):
        run = [
            f"{x:.1f},{y:.1f}" for x, y in (point(n, v) for n, v in enumerate(line.values) if v is not None)
        ]
        if len(run) > 1:
            body.append(f'<polyline class="{_t(line.css)}" fill="none" points="{" ".join(run)}"/>')
        for n, v in enumerate(line.values):
            if v is None:
                continue
            x, y = point(n, v)
            body.append(
                f'<circle class="{_t(line.css)}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                f"<title>{_t(f'{labels[n]} {line.name}: {_num(v)}{unit}')}</title></circle>"
            )
        y = TOP + k * 16
        body.append(f'<rect class="{_t(line.css)}" x="{WIDTH - 64}" y="{y}" width="10" height="10"/>')
        body.append(f'<text class="tick" x="{WIDTH - 50}" y="{y + 9}">{_t(line.name)}</text>')
    return _svg(WIDTH, height, label, body)
