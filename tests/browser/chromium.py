"""Headless Chromium for the report pages' browser test, driven over the DevTools protocol.

Debian's ``chromium`` package is installed by the test's setup when it is missing (:func:`binary`),
never by the harness. One browser serves every page; :meth:`Chromium.render` loads a ``file://``
URL at a fixed width and returns a full-page screenshot, what the page's own console and log
reported (messages, exceptions, resources that failed to load), and the boxes of the elements the
test looks at. Chromium's own background services are kept off the network: they are disabled,
every host name resolves to nothing and any proxied request goes to 127.0.0.1:9.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import proc, wait

NO_NETWORK = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--no-first-run",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
)

_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")

# Boxes of the page's summary banner and of every chart, and whether each image decoded.
FACTS_JS = """
(() => {
  const box = (el) => {
    if (!el) return null;
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
            shown: s.visibility !== 'hidden' && s.display !== 'none' && r.width > 0 && r.height > 0};
  };
  const summary = document.getElementById('summary');
  return {
    summary: box(summary),
    summaryText: summary ? summary.innerText : '',
    charts: [...document.querySelectorAll('svg.chart, img.chart')].map((el) => ({
      ...box(el), tag: el.tagName.toLowerCase(),
      decoded: el.tagName === 'IMG' ? (el.complete && el.naturalWidth > 0) : true})),
    tables: document.querySelectorAll('table').length,
    height: document.documentElement.scrollHeight,
  };
})()
"""


def binary() -> str:
    """Debian's chromium: found on PATH, or installed with apt-get (as root); a skip with the reason
    only when it cannot be installed here."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("headless Chromium is not installed and there is no apt-get to install Debian's chromium")
    if os.geteuid() != 0:
        pytest.skip(
            "headless Chromium is not installed and installing Debian's chromium needs root (apt-get)"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    argv = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    done = proc.run(argv, env=env, timeout=1800, check=False)
    if done.returncode != 0:  # a fresh image has no package lists yet
        proc.run([apt, "update"], env=env, timeout=900, check=False)
        done = proc.run(argv, env=env, timeout=1800, check=False)
    found = shutil.which("chromium")
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        pytest.skip(f"could not install Debian's chromium (apt-get exit {done.returncode}): {tail[0]}")
    return found


@dataclass
class Rendered:
    screenshot: Path
    console: list[str]  # console messages, exceptions and failed loads the page caused
    facts: dict[str, Any] = field(default_factory=dict)


class Chromium:
    """One headless browser (its own process group, profile and log); a context manager."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir
        self._popen: Any = None
        self._ws: Any = None
        self._next = 0

    @property
    def log(self) -> Path:
        return self.workdir / "chromium.log"

    def __enter__(self) -> Chromium:
        import websocket  # websocket-client

        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--headless",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.workdir / 'profile'}",
            *NO_NETWORK,
            "about:blank",
        ]
        self._popen = proc.spawn(argv, log_path=self.log, new_session=True, die_with_parent=True)
        try:
            url = wait.until(
                lambda: (
                    _LISTENING.search(self.log.read_text(errors="replace")) if self.log.exists() else None
                ),
                what="headless Chromium to print its DevTools address",
                timeout=120,
                interval=0.1,
            )
            self._ws = websocket.create_connection(url.group(1), timeout=60, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
            self._ws = None
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGTERM)
            try:
                self._popen.wait(30)
            except Exception:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(30)
        self._popen = None

    # ---- DevTools protocol (flattened sessions over the browser's socket)
    def _send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str = "",
        events: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if events is not None and "method" in reply:
                events.append(reply)

    def _until_event(self, name: str, session: str, events: list[dict[str, Any]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == name and e.get("sessionId") == session for e in events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"Chromium sent no {name} within {timeout:.0f} s; events: {[e['method'] for e in events][-10:]}"
                )
            self._ws.settimeout(left)
            events.append(json.loads(self._ws.recv()))
        self._ws.settimeout(60)

    def render(self, page: Path, shot: Path, *, width: int = 1280, height: int = 900) -> Rendered:
        """Load ``page``; a full-page screenshot to ``shot`` (at most 16000 px tall), console, facts."""
        events: list[dict[str, Any]] = []
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
                self._send(domain, session=session, events=events)
            self._send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session,
                events,
            )
            self._send("Page.navigate", {"url": page.resolve().as_uri()}, session, events)
            self._until_event("Page.loadEventFired", session, events, 60)
            facts = self._send(
                "Runtime.evaluate", {"expression": FACTS_JS, "returnByValue": True}, session, events
            )["result"]["value"]
            full = min(int(facts["height"]), 16000)
            png = self._send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": width, "height": full, "scale": 1},
                },
                session,
                events,
            )["data"]
            shot.write_bytes(base64.b64decode(png))
        finally:
            self._send("Target.closeTarget", {"targetId": target})
        return Rendered(shot, _console(events, session), facts)


def _console(events: list[dict[str, Any]], session: str) -> list[str]:
    out = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out.append(f"console.{p.get('type')}: {text}")
        elif e["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif e["method"] == "Log.entryAdded":
            entry = p.get("entry", {})
            out.append(f"log {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".strip())
    return out
