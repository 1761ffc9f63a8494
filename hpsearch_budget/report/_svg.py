"""Tiny inline-SVG charts: no JavaScript, no network, nothing to fail in a browser.

A report's HTML must be one self-contained file that renders offline years from now; plain SVG
does that in a few kilobytes where an inlined plotting library weighs megabytes. Every text
that reaches the SVG goes through :func:`html.escape`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

W, H = 640, 300
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 42, 44
BARS_TOP = 28  # bar charts have no legend row
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


@dataclass
class Chart:
    """One plot area with linear or log axes; add marks, then :meth:`svg`."""

    title: str
    xlabel: str
    ylabel: str
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    xlog: bool = False
    categories: Sequence[str] = ()  # names for x = 0, 1, 2, ... instead of numeric ticks
    parts: list[str] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        lo, hi = self.x_range
        if self.xlog:
            lo, hi = math.log10(max(lo, 1e-12)), math.log10(max(hi, 1e-12))
        self._x = (lo, hi if hi > lo else lo + 1)
        ylo, yhi = self.y_range
        if not (math.isfinite(ylo) and math.isfinite(yhi)):
            ylo, yhi = 0.0, 1.0
        if yhi <= ylo:
            ylo, yhi = ylo - 0.5 * (abs(ylo) or 1), yhi + 0.5 * (abs(yhi) or 1)
        pad = 0.05 * (yhi - ylo)
        self._y = (ylo - pad, yhi + pad)

    def px(self, x: float) -> float:
        if self.xlog:
            x = math.log10(max(x, 1e-12))
        lo, hi = self._x
        return PAD_L + (x - lo) / (hi - lo) * (W - PAD_L - PAD_R)

    def py(self, y: float) -> float:
        lo, hi = self._y
        return H - PAD_B - (y - lo) / (hi - lo) * (H - PAD_T - PAD_B)

    def line(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        color: str,
        label: str = "",
        step: bool = False,
        dash: str = "",
    ) -> None:
        pts = [
            (self.px(x), self.py(y))
            for x, y in zip(xs, ys, strict=True)
            if math.isfinite(x) and math.isfinite(y)
        ]
        if not pts:
            return
        if step:
            stepped = [pts[0]]
            for (_x0, y0), (x1, y1) in itertools.pairwise(pts):
                stepped += [(x1, y0), (x1, y1)]
            pts = stepped
        d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2"{extra} '
            f'points="{d}"/>'
        )
        if label:
            self.legend.append((color, label))

    def points(
        self, xs: Sequence[float], ys: Sequence[float], color: str, label: str = "", r: float = 2.0
    ) -> None:
        dots = [
            f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="{r}"/>'
            for x, y in zip(xs, ys, strict=True)
            if math.isfinite(x) and math.isfinite(y)
        ]
        if dots:
            self.parts.append(
                f'<g class="series" fill="{color}" fill-opacity="0.45">' + "".join(dots) + "</g>"
            )
            if label:
                self.legend.append((color, label))

    def band(
        self, xs: Sequence[float], lows: Sequence[float], highs: Sequence[float], color: str
    ) -> None:
        top = [(self.px(x), self.py(y)) for x, y in zip(xs, highs, strict=True)]
        bottom = [(self.px(x), self.py(y)) for x, y in zip(xs, lows, strict=True)][::-1]
        if not top:
            return
        d = " ".join(f"{x:.1f},{y:.1f}" for x, y in top + bottom)
        self.parts.append(f'<polygon fill="{color}" fill-opacity="0.15" points="{d}"/>')

    def _axes(self) -> str:
        out = [
            f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
            f'height="{H - PAD_T - PAD_B}" fill="none" stroke="#999"/>'
        ]
        for y in _nice_ticks(*self._y):
            py = self.py(y)
            out.append(
                f'<line x1="{PAD_L - 4}" x2="{PAD_L}" y1="{py:.1f}" y2="{py:.1f}" stroke="#999"/>'
                f'<text x="{PAD_L - 6}" y="{py + 4:.1f}" text-anchor="end">{_fmt(y)}</text>'
            )
        if self.xlog:
            lo, hi = self._x
            xt = [
                10.0**e
                for e in range(math.floor(lo), math.ceil(hi) + 1)
                if lo - 1e-9 <= e <= hi + 1e-9
            ]
        elif self.categories:
            xt = [float(i) for i in range(len(self.categories))]
        else:
            xt = _nice_ticks(*self._x)
        for x in xt:
            px = self.px(x)
            label = escape(self.categories[int(x)]) if self.categories else _fmt(x)
            out.append(
                f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{H - PAD_B}" y2="{H - PAD_B + 4}" '
                'stroke="#999"/>'
                f'<text x="{px:.1f}" y="{H - PAD_B + 16}" text-anchor="middle">{label}</text>'
            )
        out.append(
            f'<text x="{(PAD_L + W - PAD_R) / 2:.0f}" y="{H - 8}" text-anchor="middle">'
            f"{escape(self.xlabel)}</text>"
        )
        out.append(
            f'<text transform="translate(14,{(PAD_T + H - PAD_B) / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle">{escape(self.ylabel)}</text>'
        )
        return "".join(out)

    def _legend(self) -> str:
        out = []
        x = PAD_L + 8
        for color, label in self.legend:
            # Above the plot area, under the title: never on top of the data.
            out.append(
                f'<rect x="{x}" y="{PAD_T - 16}" width="10" height="10" fill="{color}"/>'
                f'<text x="{x + 14}" y="{PAD_T - 7}">{escape(label)}</text>'
            )
            x += 24 + 7 * len(label)
        return "".join(out)

    def svg(self, fig_id: str) -> str:
        return (
            f'<svg class="figure" id="{escape(fig_id)}" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{escape(self.title)}" font-family="sans-serif" font-size="11">'
            f"<title>{escape(self.title)}</title>"
            f'<text x="{W / 2:.0f}" y="16" text-anchor="middle" font-size="13">'
            f"{escape(self.title)}</text>"
            + self._axes()
            + "".join(self.parts)
            + self._legend()
            + "</svg>"
        )


def bars(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    fig_id: str,
    color: str = COLORS[0],
    xlabel: str = "",
) -> str:
    """Horizontal bars, one per label (importances), largest first as given."""
    n = max(1, len(labels))
    row = 22
    h = BARS_TOP + n * row + 30
    left = 150
    top = max([v for v in values if math.isfinite(v)] + [1e-12])
    out = [
        f'<svg class="figure" id="{escape(fig_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{escape(title)}" '
        f'font-family="sans-serif" font-size="11"><title>{escape(title)}</title>'
        f'<text x="{W / 2:.0f}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>'
    ]
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = BARS_TOP + i * row
        width = (W - left - 60) * (v / top if math.isfinite(v) else 0)
        out.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(label[:24])}</text>'
            f'<rect class="series" x="{left}" y="{y + 3}" width="{max(width, 1):.1f}" '
            f'height="{row - 6}" fill="{color}"/>'
            f'<text x="{left + width + 4:.1f}" y="{y + 14}">{_fmt(v)}</text>'
        )
    if xlabel:
        out.append(
            f'<text x="{(left + W) / 2:.0f}" y="{h - 6}" text-anchor="middle">'
            f"{escape(xlabel)}</text>"
        )
    return "".join(out) + "</svg>"
