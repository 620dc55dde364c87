"""What a hostile stranger can do over HTTP, refused cheaply: big or slow bodies, slow or big
headers, idle connections, huge websocket messages, log floods, and holding the exit open.

Over real sockets, against the runner as `serve` runs it (runner.server's options). No test
asserts a tight timing: each asserts what came back, in what order, and how much was sent.
"""

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import (
    AUTH_TOKEN,
    ROOT,
    LocalServer,
    free_port,
    phone_call,
    runner_settings,
    serve_env,
    spawn,
    wait_for_port,
)
from loguru import logger

from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.logs import Throttled
from pipecat_realtime_twilio.phone import requests as body_reader
from pipecat_realtime_twilio.phone.requests import MAX_WEBHOOK_BODY_BYTES
from pipecat_realtime_twilio.phone.serializer import MAX_MESSAGE_BYTES
from pipecat_realtime_twilio.runner import server as runner_server
from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import load_bots
from pipecat_realtime_twilio.runner.operator_api import MAX_API_BODY_BYTES
from pipecat_realtime_twilio.runner.server import (
    GRACEFUL_SHUTDOWN_SECS,
    MAX_HEADER_BYTES,
    HttpLimits,
    OncePerInterval,
    http_protocol,
    server_options,
)
from pipecat_realtime_twilio.settings import Settings, load_settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator, Reply
from pipecat_realtime_twilio.testing.model import say_as_asked, words_to_say
from pipecat_realtime_twilio.testing.sounds import silence, tone

call = pytest.mark.call

MIB = 1024 * 1024
TRICKLE = 300
"""Bytes a trickling client sends, one every 0.2 s: a minute's worth."""

IMPLEMENTATIONS = ["h11", *(["httptools"] if importlib.util.find_spec("httptools") else [])]
"""uvicorn's HTTP protocols here: h11 always, httptools when installed (uvicorn then uses it)."""


