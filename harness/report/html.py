"""A small HTML builder: every string is escaped (:func:`html.escape`) unless it is :class:`Markup`.

Pages are self-contained and need no JavaScript: the style is inline, folded evidence is
``<details>``, charts are inline SVG or PNG ``data:`` URIs, and nothing refers to a URL outside
the page (the only links are ``#`` anchors within it).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness import versions


class Markup(str):
    """Markup that is already safe: inserted as it is."""


def esc(value: object) -> Markup:
    return Markup(html.escape(str(value), quote=True))


def _render(child: object) -> str:
    if child is None or child is False:
        return ""
    if isinstance(child, Markup):
        return str(child)
    if isinstance(child, str | int | float):
        return html.escape(str(child), quote=True)
    if isinstance(child, Iterable):
        return "".join(_render(c) for c in child)
    return html.escape(str(child), quote=True)


def tag(name_: str, /, *children: object, **attrs: object) -> Markup:
    """``tag("td", "x", class_="num")`` -> ``<td class="num">x</td>`` (``_`` suffix and ``__`` -> ``-``)."""
    name = name_
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("__", "-")
        parts.append(attr if value is True else f'{attr}="{html.escape(str(value), quote=True)}"')
    open_tag = "<" + " ".join(parts) + ">"
    if name in ("img", "br", "meta", "hr"):
        return Markup(open_tag)
    return Markup(open_tag + "".join(_render(c) for c in children) + f"</{name}>")


def join(*children: object) -> Markup:
    return Markup(_render(children))


def table(head: Iterable[object], rows: Iterable[Markup | Iterable[object]], *, class_: str = "") -> Markup:
    """A table; a row is a list of cells (a cell may be a ``tag("td", ...)`` already) or a ``<tr>``."""
    body = []
    for row in rows:
        if isinstance(row, Markup):
            body.append(row)
            continue
        cells = [c if isinstance(c, Markup) and c.startswith("<td") else tag("td", c) for c in row]
        body.append(tag("tr", cells))
    return tag(
        "table",
        tag("thead", tag("tr", [tag("th", h) for h in head])),
        tag("tbody", body),
        class_=class_ or None,
    )


def details(summary: object, *content: object, open_: bool = False, class_: str = "") -> Markup:
    return tag("details", tag("summary", summary), *content, open=open_, class_=class_ or None)


def pre(text: str, *, limit: int = 20000) -> Markup:
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters in the file)"
    return tag("pre", text)


def png(path: str | Path | None, alt: str) -> Markup:
    """A PNG file inline (``data:`` URI); a note when it is missing."""
    if not path:
        return tag("p", f"{alt}: no chart was written", class_="muted")
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        return tag("p", f"{alt}: chart {p} not readable ({e.strerror or e})", class_="muted")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return tag("img", src=uri, alt=alt, class_="chart")


def dl(items: Mapping[str, object]) -> Markup:
    """A definition grid of label: value (empty values left out)."""
    return tag(
        "dl",
        [
            join(tag("dt", k), tag("dd", str(v) if isinstance(v, bool) else v))
            for k, v in items.items()
            if v is not None and v != "" and v != [] and v != ()
        ],
        class_="facts",
    )


def verdict_badge(verdict: str, expected: str = "PASS") -> Markup:
    """PASS / FAIL coloured by whether it is what was expected (a negative control's FAIL is)."""
    if not verdict:
        return tag("span", "not run", class_="badge miss")
    if verdict == expected:
        if expected == "FAIL":
            return join(
                tag("span", verdict, class_="badge neg"), tag("div", "negative control", class_="small")
            )
        return tag("span", verdict, class_="badge pass")
    return tag("span", f"{verdict} (expected {expected})", class_="badge fail")


CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: #1f2328; background: #ffffff; }
main { padding: 0 24px 40px; max-width: 1500px; }
header.banner { padding: 18px 24px; color: #ffffff; }
header.banner h1 { margin: 0 0 4px; font-size: 22px; }
header.banner p { margin: 0; font-size: 16px; }
header.pass { background: #1a7f37; }
header.fail { background: #cf222e; }
header.info { background: #0969da; }
h2 { margin: 28px 0 8px; font-size: 18px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { margin: 18px 0 6px; font-size: 15px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f6f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.bad > td { background: #ffebe9; }
tr.group > td { background: #eaeef2; font-weight: 600; }
table.verdicts { table-layout: fixed; }
table.verdicts th:nth-child(1) { width: 31%; }
table.verdicts th:nth-child(2) { width: 10%; }
table.verdicts th:nth-child(3) { width: 7%; }
table.verdicts th:nth-child(4) { width: 9%; }
table.verdicts th:nth-child(5) { width: 18%; }
table.verdicts th:nth-child(6) { width: 18%; }
table.verdicts th:nth-child(7) { width: 7%; }
table.verdicts td { overflow-wrap: anywhere; }
table.negatives { table-layout: fixed; }
table.negatives th:nth-child(1) { width: 28%; }
table.negatives th:nth-child(2) { width: 25%; }
table.negatives th:nth-child(3) { width: 10%; }
table.negatives td { overflow-wrap: anywhere; }
table.tests { table-layout: fixed; }
table.tests th:nth-child(1) { width: 36%; }
table.tests th:nth-child(2) { width: 8%; }
table.tests th:nth-child(3) { width: 7%; }
.small { color: #57606a; font-size: 11px; }
.testname { color: #57606a; font-size: 12px; }
.obs { white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.more > td { border-top: none; padding: 0 8px 2px 24px; background: #fbfbfc; font-size: 13px; }
tr.bad + tr.more > td { background: #fff5f4; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 8px; overflow-x: auto; font-size: 12px;
  line-height: 1.35; white-space: pre-wrap; word-break: break-word; margin: 4px 0 8px; }
details > summary { cursor: pointer; color: #0969da; margin: 2px 0; }
details.evidence > summary { font-weight: 600; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-weight: 600; font-size: 12px;
  white-space: nowrap; color: #ffffff; }
.badge.pass { background: #1a7f37; }
.badge.neg { background: #8250df; }
.badge.fail { background: #cf222e; }
.badge.miss { background: #9a6700; }
.badge.info { background: #57606a; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
dl.facts dt { font-weight: 600; color: #57606a; }
dl.facts dd { margin: 0; }
.muted { color: #57606a; }
.counts { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.counts div { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.counts b { display: block; font-size: 22px; }
img.chart, svg.chart { max-width: 100%; height: auto; border: 1px solid #d0d7de; background: #ffffff; }
figure { margin: 10px 0 18px; }
figcaption { color: #57606a; font-size: 13px; margin-bottom: 4px; }
ul.reasons { margin: 6px 0; padding-left: 20px; }
ul.reasons li { margin: 2px 0; }
footer { margin-top: 32px; color: #57606a; font-size: 12px; }
@media print { details { display: block; } }
"""


def page(title: str, banner: Markup, *body: object) -> str:
    """The whole document: title, the verdict banner, the body, a footer naming what wrote it."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    doc = join(
        Markup("<!DOCTYPE html>\n"),
        tag(
            "html",
            tag(
                "head",
                tag("meta", charset="utf-8"),
                tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
                tag("title", title),
                tag("style", Markup(CSS)),
            ),
            tag(
                "body",
                banner,
                tag("main", *body, tag("footer", f"written by meshproof {versions.MESHPROOF} at {when}")),
            ),
            lang="en",
        ),
    )
    return str(doc) + "\n"


def banner(title: str, verdict_line: str, state: str) -> Markup:
    """``state``: pass, fail or info (the colour of the verdict)."""
    return tag("header", tag("h1", title), tag("p", verdict_line), class_=f"banner {state}", id="summary")


def counts(items: Mapping[str, object]) -> Markup:
    return tag("div", [tag("div", tag("b", v), k) for k, v in items.items()], class_="counts")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
