"""Charts drawn as inline SVG (no matplotlib, no script): text stays selectable and crisp, and the
page stays small. Load and upgrade charts are not drawn here: they are :mod:`harness.load.chart`'s
PNGs, embedded as they are (one binning, one drawing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.report.html import Markup, esc

# Chart colours: none of them is used by the page's CSS (badges, banner, links), so a chart's
# pixels can be told from the rest of a page (the browser test counts them).
BLUE = "#218bff"
PURPLE = "#a475f9"
GREEN = "#2da44e"
RED = "#fa4549"
AMBER = "#bf8700"
GREY = "#8c959f"
GRID = "#d0d7de"
INK = "#1f2328"


@dataclass(frozen=True)
class ShareRow:
    """One category of a statistical check: configured share, observed share, its interval."""

    label: str  # the check (shown once per check)
    category: str
    expected: float  # shares in [0, 1]
    share: float
    low: float
    high: float
    negative: bool  # a negative control's category (drawn in purple)
    as_expected: bool  # the check reached its expected verdict
    before: tuple[float, float, float] | None = None  # (share, low, high) in an earlier run, drawn grey


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shares_chart(rows: Sequence[ShareRow], *, title: str = "") -> Markup:
    """Per check and category: the interval as a bar, the observed share as a dot, the configured
    share as a tick; a check that missed its expected verdict is labelled in red. A row with
    ``before`` also shows the earlier run's interval and share, in grey above the bar."""
    title = title or (
        "Observed share (dot) with its confidence interval (bar) against the configured share (tick)"
    )
    label_w, plot_w, row_h, top = 470, 560, 22, 46
    width = label_w + plot_w + 30
    height = top + row_h * len(rows) + 30
    x0 = label_w

    def x(p: float) -> float:
        return x0 + max(0.0, min(1.0, p)) * plot_w

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="observed shares with their confidence intervals">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="18" font-size="13" font-weight="600" fill="{INK}">{esc(title)}</text>',
        f'<rect x="{x0}" y="26" width="18" height="7" fill="{BLUE}"/>'
        f'<text x="{x0 + 24}" y="33" font-size="11" fill="{INK}">check</text>'
        f'<rect x="{x0 + 80}" y="26" width="18" height="7" fill="{PURPLE}"/>'
        f'<text x="{x0 + 104}" y="33" font-size="11" fill="{INK}">negative control</text>'
        f'<rect x="{x0 + 220}" y="23" width="3" height="13" fill="{AMBER}"/>'
        f'<text x="{x0 + 228}" y="33" font-size="11" fill="{INK}">configured</text>',
    ]
    for pct in (0, 25, 50, 75, 100):
        gx = x(pct / 100)
        out.append(
            f'<line x1="{gx:.1f}" y1="{top - 4}" x2="{gx:.1f}" y2="{height - 24}" stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{gx:.1f}" y="{height - 10}" font-size="11" text-anchor="middle" fill="{INK}">{pct}%</text>'
        )
    previous = None
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        if i % 2 == 0:
            out.append(
                f'<rect x="0" y="{y - row_h / 2:.1f}" width="{width}" height="{row_h}" fill="#f6f8fa"/>'
            )
        label = r.category if r.label == previous else f"{_clip(r.label, 58)} · {r.category}"
        previous = r.label
        colour = INK if r.as_expected else RED
        out.append(
            f'<text x="{x0 - 8}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{colour}">{esc(label)}</text>'
        )
        bar = PURPLE if r.negative else BLUE
        lo, hi = x(r.low), x(r.high)
        if r.before is not None:
            b_share, b_low, b_high = r.before
            out.append(
                f'<rect x="{x(b_low):.1f}" y="{y - 8.5:.1f}" width="{max(x(b_high) - x(b_low), 2.0):.1f}" '
                f'height="3" fill="{GREY}"/><circle cx="{x(b_share):.1f}" cy="{y - 7:.1f}" r="2" fill="{GREY}"/>'
            )
        out.append(
            f'<rect x="{lo:.1f}" y="{y - 3.5:.1f}" width="{max(hi - lo, 2.0):.1f}" height="7" fill="{bar}"/>'
            f'<rect x="{x(r.expected) - 1.5:.1f}" y="{y - 7:.1f}" width="3" height="14" fill="{AMBER}"/>'
            f'<circle cx="{x(r.share):.1f}" cy="{y:.1f}" r="3.5" fill="{INK}"/>'
            f"<title>{esc(r.label)}: {esc(r.category)} observed {r.share * 100:.1f}% "
            f"[{r.low * 100:.1f}, {r.high * 100:.1f}], configured {r.expected * 100:.1f}%</title>"
        )
    out.append("</svg>")
    return Markup("".join(out))