#
# raw HTTP
#


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def head(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def status_of(reader: asyncio.StreamReader, timeout: float = 20.0) -> int:
    """The status of the answer (its first line), or 0 if the connection closed first."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (ConnectionError, OSError):
        return 0
    return int(line.split()[1]) if line else 0


async def closes(reader: asyncio.StreamReader, timeout: float = 20.0) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        pass
    return True


async def trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, every: float = 0.2
) -> tuple[int, bytes | None]:
    """Send ``TRICKLE`` bytes one at a time until the server answers or closes.

    Returns:
        The bytes sent, and what first came back (b"" for a close; None if nothing did).
    """
    answer = asyncio.ensure_future(reader.read(65536))
    sent = 0
    try:
        while sent < TRICKLE and not answer.done():
            try:
                writer.write(b"x")
                await writer.drain()
            except (ConnectionError, OSError):
                break
            sent += 1
            await asyncio.wait([answer], timeout=every)
        await asyncio.wait([answer], timeout=5)
        if not answer.done():
            return sent, None
        return sent, b"" if answer.exception() is not None else answer.result()
    finally:
        answer.cancel()
        writer.close()


@contextlib.asynccontextmanager
async def serving(emulator, *, http: str = "auto", header_timeout: float = 10.0, **settings):
    """The runner on a local port with these settings, as `serve` runs it."""
    limits = HttpLimits(header_timeout, settings.get("http_idle_timeout_secs", 5.0))
    server = LocalServer(http=http_protocol(limits, http))
    config = runner_settings(emulator, server.url, **settings)
    server.app = create_app(config, load_bots(config.bots_dir))
    async with server:
        yield server


#
# settings and options
#


def test_the_server_options_bound_messages_headers_and_the_shutdown():
    settings = Settings(_env_file=None, http_header_timeout_secs=3, http_idle_timeout_secs=0.5)
    options = server_options(settings)
    assert options["ws_max_size"] == MAX_MESSAGE_BYTES == 64 * 1024
    assert options["timeout_graceful_shutdown"] == GRACEFUL_SHUTDOWN_SECS
    assert options["h11_max_incomplete_event_size"] == MAX_HEADER_BYTES
    assert options["http"].limits == HttpLimits(3.0, 0.5)
    defaults = server_options()["http"].limits  # LocalServer's: the settings' defaults
    assert (defaults.header_timeout_secs, defaults.idle_timeout_secs) == (10.0, 5.0)


@pytest.mark.parametrize(
    "name", ["HTTP_HEADER_TIMEOUT_SECS", "HTTP_BODY_TIMEOUT_SECS", "HTTP_IDLE_TIMEOUT_SECS"]
)
@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_wrong_http_timeout_stops_startup_naming_it(name, value):
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **{name.lower(): value})
    message = str(refused.value)
    assert name in message and "\n" not in message


#
# bodies: checked before they are read
#


@call
@pytest.mark.parametrize("http", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "signature, status", [(None, 403), ("bogus", 413)], ids=["unsigned", "bogus signature"]
)
async def test_an_8_mib_webhook_is_refused_before_its_body_is_read(
    emulator, http, signature, status
):
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(8 * MIB)}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    async with serving(emulator, http=http) as server:
        reader, writer = await connect(server.port)
        writer.write(head("POST", "/incoming", headers) + b"a=b&" * 1024)  # 4 KiB of 8 MiB
        await writer.drain()
        # The answer comes though the rest of the body never will; then the connection closes.
        assert await status_of(reader) == status
        assert await closes(reader)
        writer.close()


@call
@pytest.mark.parametrize("http", IMPLEMENTATIONS)
async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_cap(emulator, http):
    headers = {"Transfer-Encoding": "chunked", "X-Twilio-Signature": "bogus"}
    chunk = b"a=b&" * 4096  # 16 KiB
    async with serving(emulator, http=http) as server:
        reader, writer = await connect(server.port)
        writer.write(head("POST", "/incoming", headers))
        sent = 0
        while sent <= MAX_WEBHOOK_BODY_BYTES:  # one chunk past the cap, then nothing more
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        await writer.drain()
        assert await status_of(reader) == 413  # without the rest, nor the body's end
        assert await closes(reader)
        writer.close()


@call
async def test_the_operator_api_checks_the_key_then_the_size_before_reading(emulator):
    async with serving(emulator, runner_api_key="operator-key") as server:
        for key, status in [("wrong", 401), ("operator-key", 413)]:
            reader, writer = await connect(server.port)
            headers = {"Authorization": f"Bearer {key}", "Content-Length": str(8 * MIB)}
            writer.write(head("POST", "/calls", headers) + b"{" + b" " * 1024)
            await writer.drain()
            assert await status_of(reader) == status
            assert await closes(reader)  # the unread body is not read either
            writer.close()
        async with httpx.AsyncClient(base_url=server.url) as client:
            big = {"to": "+15550001111", "pad": "x" * MAX_API_BODY_BYTES}
            answer = await client.post(
                "/calls", json=big, headers={"Authorization": "Bearer operator-key"}
            )
            assert answer.status_code == 413
            answer = await client.post(
                "/calls", content=b"not json", headers={"Authorization": "Bearer operator-key"}
            )
            assert answer.status_code == 400


@call
async def test_a_signed_webhook_is_answered_as_before(caller):
    result = await caller.dial()
    assert result.stream_url and "token" in result.parameters


@call
async def test_large_unsigned_posts_during_a_call_are_refused_and_the_caller_hears_no_gap():
    def long_lines(session, trigger):
        return Reply(text=words_to_say(session, trigger) or "Go on.", duration_ms=6000)

    async with phone_call(replies=long_lines) as (_, runner, caller):
        await caller.call()
        await caller.wait_heard(500)  # the six-second greeting plays
        port = int(caller.server_url.rsplit(":", 1)[1])
        flood = await spawn(
            "-c", FLOOD, str(port), "20", str(8 * MIB), cwd=ROOT, env=dict(os.environ), capture=True
        )
        out, err = await asyncio.wait_for(flood.communicate(), 60)
        flood_ended = asyncio.get_running_loop().time()
        assert flood.returncode == 0, err.decode()
        results = json.loads(out)
        assert [status for status, _ in results] == ["403"] * 20
        assert all(sent > 0 for _, sent in results)  # each was sending its body, not just headers
        await caller.wait_quiet(timeout=20)
        last_audio = max(t for t, played, _ in caller.playback if played)
        assert last_audio > flood_ended  # the greeting played all through the flood
        assert caller.gaps(min_ms=100) == []


FLOOD = r"""
import asyncio, json, sys

port, count, size = map(int, sys.argv[1:4])


async def post():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /incoming HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % size
    )

    async def send():  # all of it, as fast as the server takes it
        chunk, sent = b"a=b&" * 16384, 0
        try:
            while sent < size:
                writer.write(chunk[: size - sent])
                sent += min(len(chunk), size - sent)
                await writer.drain()
        except OSError:
            pass
        return sent

    sending = asyncio.create_task(send())
    try:
        status = (await asyncio.wait_for(reader.readline(), 60)).split(b" ")[1].decode()
    except (OSError, IndexError, TimeoutError) as e:
        status = type(e).__name__
    sent = await sending
    writer.close()
    return status, sent


