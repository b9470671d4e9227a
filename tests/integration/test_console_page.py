"""The console page in a real browser, fed hostile values: they show as text, run nothing, stop nothing.

No broker: a :class:`ConsoleFeed` is filled directly (what the topic reader would hand it) and served
by the real :class:`ConsoleServer`; headless Chromium loads the page over the DevTools protocol
(tests/support/browser.py) and applies the Server-Sent Events like any page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.console.feed import ConsoleFeed
from stream.console.server import ConsoleServer
from stream.settings import Settings
from tests.support.browser import Browser, find_chromium

pytestmark = pytest.mark.integration

T0 = 1_780_315_200.0
# Markup that would run if any value were written as HTML, plus a line break and a bidi override.
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>\n\u202e'
FAR = 1e300  # a finite time no JavaScript Date can hold


def _push(n: int, **fields: object) -> dict[str, object]:
    push: dict[str, object] = {
        "push_id": f"p{n}", "user_id": f"u{n}", "item_id": "i1", "trigger": "in_session", "reason": "r",
        "score": 0.6, "threshold": 0.3, "created_at": T0 + n, "expires_at": T0 + n + 3600,
    }  # fmt: skip
    push.update(fields)
    return push


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed and could not be installed (deploy/install-test-deps.sh)")
    b = Browser(binary, tmp_path / "chromium")
    yield b
    b.close()


def test_hostile_values_render_as_text_and_the_page_keeps_updating(browser: Browser) -> None:
    settings = Settings()
    settings.console.port = 0
    settings.console.update_seconds = 0.05
    feed = ConsoleFeed(holdout_share=0.0)
    feed.on_push(
        _push(
            1, user_id=XSS, item_id=XSS, title=XSS + "x" * 10_000, category=XSS, reason=XSS,
            trigger='in_session" onclick="window.__xss=3', score=FAR, threshold=-FAR, price=1e308,
            created_at=FAR, expires_at=-FAR,
        )
    )  # fmt: skip
    feed.on_decision(
        {"user_id": XSS, "item_id": XSS, "trigger": XSS, "outcome": "held", "reason": XSS,
         "score": 0.4, "threshold": 0.5, "ts": FAR}
    )  # fmt: skip
    feed.on_dead_letter({"reason": XSS, "error": XSS, "source_topic": XSS, "received_at": -FAR})
    feed.on_event({"user_id": "u9", "type": "view", "ts": FAR})  # the header's latest event time
    console = ConsoleServer(settings, feed=feed, read_topics=False).start()
    try:
        browser.navigate(console.url)
        rows = "document.querySelectorAll('#pushes tbody tr').length"
        browser.wait_for(f"{rows} === 1", 20, what="the hostile push on the page")
        assert browser.evaluate("window.__xss === undefined")
        # Nothing but the page's own script element; no image, no inline script from the values.
        assert browser.evaluate("document.querySelectorAll('img, script').length") == 1
        cells = browser.evaluate(
            "[...document.querySelectorAll('#pushes tbody td')].map(td => td.textContent)"
        )
        assert cells[0] == "—" and cells[1] == XSS and cells[4] == XSS and cells[6] == "—"
        assert cells[3] == 'in session" onclick="window.  xss=3'
        assert cells[2] == (XSS + "x" * 10_000)[:256]  # the feed's bound, not 10 KB
        decision = browser.evaluate("document.querySelector('#decisions tbody tr').textContent")
        dead = browser.evaluate("document.querySelector('#dead tbody tr').textContent")
        assert decision.startswith("—") and dead.startswith("—") and "<script>" in dead
        assert browser.evaluate("document.getElementById('last-event').textContent") == "—"
        # Later updates still apply: the page was not stopped by any of it.
        feed.on_push(_push(2))
        browser.wait_for(f"{rows} === 2", 10, what="the next push")
        assert browser.evaluate("window.__xss === undefined")
    finally:
        console.stop()


# Where each character of the last ``needle`` in ``text`` lands on screen (left edges, in logical
# order), with the text laid out as a tooltip is: plain text, its line breaks kept.
_LAYOUT = """((text, needle) => {
  const div = document.createElement("div");
  div.style.cssText = "position: absolute; left: 0; top: 0; white-space: pre; font: 16px monospace";
  div.textContent = text;
  document.body.appendChild(div);
  const start = text.lastIndexOf(needle), xs = [];
  for (let i = start; i < start + needle.length; i++) {
    const range = document.createRange();
    range.setStart(div.firstChild, i);
    range.setEnd(div.firstChild, i + 1);
    xs.push(range.getBoundingClientRect().left);
  }
  div.remove();
  return xs;
})"""


def test_a_bidi_override_in_an_item_id_reorders_nothing_else_in_its_tooltip(browser: Browser) -> None:
    settings = Settings()
    settings.console.port = 0
    settings.console.update_seconds = 0.05
    feed = ConsoleFeed(holdout_share=0.0)
    # U+2069 first: it would close an isolate (U+2068) wrapped around the id, letting the override out.
    item_id, category = "sku\u2069\u202e42", "Jackets \u202eteg"
    feed.on_push(_push(1, item_id=item_id, category=category, price=1234.5))
    console = ConsoleServer(settings, feed=feed, read_topics=False).start()
    try:
        browser.navigate(console.url)
        browser.wait_for("document.querySelectorAll('#pushes tbody tr').length === 1", 20, what="the push")
        title = browser.evaluate("document.querySelector('#pushes tbody td:nth-child(3)').title")
        assert title.split("\n") == [item_id, category, "1,234.50"]  # one value a line

        def layout(text: str, needle: str) -> list[float]:
            return browser.evaluate(f"{_LAYOUT}({json.dumps(text)}, {json.dumps(needle)})")

        price = layout(title, "1,234.50")
        assert price == sorted(price) and len(set(price)) == len(price)  # reads left to right, as written
        assert layout(title, "Jackets") == sorted(layout(title, "Jackets"))
        # The same values on one line, as the tooltip had them: the id's override reversed the rest.
        one_line = f"{item_id} · {category} · 1,234.50"
        price = layout(one_line, "1,234.50")
        assert price == sorted(price, reverse=True)
    finally:
        console.stop()
