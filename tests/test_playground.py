"""The browser softphone, in headless Chromium (Debian's), through a whole call.

Chromium's fake audio capture plays a WAV file as the microphone. The page is driven over the
DevTools protocol (a websocket), so no browser or driver is downloaded.
"""

import asyncio
import json
import os
import shutil
import wave

import aiohttp
import pytest
import websockets
from conftest import AUTH_TOKEN, ROOT, free_port, runner_settings

from pipecat_realtime_twilio.audio import ulaw_to_pcm16
from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.server import LocalServer
from pipecat_realtime_twilio.testing.sounds import silence, tone

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.call,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("REQUIRE_CHROMIUM"),
        reason="Debian's chromium is not installed (.ci/run installs it)",
    ),
]


class DevTools:
    """The smallest DevTools protocol client: evaluate JavaScript in a page."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

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
        while loop.time() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        state = await self.evaluate("JSON.stringify(window.playground || null)")
        raise TimeoutError(f"{expression} never became true; page state: {state}")


def microphone_wav(path) -> None:
    """A second of speech-like tone, then silence (Chromium loops the file)."""
    pcm = ulaw_to_pcm16(tone(1000) + silence(3000))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)


async def devtools_page(port: int, process) -> str:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
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


async def test_a_whole_call_from_the_browser_softphone(tmp_path):
    assert CHROMIUM, "chromium is required (REQUIRE_CHROMIUM is set)"
    mic = tmp_path / "mic.wav"
    microphone_wav(mic)
    replies = say_as_asked(Reply(text="I hear you loud and clear."))
    async with RealtimeEmulator(
        replies=replies, transcripts=["Hello from the browser."]
    ) as emulator:
        server = LocalServer()
        settings = runner_settings(
            emulator, server.url, bots_dir=str(ROOT / "bots"), playground_token="pg-secret"
        )
        server.app = create_app(settings, load_bots(settings.bots_dir))
        runner = server.app.state.runner
        async with server:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.url}/playground") as refused:
                    assert refused.status == 403  # the page wants the token

            port = free_port()
            process = await asyncio.create_subprocess_exec(
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
                "--autoplay-policy=no-user-gesture-required",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={tmp_path / 'profile'}",
                "about:blank",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                async with websockets.connect(
                    await devtools_page(port, process), max_size=None
                ) as ws:
                    page = DevTools(ws)
                    await page.call("Page.enable")
                    await page.call("Page.navigate", url=f"{server.url}/playground?token=pg-secret")
                    await page.wait_for("document.querySelectorAll('#bot option').length > 0")
                    await page.evaluate("document.getElementById('call').click()")

                    # The greeting plays in the page, marks echoed as it plays.
                    await page.wait_for("window.playground.playedMs > 1000", timeout=20)
                    session = emulator.sessions[0]
                    greeting = session.responses[0]
                    assert greeting.reply.text.startswith("Hello! Thanks for calling")
                    assert await page.evaluate("window.playground.marksEchoed") > 0

                    # The page's microphone reaches the emulator: its speech gets an answer.
                    await page.wait_for(
                        "document.querySelectorAll('#transcript li.caller').length > 0 && "
                        "document.querySelectorAll('#transcript li.bot').length > 1",
                        timeout=30,
                    )
                    assert any(r.trigger == "vad" for r in session.responses)
                    shown = await page.evaluate(
                        "[...document.querySelectorAll('#transcript li')].map(li => li.textContent)"
                    )
                    assert "caller: Hello from the browser." in shown
                    assert "bot: I hear you loud and clear." in shown
                    assert session.config["audio"]["input"]["format"]["type"] == "audio/pcmu"

                    # Hang up ends the call.
                    await page.evaluate("document.getElementById('hangup').click()")
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 10
                    while not runner.finished and loop.time() < deadline:
                        await asyncio.sleep(0.05)
                    assert runner.finished[0].end_reason == "caller hung up"
                    assert runner.active == {}
                    assert emulator.validation_errors == []
            finally:
                process.kill()
                await process.wait()


async def test_playground_is_off_without_its_token(runner):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{runner.url}/playground") as response:
            assert response.status == 404
    assert AUTH_TOKEN  # the runner fixture runs with the default settings: no PLAYGROUND_TOKEN