async def main():
    print(json.dumps(await asyncio.gather(*(post() for _ in range(count)))))


asyncio.run(main())
"""
"""A stranger's flood: COUNT concurrent unsigned POSTs of SIZE bytes to /incoming on PORT."""


#
# slow clients
#


@call
@pytest.mark.parametrize("http", IMPLEMENTATIONS)
@pytest.mark.parametrize("sending", ["trickling headers", "nothing"])
async def test_a_client_slow_to_send_its_headers_is_disconnected(emulator, http, sending):
    async with serving(emulator, http=http, header_timeout=1.0) as server:
        reader, writer = await connect(server.port)
        if sending == "nothing":
            assert await closes(reader, timeout=30)
            writer.close()
            return
        writer.write(b"POST /incoming HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sent, answer = await trickle(reader, writer)
        assert answer == b"" and sent < TRICKLE  # closed, without an answer, long before the end


@call
@pytest.mark.parametrize("http", IMPLEMENTATIONS)
async def test_the_second_request_on_a_connection_has_the_same_header_deadline(emulator, http):
    async with serving(emulator, http=http, header_timeout=1.0) as server:
        reader, writer = await connect(server.port)
        writer.write(head("GET", "/healthz", {}))
        assert await status_of(reader) == 200
        await reader.readuntil(b'"ok"}')
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        sent, answer = await trickle(reader, writer)
        assert answer == b"" and sent < TRICKLE


@call
@pytest.mark.parametrize("http", IMPLEMENTATIONS)
async def test_headers_over_the_bound_are_refused_with_431(emulator, http):
    async with serving(emulator, http=http) as server:
        reader, writer = await connect(server.port)
        writer.write(head("POST", "/incoming?q=" + "x" * 60_000, {}))
        assert await status_of(reader) == 431
        assert await closes(reader)
        writer.close()
        reader, writer = await connect(server.port)  # one huge header, sent in pieces
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Big: ")
        for _ in range(8):
            writer.write(b"y" * 4096)
        await writer.drain()
        assert await status_of(reader) == 431
        writer.close()


@call
@pytest.mark.parametrize("http", IMPLEMENTATIONS)
async def test_an_idle_keep_alive_connection_is_closed(emulator, http):
    async with serving(emulator, http=http, http_idle_timeout_secs=0.5) as server:
        reader, writer = await connect(server.port)
        writer.write(head("GET", "/healthz", {}))
        assert await status_of(reader) == 200
        assert await closes(reader, timeout=30)
        writer.close()


@call
async def test_a_trickling_body_gets_408(emulator):
    async with serving(emulator, http_body_timeout_secs=1.0) as server:
        reader, writer = await connect(server.port)
        headers = {"X-Twilio-Signature": "bogus", "Content-Length": str(TRICKLE)}
        writer.write(head("POST", "/incoming", headers))
        sent, answer = await trickle(reader, writer)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408 ") and sent < TRICKLE


@call
async def test_a_websocket_message_over_64_kib_closes_the_stream_before_it_is_read():
    async with phone_call() as (_, runner, caller):
        await caller.call()
        await caller.wait_heard(200)
        # A masked text frame announcing 1 MiB, of which only 1 KiB is ever sent.
        frame = struct.pack("!BBQ", 0x81, 0x80 | 127, MIB) + b"mask" + b"x" * 1024
        caller._require_ws().transport.write(frame)  # under the websocket library's feet
        await caller.wait_ended(timeout=10)
        assert caller.close_code == 1009  # message too big, said by the server


#
# SIGTERM with slow clients connected
#


@call
async def test_sigterm_exits_within_the_drain_timeout_while_clients_trickle(tmp_path):
    async with RealtimeEmulator() as emulator:
        port = free_port()
        env = serve_env(
            emulator,
            port,
            tmp_path,
            DRAIN_TIMEOUT_SECS="2",
            HTTP_HEADER_TIMEOUT_SECS="120",  # only the shutdown can end them
            HTTP_BODY_TIMEOUT_SECS="120",
        )
        process = await spawn("-m", "pipecat_realtime_twilio", "serve", cwd=tmp_path, env=env)
        tricklers = []
        try:
            await wait_for_port(port, process)
            slow_head = await connect(port)
            slow_head[1].write(b"POST /incoming HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow_body = await connect(port)
            headers = {"X-Twilio-Signature": "bogus", "Content-Length": str(TRICKLE)}
            slow_body[1].write(head("POST", "/incoming", headers))
            tricklers = [asyncio.create_task(trickle(*c)) for c in (slow_head, slow_body)]
            await asyncio.sleep(1.0)
            assert not any(t.done() for t in tricklers)  # both still trickling
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout=40) == 0
            for sent, _ in await asyncio.gather(*tricklers):
                assert sent < TRICKLE  # cut off by the exit, long before the end
        finally:
            for task in tricklers:
                task.cancel()
            if process.returncode is None:
                process.kill()
                await process.wait()


#
# logs
#


@call
async def test_refused_requests_write_a_short_rate_limited_log(runner, monkeypatch):
    monkeypatch.setattr(body_reader, "_refused", Throttled())
    monkeypatch.setattr(runner_server, "_closed", Throttled())
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{time} | {level: <8} | {message}")
    try:
        async with httpx.AsyncClient(base_url=runner.url) as client:
            for query, headers in [
                ("x" * 60_000, {}),  # over the header bound
                ("x" * 8_000, {}),  # unsigned
                ("x" * 8_000, {"X-Twilio-Signature": "bogus"}),  # wrongly signed
            ]:
                for _ in range(100):
                    answer = await client.post(
                        f"/incoming?q={query}", data={"a": "b"}, headers=headers
                    )
                    assert answer.status_code in (403, 431)
    finally:
        logger.remove(sink)
    text = "".join(lines)
    assert len(text) < 5000, text[:2000]
    assert "xxxxxxxxxx" not in text
    assert "Refused POST /incoming (query of 8002 chars): no X-Twilio-Signature" in text
    assert "Refused POST /incoming (query of 8002 chars): wrong X-Twilio-Signature" in text
    assert "headers over" in text


@call
async def test_garbage_requests_write_one_uvicorn_warning_not_one_each(runner, monkeypatch):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    errors = logging.getLogger("uvicorn.error")
    [limiter] = [f for f in errors.filters if isinstance(f, OncePerInterval)]
    monkeypatch.setattr(limiter, "_last", {})  # other tests' garbage does not count
    errors.addHandler(handler)
    try:
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", runner.port)
            writer.write(b"\x16\x03\x01 not HTTP at all\r\n\r\n")
            await writer.drain()
            assert await status_of(reader) in (0, 400)
            writer.close()
    finally:
        errors.removeHandler(handler)
    invalid = [r for r in records if "Invalid HTTP request" in r.getMessage()]
    assert 1 <= len(invalid) <= 2, [r.getMessage() for r in records]


#
# behind nginx (docs/nginx.conf)
#

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@call
async def test_a_call_through_nginx_with_the_documented_config(tmp_path):
    if NGINX is None:
        if os.environ.get("REQUIRE_NGINX") == "1":
            pytest.fail("nginx is not installed (apt install nginx), and REQUIRE_NGINX=1")
        pytest.skip("nginx is not installed (apt install nginx)")
    replies = say_as_asked(Reply(text="I heard you."))
    async with RealtimeEmulator(replies=replies) as emulator:
        proxy_port = free_port()
        public = f"http://127.0.0.1:{proxy_port}"  # PUBLIC_URL: nginx's address
        server = LocalServer(**server_options())
        settings = runner_settings(emulator, public)
        server.app = create_app(settings, load_bots(settings.bots_dir))
        async with server:
            config = render_nginx_conf(tmp_path, listen=proxy_port, runner_port=server.port)
            with open(tmp_path / "error.log", "wb") as errors:
                nginx = subprocess.Popen(
                    [NGINX, "-p", str(tmp_path), "-c", str(config), "-e", "stderr"], stderr=errors
                )
            try:
                await wait_for_port(proxy_port, timeout=20)
                async with TwilioCaller(
                    server_url=public, public_url=public, auth_token=AUTH_TOKEN
                ) as caller:
                    await caller.call()  # the webhook, then the media stream, through nginx
                    await caller.wait_quiet(timeout=20)
                    greeted = len(caller.heard)
                    await caller.say(tone(600) + silence(700))
                    await caller.wait_quiet(after=greeted, timeout=20)  # the bot's answer
                    await caller.hangup()
                record = await wait_record(server.app.state.runner, caller.call_sid)
                assert [turn["role"] for turn in record.transcript][:1] == ["bot"]
                assert record.end_reason == "caller hung up"
                async with httpx.AsyncClient(base_url=public) as client:
                    assert (await client.get("/metrics")).status_code == 404  # not public
                    assert (await client.get("/readyz")).status_code == 200
                    big = await client.post(
                        "/incoming",
                        content=b"x" * (MAX_WEBHOOK_BODY_BYTES + 1),
                        headers={"X-Twilio-Signature": "bogus"},
                    )
                    assert big.status_code == 413 and "nginx" in big.text  # nginx said it
                    flood = await asyncio.gather(
                        *(client.post("/incoming", data={"a": "b"}) for _ in range(300))
                    )
                    statuses = {answer.status_code for answer in flood}
                    assert statuses == {403, 429}  # the runner refuses some, nginx the rest
            finally:
                nginx.terminate()
                nginx.wait(10)


async def wait_record(runner, call_sid: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = next((r for r in runner.finished if r.call_sid == call_sid), None)
        if record is not None:
            return record
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no record of {call_sid}")


def render_nginx_conf(folder: Path, *, listen: int, runner_port: int) -> Path:
    """docs/nginx.conf as a whole nginx configuration on local ports, without TLS."""
    text = (ROOT / "docs" / "nginx.conf").read_text()
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{listen};")
    text = text.replace("listen [::]:443 ssl;", "")
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("ssl_"))
    text = text.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{runner_port};")
    text = text.replace("bot.example.com", "127.0.0.1")
    (folder / "logs").mkdir()
    config = folder / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""  # its temporary files are in our folder
    config.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {folder}/nginx.pid;\nerror_log stderr warn;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n"
        f"  proxy_temp_path {folder}/proxy;\n  fastcgi_temp_path {folder}/fastcgi;\n"
        f"  uwsgi_temp_path {folder}/uwsgi;\n  scgi_temp_path {folder}/scgi;\n{text}\n}}\n"
    )
    return config
