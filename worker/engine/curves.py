"""``curves.svg``: the training curves as a small SVG chart, written by hand.

Workers have no plotting library (matplotlib is a dev dependency), and two line charts need
none: each panel is a ``<polyline>`` per series, one point per epoch, with a marker on every
point so that a one-epoch job still shows.
"""

from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 360, 250  # one panel
MARGIN = {"left": 56, "right": 16, "top": 44, "bottom": 40}
COLOURS = {"student": "#1f77b4", "baseline": "#ff7f0e"}


@dataclass(frozen=True)
class Series:
    name: str  # student | baseline
    values: list[float | None]  # one per epoch, from epoch 1; None: not measured


@dataclass(frozen=True)
class Panel:
    title: str
    series: list[Series]
    percent: bool = False  # label the axis 0-100%, for values in [0, 1]


def svg(panels: list[Panel]) -> str:
    """The panels side by side, as one SVG document."""
    width = WIDTH * len(panels)
    body = "\n".join(_panel(panel, i * WIDTH) for i, panel in enumerate(panels))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
        f'viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="11">\n'
        f'<rect width="{width}" height="{HEIGHT}" fill="white"/>\n{body}\n</svg>\n'
    )


def _panel(panel: Panel, x0: int) -> str:
    left, top = x0 + MARGIN["left"], MARGIN["top"]
    right, bottom = x0 + WIDTH - MARGIN["right"], HEIGHT - MARGIN["bottom"]
    values = [v for s in panel.series for v in s.values if v is not None]
    epochs = max((len(s.values) for s in panel.series), default=0)
    parts = [
        f'<g class="panel"><text x="{x0 + WIDTH / 2}" y="18" text-anchor="middle" '
        f'font-weight="bold">{escape(panel.title)}</text>',
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="none" stroke="#888"/>',
        f'<text x="{(left + right) / 2}" y="{HEIGHT - 8}" text-anchor="middle">epoch</text>',
    ]
    if not values:
        parts.append(
            f'<text x="{(left + right) / 2}" y="{(top + bottom) / 2}" '
            'text-anchor="middle">not measured</text></g>'
        )
        return "\n".join(parts)
    low, high = min(values), max(values)
    if high == low:  # a flat line sits in the middle
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)

    def px(epoch: int) -> float:  # epoch is 1-based
        return left + (right - left) * ((epoch - 1) / (epochs - 1) if epochs > 1 else 0.5)

    def py(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    for value in (high, (high + low) / 2, low):
        label = f"{value:.1%}" if panel.percent else f"{value:.4g}"
        y = py(value)
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
    for epoch in sorted({1, epochs}):
        parts.append(
            f'<text x="{px(epoch):.1f}" y="{bottom + 14}" text-anchor="middle">{epoch}</text>'
        )
    for i, series in enumerate(panel.series):
        colour = COLOURS.get(series.name, "#333")
        points = [(px(e), py(v)) for e, v in enumerate(series.values, 1) if v is not None]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(
            f'<polyline class="{escape(series.name)}" points="{coords}" fill="none" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        parts.extend(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in points
        )
        legend_x = (left + right) / 2 + (i - (len(panel.series) - 1) / 2) * 80
        parts.append(
            f'<text x="{legend_x:.1f}" y="{top - 8}" text-anchor="middle" fill="{colour}">'
            f"— {escape(series.name)}</text>"
        )
    parts.append("</g>")
    return "\n".join(parts)
