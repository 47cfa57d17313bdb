"""A headless Chromium driven through the DevTools protocol, to check and picture the plate page.

Used by the browser test, ``scripts/plate_page_screenshot.py`` and the dashboard benchmark. It
needs only a Chromium binary (Debian's ``chromium``) and tornado's websocket client, which
distributed already brings. The browser listens on 127.0.0.1 only, in a temporary profile that
:meth:`Browser.close` removes with the process.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserError(RuntimeError):
    """Chromium did not start, or the page did not answer."""


def find_chromium() -> str | None:
    """The Chromium binary: ``$HCSGRAPH_CHROMIUM``, else the first of :data:`CANDIDATES` on the PATH."""
    explicit = os.environ.get("HCSGRAPH_CHROMIUM")
    if explicit:
        return explicit if os.path.exists(explicit) else shutil.which(explicit)
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str | None = None, *, width: int = 1280, height: int = 900,
                 timeout: float = 30.0) -> None:
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium found (install Debian's chromium, or set HCSGRAPH_CHROMIUM)")
        self.width, self.height, self.timeout = width, height, timeout
        self._ids = itertools.count(1)
        self._profile = tempfile.mkdtemp(prefix="hcsgraph-chromium-")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hcsgraph-cdp", daemon=True)
        self._thread.start()
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: Any = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the page --------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Load ``url`` and wait until it has loaded."""
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return reply.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None, interval: float = 0.2) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
            except BrowserError as exc:
                last_error = exc
            time.sleep(interval)
        raise BrowserError(f"timed out waiting for {expression!r}" + (f" ({last_error})" if last_error else ""))

    def move_mouse(self, x: float, y: float) -> None:
        """Move the mouse to page coordinates (CSS pixels)."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=float(x), y=float(y))

    def screenshot(self, path: str | os.PathLike[str], clip: tuple[float, float, float, float] | None = None) -> Path:
        """A PNG at ``path`` of the whole page, or of ``clip`` (x, y, width, height in CSS pixels)."""
        if clip is None:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            clip = (0, 0, size[0], size[1])
        x, y, width, height = clip
        region = {"x": x, "y": y, "width": max(width, 1), "height": max(height, 1), "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=region, captureBeyondViewport=True)["data"]
        out = Path(path)
        out.write_bytes(base64.b64decode(data))
        return out

    # -- the protocol ----------------------------------------------------------------------
    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; returns its result."""
        future = asyncio.run_coroutine_threadsafe(self._call(method, params), self._loop)
        return future.result(self.timeout + 5)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ident = next(self._ids)
        await self._socket.write_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            raw = await asyncio.wait_for(self._socket.read_message(), self.timeout)
            if raw is None:
                raise BrowserError("Chromium closed the DevTools connection")
            message = json.loads(raw)
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})

    def _start(self) -> None:
        args = [
            self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}", "about:blank",
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
        port = self._port()
        pages = self._targets(port)
        url = next((t["webSocketDebuggerUrl"] for t in pages if t.get("type") == "page"), None)
        if url is None:
            raise BrowserError("Chromium opened no page")
        from tornado.websocket import websocket_connect

        async def connect() -> Any:
            return await websocket_connect(url, max_message_size=256 * 1024 * 1024)

        self._socket = asyncio.run_coroutine_threadsafe(connect(), self._loop).result(self.timeout)
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)

    def _port(self) -> int:
        """The DevTools port Chromium chose (it writes it to ``DevToolsActivePort`` in the profile)."""
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrowserError(f"Chromium exited with status {self._process.returncode} at start")
            try:
                first = marker.read_text().split("\n", 1)[0].strip()
                if first:
                    return int(first)
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise BrowserError("Chromium did not open its DevTools port")

    def _targets(self, port: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                    targets = json.load(reply)
                if any(t.get("type") == "page" for t in targets):
                    return targets
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrowserError("Chromium's DevTools endpoint did not answer")
            time.sleep(0.1)

    def close(self) -> None:
        """Stop Chromium, its connection and its profile."""
        if self._socket is not None:
            self._loop.call_soon_threadsafe(self._socket.close)
            self._socket = None
        if self._process is not None:
            _stop_group(self._process)
        self._process = None
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()
        shutil.rmtree(self._profile, ignore_errors=True)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop Chromium and its helper processes (its own process group, started with it)."""
    import signal

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
