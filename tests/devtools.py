"""Headless Chromium (Debian's) driven over the DevTools protocol, for the browser tests.

No browser or driver is downloaded: Debian's ``chromium`` is started with
``--remote-debugging-port`` and its page is driven through a websocket.
"""

import asyncio
import base64
import contextlib
import json
import os
import shutil
from pathlib import Path

import aiohttp
import pytest
import websockets
from conftest import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("REQUIRE_CHROMIUM"),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)
"""Skip a test without Chromium, unless REQUIRE_CHROMIUM is set (CI): then it fails."""

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class DevTools:
    """The smallest DevTools protocol client: evaluate JavaScript, click, take screenshots."""

    def __init__(self, ws, state: str = "null"):
        """Drive the page behind ``ws``.

        Args:
            ws: The page's DevTools websocket.
            state: A JavaScript expression shown when a wait times out.
        """
        self.ws = ws
        self.next_id = 0
        self.state = state

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                return message["result"]

    async def evaluate(self, expression: str):
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        error = None
        while loop.time() < deadline:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as e:  # e.g. the page is being replaced
                error, value = e, None
            if value:
                return value
            await asyncio.sleep(0.1)
        state = await self.evaluate(f"JSON.stringify({self.state})")
        raise TimeoutError(
            f"{expression} never became true (last error: {error}); page state: {state}"
        )

    async def navigate(self, url: str) -> None:
        """Open ``url`` and wait until its page has loaded."""
        await self.call("Page.navigate", url=url)
        page = url.split("#")[0]
        await self.wait_for(
            f"location.href.split('#')[0] === {json.dumps(page)}"
            " && document.readyState === 'complete'"
        )

    async def click(self, selector: str) -> None:
        """Click the element as a person does: the mouse, at its middle (a user gesture)."""
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def type_into(self, selector: str, text: str) -> None:
        """Put ``text`` in an input as typing would (the value, then an ``input`` event)."""
        await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" e.value = {json.dumps(text)};"
            " e.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )

    async def screenshot(self, path: Path) -> None:
        """Save the whole page (beyond the window too) as a PNG."""
        metrics = await self.call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = await self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))


async def _page_socket(port: int, process) -> str:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if process.returncode is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
            except aiohttp.ClientError:
                targets = []  # not listening yet
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            await asyncio.sleep(0.1)
    raise TimeoutError("chromium's DevTools did not come up")


@contextlib.asynccontextmanager
async def chromium(profile: Path, *flags: str, state: str = "null", size=(1280, 900)):
    """Headless Chromium with a fresh profile; yields the DevTools client of its page.

    Args:
        profile: A new folder for its ``--user-data-dir``.
        *flags: More command-line flags.
        state: A JavaScript expression shown when a wait times out.
        size: The window's width and height.
    """
    assert CHROMIUM, "chromium is required (REQUIRE_CHROMIUM is set)"
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        *flags,
        f"--window-size={size[0]},{size[1]}",
        f"--remote-debugging-port={port}",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with websockets.connect(await _page_socket(port, process), max_size=None) as ws:
            page = DevTools(ws, state)
            await page.call("Page.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride",
                width=size[0],
                height=size[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
    finally:
        process.kill()
        await process.wait()


def screenshot_dir(tmp_path: Path) -> Path:
    """Where a browser test writes its screenshots: ``CONSOLE_SCREENSHOTS``, else ``tmp_path``."""
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
