"""Read a trace the way a user does: Zipkin's own web UI (lens) in headless Chromium.

Driven by Playwright for Python (a maintained driver that waits for what the page renders,
clicks like a user and takes screenshots, over the Chrome DevTools protocol) with Debian's
Chromium (``/usr/bin/chromium``, installed by ``.ci/setup``: Playwright's own browser download
is not reachable here). Nothing is read from Zipkin's JSON API: every fact comes from the DOM
as drawn, so a trace that the API holds but the UI cannot show fails here.

``ZipkinUI.trace(trace_id, service, spans)`` returns one ``Row`` per span row of the trace page,
top to bottom: its name, its bar as drawn (pixels), the error mark, the collapse button (its
offset and the number of rows drawn under it, which give the drawn tree), and for one row of
each name and every row with the error mark what the detail panel shows after a click (span
id, parent id, tags, annotation values). ``as_spans(rows)`` turns them into Zipkin-shaped
dicts of the DRAWN tree with the pixels as times, so ``tools.checks.check_synthesis`` judges
the tree as drawn: stage names, parents, children inside their parents (one pixel of slack).
``ZipkinUI.search`` uses the search bar as a user does.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("COSYVOICE_OTEL_CHROMIUM", "/usr/bin/chromium")
# no background traffic: this machine's network is closed, and Chromium would retry forever
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PIXEL_US = 1000  # as_spans: 1 px of bar = 1000 "us", so check_synthesis's slack is one pixel


_ROWS_JS = r"""
(prefix) => {
  const out = [];
  for (const label of document.querySelectorAll('div')) {
    if (label.children.length !== 0 || !label.textContent.startsWith(prefix)) continue;
    let row = label;  // lens positions each row absolutely, 30 px apart
    while (row && !(row.style && row.style.position === 'absolute' && row.style.top)) {
      row = row.parentElement;
    }
    if (!row) continue;  // the page title, not a row
    const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.width, r.height]; };
    // the span's bar: the coloured 6 px box (1 px boxes are annotation ticks)
    const bar = [...row.querySelectorAll('div')].find((d) => d.children.length === 0
        && !d.textContent && box(d)[2] > 3 && getComputedStyle(d).backgroundColor !== 'rgba(0, 0, 0, 0)');
    const button = row.querySelector('button');
    const svgs = [...row.querySelectorAll('svg')].filter((s) => !s.closest('button'));
    out.push({name: label.textContent.slice(prefix.length), top: parseFloat(row.style.top),
              at: [label.getBoundingClientRect().left + 5, label.getBoundingClientRect().top + 5],
              bar: bar ? box(bar).slice(0, 2) : null, button: button ? button.style.left : null,
              descendants: button ? parseInt(button.textContent, 10) || 0 : 0,
              error_mark: svgs.length > 0});
  }
  return {rows: out};
}
"""

_REVEAL_JS = r"""
([prefix, top]) => {
  // the row drawn at ``top``: scrolled into view, the point of its label to click (or null)
  const label = [...document.querySelectorAll('div')].find((d) => d.children.length === 0
      && d.textContent.startsWith(prefix) && d.closest('div[style*="position: absolute"]')
      && parseFloat(d.closest('div[style*="position: absolute"]').style.top) === top);
  if (!label) return null;
  label.scrollIntoView({block: 'center'});
  const r = label.getBoundingClientRect();
  return [r.left + 5, r.top + 5];
}
"""

_PANEL_JS = r"""
() => {
  const after = (text) => {
    const el = [...document.querySelectorAll('div,span,p,h6')].find(
        (e) => e.children.length === 0 && e.textContent === text);
    return el && el.nextElementSibling ? el.nextElementSibling.textContent : null;
  };
  const tags = {}, annotations = [];
  for (const tr of document.querySelectorAll('tr')) {
    const cells = tr.querySelectorAll('td,th');
    if (cells.length !== 2) continue;
    const [key, value] = [cells[0].textContent, cells[1].textContent];
    if (key === 'Value') annotations.push(value);
    else if (key !== 'Start Time' && key !== 'Address') tags[key] = value;
  }
  return {name: after('Span name'), id: after('Span ID'), parent: after('Parent ID'), tags,
          annotations};
}
"""


@dataclass
class Row:
    name: str
    top: float
    at: tuple[float, float]  # a point on the row's label, to click
    bar: tuple[float, float] | None  # left, width in pixels
    button: str | None  # the collapse button's left offset ("33.3333%"); None on a leaf
    descendants: int  # the number on the collapse button: the rows drawn under this one
    error_mark: bool
    index: int = 0  # position in the drawn tree (top to bottom)
    parent: int | None = None  # index of the row it is drawn under (from the numbers)
    read: bool = False  # its detail panel was read (one row per name, and every error row)
    span_id: str = ""
    parent_id: str | None = None  # as the panel says
    tags: dict[str, str] = field(default_factory=dict)
    annotations: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str | None:
        """What lens shows of the span's kind: its annotation pair ("Consumer Start", ...)."""
        for value in self.annotations:
            match = re.match(r"(Server|Client|Producer|Consumer) Start", value)
            if match:
                return match.group(1).upper()
        return None


