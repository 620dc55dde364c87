"""The browser softphone, in headless Chromium (Debian's), through a whole call.

Chromium's fake audio capture plays a WAV file as the microphone. The page is driven over the
DevTools protocol (a websocket), so no browser or driver is downloaded.
"""

import asyncio
import wave

import aiohttp
import pytest
from conftest import AUTH_TOKEN, ROOT, runner_settings
from devtools import chromium, needs_chromium, screenshot_dir

from pipecat_realtime_twilio.audio import ulaw_to_pcm16
from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.model import say_as_asked
from pipecat_realtime_twilio.testing.server import LocalServer
from pipecat_realtime_twilio.testing.sounds import silence, tone

pytestmark = pytest.mark.call

API_KEY = "console-key"


def microphone_wav(path) -> None:
    """A second of speech-like tone, then silence (Chromium loops the file)."""
    pcm = ulaw_to_pcm16(tone(1000) + silence(3000))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)


@needs_chromium
async def test_a_whole_call_from_the_browser_softphone(tmp_path):
    mic = tmp_path / "mic.wav"
    microphone_wav(mic)
    replies = say_as_asked(Reply(text="I hear you loud and clear."))
    async with RealtimeEmulator(
        replies=replies, transcripts=["Hello from the browser."]
    ) as emulator:
        server = LocalServer()
        settings = runner_settings(
            emulator,
            server.url,
            bots_dir=str(ROOT / "bots"),
            playground_token="pg-secret",
            runner_api_key=API_KEY,
        )
        server.app = create_app(settings, load_bots(settings.bots_dir))
        runner = server.app.state.runner
        async with server:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.url}/playground") as refused:
                    assert refused.status == 403  # the page wants the token

            async with chromium(
                tmp_path / "profile",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
                "--autoplay-policy=no-user-gesture-required",
                state="window.playground || null",
                size=(1000, 900),
            ) as page:
                await page.navigate(f"{server.url}/playground?token=pg-secret")
                await page.wait_for("document.querySelectorAll('#bot option').length > 0")
                # The console's look: its style sheet, inlined.
                assert (
                    await page.evaluate(
                        "getComputedStyle(document.querySelector('.topbar')).display"
                    )
                    == "flex"
                )
                await page.evaluate("document.getElementById('call').click()")

                # The greeting plays in the page, marks echoed as it plays.
                await page.wait_for("window.playground.playedMs > 1000", timeout=20)
                session = emulator.sessions[0]
                greeting = session.responses[0]
                assert greeting.reply.text.startswith("Hello! Thanks for calling")
                assert await page.evaluate("window.playground.marksEchoed") > 0
                # The level meter moves with the microphone's tone.
                await page.wait_for("window.playground.level > 0.3")
                assert await page.evaluate("document.getElementById('level').style.width") != "0%"

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

                # The live response latency: the runner's measure of the answer.
                await page.wait_for("window.playground.latencyMs.length > 0")
                call_sid = await page.evaluate("window.playground.callSid")
                # One read of the page (it polls on: a later answer could come in between),
                # then the runner's figures, which can only have grown since.
                shown_ms, latency = await page.evaluate(
                    "[window.playground.latencyMs, document.getElementById('latency').textContent]"
                )
                measured = runner.active[call_sid].agent.response_latencies_ms
                assert shown_ms == measured[: len(shown_ms)] and shown_ms[0] > 0
                assert latency == f"{round(shown_ms[-1])} ms"
                await page.screenshot(screenshot_dir(tmp_path) / "playground.png")

                # Hang up ends the call, and the page links to the call's page in the console.
                assert await page.evaluate("document.getElementById('call-link').hidden")
                await page.evaluate("document.getElementById('hangup').click()")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while not runner.finished and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert runner.finished[0].end_reason == "caller hung up"
                assert runner.active == {}
                assert emulator.validation_errors == []
                link = await page.evaluate("window.playground.consoleLink")
                assert link == f"{server.url}/console#/calls/{call_sid}"
                assert not await page.evaluate("document.getElementById('call-link').hidden")

                # The link opens the call's page (the key is asked once per tab).
                await runner.records.settle(timeout=10)
                await page.evaluate(f"sessionStorage.setItem('prt-console-key', '{API_KEY}')")
                await page.click("#call-link")
                await page.wait_for(
                    f"window.consoleState && window.consoleState.call && "
                    f"window.consoleState.call.call_sid === '{call_sid}'"
                )
                lines = await page.evaluate(
                    "[...document.querySelectorAll('#transcript li .text')].map(e => e.textContent)"
                )
                assert "Hello from the browser." in lines


async def test_playground_is_off_without_its_token(runner):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{runner.url}/playground") as response:
            assert response.status == 404
    assert AUTH_TOKEN  # the runner fixture runs with the default settings: no PLAYGROUND_TOKEN
