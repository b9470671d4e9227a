"""The console page in a real browser during a live run: broker, worker, `kairos console`, headless Chromium.

Chromium is driven over the DevTools protocol (tests/support/browser.py). The page is loaded once;
then events are produced, and the test watches pushes appear and their outcomes change in the DOM
while a marker set on ``window`` after the load survives (a reload would wipe it) and the main frame
never navigates again. A screenshot is saved under the test's tmp dir and, when
``KAIROS_TEST_ARTIFACTS`` is set, copied there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import free_port
from stream.contract import Event, EventContext
from stream.policy import in_holdout
from stream.simulator import SimConfig, World
from tests.support.browser import Browser, find_chromium
from tests.support.worker import ROOT, WorkerProcess, produce, settings_for, wait_for

pytestmark = pytest.mark.integration

T0 = 1_780_315_200.0  # 2026-06-01 12:00 UTC: daytime in UTC, night in Auckland (quiet hours)
SHARE = 0.3
SALT = "kairos-holdout-v1"
ENV = {
    "KAIROS_POLICY__THRESHOLD": "0.0",
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
    "KAIROS_POLICY__CART_ABANDONMENT_DELAY_SECONDS": "1e9",
    "KAIROS_POLICY__HOLDOUT_SHARE": str(SHARE),
    "KAIROS_POLICY__HOLDOUT_SALT": SALT,
    "KAIROS_WORKER__AUDIT_DECISIONS": "true",
    # Long enough to outlast the night: a push decided in quiet hours is then held, not dropped.
    "KAIROS_POLICY__PUSH_TTL_SECONDS": "86400",
}


def _users(prefix: str, n: int, holdout: bool) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        user = f"{prefix}-{i}"
        if in_holdout(user, SHARE, SALT) == holdout:
            out.append(user)
        i += 1
    return out


def _views(users: list[str], item: str, ts: float, zone: str | None = None) -> list[tuple[bytes, Event]]:
    context = EventContext(time_zone=zone) if zone else None
    out = []
    for u in users:
        for n in range(2):  # the second view is suppressed by the minimum gap
            event = Event(
                event_id=f"e-{u}-{ts}-{n}", user_id=u, type="view", item_id=item, ts=ts + n,
                session_id=f"s-{u}", context=context,
            )  # fmt: skip
            out.append((u.encode(), event))
    return out


class ConsoleProcess:
    """``kairos console`` as a child process."""

    def __init__(self, bootstrap: str, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {
            **os.environ,
            **ENV,
            "KAIROS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "KAIROS_CONSOLE__PORT": str(self.port),
            "KAIROS_CONSOLE__START": "earliest",
            "KAIROS_CONSOLE__UPDATE_SECONDS": "0.2",
        }
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "console"], env=env, cwd=ROOT, stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "chromium is not installed and could not be installed (deploy/install-test-deps.sh needs root "
            "and Debian's apt): the console's browser test cannot run"
        )
    return binary


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium, tmp_path / "chromium-profile")
    yield b
    b.close()


PUSH_ROWS = "document.querySelectorAll('#pushes tbody tr')"


def _texts(selector: str) -> str:
    """A JavaScript expression: the text of every element ``selector`` matches."""
    return f"[...document.querySelectorAll('{selector}')].map(e => e.textContent)"


def _rows(browser: Browser) -> int:
    return int(browser.evaluate(f"{PUSH_ROWS}.length"))


def test_the_page_shows_pushes_decisions_and_outcomes_live_without_a_reload(
    own_broker: str, model_dir: Path, tmp_path: Path, browser: Browser
):
    started = time.monotonic()
    broker = own_broker
    world = World(SimConfig(seed=7, n_users=1500, n_items=600))
    catalog = world.initial_catalog()
    topics = settings_for(broker).topics
    produce(broker, topics.catalog, [(c.item_id.encode(), c) for c in catalog])
    items = [c.item_id for c in catalog if c.stock > 0 and c.promotion is None]

    worker = WorkerProcess(broker, tmp_path / "worker", model_dir, ENV, app_id="kairos-console-test").start()
    console = ConsoleProcess(broker, tmp_path / "console.log")
    try:
        worker.wait_ready()
        wait_for(console.healthy, 30, what="the console to answer")

        browser.navigate(console.url)
        browser.wait_for("window.kairosConsole && window.kairosConsole.messages >= 1", 20, "first update")
        browser.evaluate("window.__loadedOnce = 'still-here'; true")
        assert _rows(browser) == 0
        assert browser.evaluate("document.getElementById('live-text').textContent") == "live"

        # Wave 1: three treated users view an item (a push each), one holdout user (suppressed).
        first = _users("u-w1", 3, holdout=False)
        held_out = _users("u-h", 1, holdout=True)
        produce(broker, topics.events, _views(first + held_out, items[3], T0))
        browser.wait_for(f"{PUSH_ROWS}.length >= {len(first)}", 60, "wave 1")
        shown = browser.evaluate(_texts("#pushes tbody tr"))
        assert all(any(u in row for row in shown) for u in first)
        assert not any(held_out[0] in row for row in shown)  # the holdout user got nothing
        assert any("in session" in row and "≥" in row for row in shown)  # trigger and score vs threshold

        # Wave 2, on the same page: more pushes, one held for the user's quiet hours, and feedback.
        second = _users("u-w2", 2, holdout=False)
        night = _users("u-nz", 1, holdout=False)
        push_id = browser.evaluate("document.querySelector('#pushes tbody tr').dataset.pushId")
        target_user = next(u for u in first if u in browser.evaluate(
            f"document.querySelector('#pushes tbody tr[data-push-id=\"{push_id}\"]').textContent"
        ))  # fmt: skip
        feedback = [
            Event(event_id="f1", user_id=target_user, type="push_open", item_id=items[3], ts=T0 + 60,
                  push_id=push_id),
            Event(event_id="f2", user_id=target_user, type="push_click", item_id=items[3], ts=T0 + 61,
                  push_id=push_id),
            Event(event_id="f3", user_id=target_user, type="purchase", item_id=items[3], ts=T0 + 120,
                  price=25.0, quantity=2),
        ]  # fmt: skip
        produce(broker, topics.events, _views(second, items[5], T0 + 300))
        produce(broker, topics.events, _views(night, items[7], T0 + 300, zone="Pacific/Auckland"))
        produce(broker, topics.events, [(target_user.encode(), e) for e in feedback])

        total = len(first) + len(second)
        browser.wait_for(f"{PUSH_ROWS}.length >= {total}", 60, "wave 2")
        browser.wait_for(
            f"(document.querySelector('#pushes tbody tr[data-push-id=\"{push_id}\"]')||{{dataset:{{}}}})"
            ".dataset.status === 'open click purchase'",
            60,
            "the first push's outcome to update in place",
        )
        browser.wait_for(
            f"{_texts('#decisions tbody tr.o-held')}.some(text => text.includes('quiet'))",
            30,
            "a decision held for quiet hours",
        )
        reasons = browser.evaluate(_texts("#reasons tbody tr"))
        print("held and suppressed on the page:", reasons)
        assert any(r.startswith("held") and "quiet hours" in r for r in reasons)
        row = browser.evaluate(_texts("#triggers tbody tr[data-trigger=in_session] td"))
        assert row[1:6] == [str(total), "1", "1", "0", "1"]  # pushes, opens, clicks, dismissed, purchases
        assert row[6] == "50.00"  # revenue: 2 x 25.00
        holdout = browser.evaluate("document.getElementById('holdout').textContent")
        assert "users seen" in holdout and "purchases per user" in holdout

        # The same document all along: no reload, no second navigation of the main frame.
        assert browser.evaluate("window.__loadedOnce") == "still-here"
        assert browser.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert browser.evaluate("window.kairosConsole.messages") >= 3
        assert browser.evaluate("document.getElementById('live-text').textContent") == "live"
        navigations = [
            e for e in browser.events
            if e["method"] == "Page.frameNavigated" and not e["params"]["frame"].get("parentId")
        ]  # fmt: skip
        assert len(navigations) <= 1  # the initial load at most (it may precede Page.enable's events)

        shot = browser.screenshot(tmp_path / "console.png")
        assert shot.stat().st_size > 10_000
        artefacts = os.environ.get("KAIROS_TEST_ARTIFACTS")
        if artefacts:
            Path(artefacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(artefacts) / "console.png")
        print(f"console screenshot: {shot} ({time.monotonic() - started:.0f}s)")
    except Exception:
        print("worker log:", worker.tail_log())
        print("console log:", console.log_path.read_text(errors="replace")[-3000:])
        print("chromium log:", browser.log())
        raise
    finally:
        console.stop()
        worker.stop()