@dataclass(frozen=True)
class Span:
    """One activity on the chaos timeline."""

    lane: str  # hypothesis before | method | hypothesis after | rollbacks
    name: str
    kind: str  # probe | action
    start_s: float  # seconds since the experiment started
    end_s: float
    ok: bool


def timeline_chart(spans: Sequence[Span], title: str) -> Markup:
    """One row per activity, in the order they ran: probes of the hypothesis, the method's
    injections and probes, the rollbacks; probes green, actions blue, rollbacks purple, a failed
    one red."""
    label_w, plot_w, row_h, top = 360, 620, 22, 40
    width = label_w + plot_w + 40
    height = top + row_h * max(len(spans), 1) + 34
    end = max([s.end_s for s in spans] + [1.0])
    scale = plot_w / end

    def x(t: float) -> float:
        return label_w + max(0.0, t) * scale

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="18" font-size="13" font-weight="600" fill="{INK}">{esc(title)}</text>',
    ]
    legend_x = label_w
    for name, colour in (
        ("probe", GREEN),
        ("action (injected)", BLUE),
        ("rollback", PURPLE),
        ("failed", RED),
    ):
        out.append(
            f'<rect x="{legend_x}" y="24" width="14" height="8" fill="{colour}"/>'
            f'<text x="{legend_x + 18}" y="32" font-size="11" fill="{INK}">{name}</text>'
        )
        legend_x += 140
    ticks = _ticks(end)
    for t in ticks:
        gx = x(t)
        out.append(
            f'<line x1="{gx:.1f}" y1="{top - 2}" x2="{gx:.1f}" y2="{height - 26}" stroke="{GRID}"/>'
            f'<text x="{gx:.1f}" y="{height - 12}" font-size="11" text-anchor="middle" fill="{INK}">{t:g} s</text>'
        )
    for i, s in enumerate(spans):
        y = top + i * row_h
        if i % 2 == 0:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f6f8fa"/>')
        colour = (PURPLE if s.lane == "rollbacks" else GREEN if s.kind == "probe" else BLUE) if s.ok else RED
        out.append(
            f'<text x="{label_w - 8}" y="{y + 15}" font-size="11" text-anchor="end" '
            f'fill="{INK if s.ok else RED}">{esc(_clip(f"{s.lane}: {s.name}", 56))}</text>'
        )
        x1, x2 = x(s.start_s), x(s.end_s)
        out.append(
            f'<rect x="{x1:.1f}" y="{y + 5}" width="{max(x2 - x1, 3.0):.1f}" height="12" fill="{colour}">'
            f"<title>{esc(s.lane)}: {esc(s.kind)} {esc(s.name)}: {s.start_s:.2f}-{s.end_s:.2f} s"
            f"{'' if s.ok else ' (failed)'}</title></rect>"
        )
    out.append("</svg>")
    return Markup("".join(out))


def _ticks(end: float) -> list[float]:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if end / step <= 10:
            break
    n = int(end // step) + 1
    return [round(i * step, 3) for i in range(n + 1) if i * step <= end * 1.001]