@dataclass
class Search:
    keys_offered: list[str] = field(default_factory=list)  # the "+" list: keys lens knows
    values_offered: dict[str, list[str]] = field(default_factory=dict)  # per key typed
    query: dict[str, list[str]] = field(default_factory=dict)  # what lens asked its API
    found: list[str] = field(default_factory=list)  # trace ids of the results


class ZipkinUI:
    """One headless Chromium for a test; screenshots land in ``artefacts``."""

    def __init__(self, base_url: str, artefacts: Path) -> None:
        from playwright.sync_api import sync_playwright

        self.base_url = base_url.rstrip("/")
        self.artefacts = artefacts
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        self.page = self.browser.new_page(viewport={"width": 1600, "height": 1200})
        self.console_errors: list[str] = []
        self.page.on("console", lambda m: self.console_errors.append(m.text)
                     if m.type == "error" else None)

    def close(self) -> None:
        self.browser.close()
        self._playwright.stop()

    def screenshot(self, name: str) -> Path:
        self.artefacts.mkdir(parents=True, exist_ok=True)
        path = self.artefacts / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def trace(self, trace_id: str, service: str, spans: int) -> list[Row]:
        """The trace page's rows as drawn, top to bottom, with the tree lens draws: each
        collapse button shows how many rows hang under it, so the rows (pre-order) and those
        numbers give every row's drawn parent. Lens draws only the rows in view, so the rows
        are read from a window tall enough for all of them; then, in a normal window (a click
        re-renders the page: seconds in a tall one), one row of each name and every row with
        the error mark is clicked to read its detail panel (tags, ids, kind)."""
        page = self.page
        prefix = f"{service}: "
        page.set_viewport_size({"width": 1600, "height": max(1200, 30 * spans + 700)})
        self._open(trace_id, prefix, spans)
        ordered = sorted((Row(**found) for found in page.evaluate(_ROWS_JS, prefix)["rows"]),
                         key=lambda row: row.top)
        open_rows: list[Row] = []  # the rows whose drawn subtree the next row may be in
        for index, row in enumerate(ordered):
            row.index = index
            while open_rows and open_rows[-1].index + open_rows[-1].descendants < index:
                open_rows.pop()
            row.parent = open_rows[-1].index if open_rows else None
            if row.descendants:
                open_rows.append(row)
        page.set_viewport_size({"width": 1600, "height": 1200})
        self._open(trace_id, prefix, 1)
        names: set[str] = set()
        for row in ordered:
            if row.name in names and not row.error_mark:
                continue
            names.add(row.name)
            at = page.evaluate(_REVEAL_JS, [prefix, row.top])
            if at is not None:  # (a row lens does not draw in this window stays unread)
                row.at = tuple(at)
                self._read_panel(row)
        return ordered

    def _open(self, trace_id: str, prefix: str, rows: int) -> None:
        self.page.goto(f"{self.base_url}/zipkin/traces/{trace_id}")
        self.page.wait_for_function(
            "([prefix, n]) => [...document.querySelectorAll('div')].filter((d) => "
            "d.children.length === 0 && d.textContent.startsWith(prefix) && d.closest("
            "'div[style*=\"position: absolute\"]')).length >= n", arg=[prefix, rows],
            timeout=30_000)

    def _read_panel(self, row: Row) -> None:
        page = self.page
        page.mouse.click(*row.at)  # where the row is drawn: what a user does
        page.wait_for_function(
            "(name) => [...document.querySelectorAll('div,span,p,h6')].some((e) => "
            "e.textContent === 'Span name' && e.nextElementSibling && "
            "e.nextElementSibling.textContent === name)", arg=row.name, timeout=10_000)
        panel: dict[str, Any] = page.evaluate(_PANEL_JS)
        row.span_id, row.parent_id = panel["id"] or "", panel["parent"]
        row.tags, row.annotations, row.read = panel["tags"], panel["annotations"], True

    def search(self, service: str, criteria: list[tuple[str, str]]) -> Search:
        """Search like a user: the service, then each criterion added with the search bar's
        "+" (an autocomplete key from its list, then a value from that key's list), RUN
        QUERY. Returns what the bar offered, the query lens sent, and the trace ids of the
        results (each result's SHOW button opens its trace page)."""
        page = self.page
        page.set_viewport_size({"width": 1600, "height": 1200})
        page.goto(f"{self.base_url}/zipkin/?serviceName={service}&lookback=1h&limit=50")
        run = page.get_by_role("button", name=re.compile("run query", re.I))
        run.wait_for()
        # lens runs the address's query by itself on load: let that answer come first, so the
        # answer read below is RUN QUERY's (a late one, under load, was taken for it)
        page.wait_for_load_state("networkidle")
        result = Search()
        for key, value in criteria:
            self._plus(run).click()
            page.locator("li").first.wait_for(timeout=5000)
            result.keys_offered = page.locator("li").all_inner_texts()
            page.keyboard.type(key)
            page.keyboard.press("Enter")
            page.locator("li", has_text=value).first.wait_for(timeout=5000)
            result.values_offered[key] = page.locator("li").all_inner_texts()
            page.keyboard.type(value)
            page.keyboard.press("Enter")
            page.get_by_text(value, exact=True).first.wait_for(timeout=5000)
            page.keyboard.press("Escape")  # lens opens the next criterion's input by itself
        return self._run(run, result, "annotationQuery=" if criteria else "")

    def search_by_address(self, service: str, annotation_query: str) -> Search:
        """Search like a user who types the criteria into the page's address (a link someone
        shared): lens shows them in its bar, RUN QUERY sends them as they are."""
        page = self.page
        page.set_viewport_size({"width": 1600, "height": 1200})
        query = urllib.parse.urlencode({"serviceName": service, "lookback": "1h", "limit": "50",
                                        "annotationQuery": annotation_query})
        page.goto(f"{self.base_url}/zipkin/?{query}")
        run = page.get_by_role("button", name=re.compile("run query", re.I))
        run.wait_for()
        return self._run(run, Search())

    def _run(self, run: Any, result: Search, sent_with: str = "") -> Search:
        """RUN QUERY; the query lens sent (the answer whose address holds ``sent_with``), and
        the trace id behind each result's SHOW."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        page = self.page
        with page.expect_response(
                lambda r: "/api/v2/traces?" in r.url and sent_with in r.url) as answer:
            run.click()
        result.query = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.value.url).query)
        answer.value.finished()
        # the list renders after the answer, under a "N Result(s)" line; a search with no
        # traces may draw no such line at all
        count = page.get_by_text(re.compile(r"^\d+ Results?$"))
        try:
            count.first.wait_for(timeout=5000)
        except PlaywrightTimeout:
            return result
        shows = page.get_by_role("button", name=re.compile("^show$", re.I))
        for i in range(shows.count()):
            with page.expect_navigation():
                shows.nth(i).click()
            result.found.append(page.url.rstrip("/").rsplit("/", 1)[-1])
            page.go_back()
            page.get_by_role("button", name=re.compile("^show$", re.I)).first.wait_for()
        return result

    def _plus(self, run: Any) -> Any:
        """The search bar's "+": the rightmost button on RUN QUERY's line, left of it."""
        target = run.bounding_box()
        middle = target["y"] + target["height"] / 2
        buttons = self.page.locator("button")
        candidates = []
        for i in range(buttons.count()):
            box = buttons.nth(i).bounding_box()
            if box and abs(box["y"] + box["height"] / 2 - middle) < 10 and box["x"] < target["x"]:
                candidates.append((box["x"], i))
        return buttons.nth(max(candidates)[1])


def as_spans(rows: list[Row]) -> list[dict[str, Any]]:
    """Zipkin-shaped spans of what the UI drew: the drawn tree (ids are row positions), times
    from the bars in pixels (``PIXEL_US`` per pixel), tags and kind where the panel was read."""
    spans = []
    for row in rows:
        left, width = row.bar or (0.0, 0.0)
        span = {"traceId": "ui", "id": f"row{row.index}", "name": row.name, "tags": row.tags,
                "timestamp": round(left * PIXEL_US), "duration": round(width * PIXEL_US)}
        if row.parent is not None:
            span["parentId"] = f"row{row.parent}"
        if row.kind:
            span["kind"] = row.kind
        spans.append(span)
    return spans


def depth_problems(rows: list[Row]) -> list[str]:
    """The drawn tree against itself and the panels: each collapse button one step further
    right per level (the same step for every row), and where a row and the row drawn above it
    in the tree were both read, the panel's parent id is that row's span id."""
    problems = []
    depth: dict[int, int] = {}
    for row in rows:
        depth[row.index] = depth[row.parent] + 1 if row.parent is not None else 0
        parent = rows[row.parent] if row.parent is not None else None
        if parent is not None and row.read and parent.read and row.parent_id != parent.span_id:
            problems.append(f"{row.name} is drawn under {parent.name} ({parent.span_id}) but its "
                            f"panel names parent {row.parent_id}")
    steps = {round(float(row.button.rstrip("%")) / depth[row.index], 2)
             for row in rows if row.button and depth[row.index] > 0}
    if len(steps) > 1:
        problems.append(f"collapse buttons are not one step per level: {sorted(steps)}")
    return problems


def tag_problems(rows: list[Row]) -> list[str]:
    """The schema's required attributes, on every row whose detail panel was read."""
    from cosyvoice_otel import schema

    defs = {d.name: d for d in schema.SPANS}
    problems = []
    for row in rows:
        name = "tts_frontend.<mode>" if row.name.startswith("tts_frontend.") and \
            row.name != schema.TEXT_NORMALIZE else row.name
        definition = defs.get(name)
        if not row.read or definition is None:
            continue
        problems += [f"{row.name}: the panel shows no {attr.name}"
                     for attr in definition.attributes
                     if attr.required and attr.name not in row.tags]
    return problems
