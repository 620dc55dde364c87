#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Run an ASGI app with uvicorn on a local port inside the current event loop."""

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from pipecat_realtime_twilio.runner.server import server_options


class _InProcessServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process hosting it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers."""
        yield


class LocalServer:
    """An ASGI app served by uvicorn on 127.0.0.1, started and stopped in-process.

    It serves as ``pipecat-realtime-twilio serve`` does, with the runner's
    :func:`~pipecat_realtime_twilio.runner.server.server_options` (bounded
    websocket messages and request heads, header and idle timeouts, graceful
    shutdown) at the settings' defaults, unless ``uvicorn_options`` say otherwise.

    Example::

        async with LocalServer(app) as server:
            print(server.url)  # http://127.0.0.1:54321
    """

    def __init__(self, app=None, *, host: str = "127.0.0.1", port: int = 0, **uvicorn_options):
        """Initialize the server and bind its port (so :attr:`url` is known before the app).

        Args:
            app: The ASGI application to serve; may be set later as :attr:`app`, before start.
            host: Interface to bind.
            port: Port to bind; 0 picks a free one.
            **uvicorn_options: ``uvicorn.Config`` options, over the runner's (e.g.
                ``**server_options(settings)`` for a runner's own timeouts).
        """
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.app = app
        self._options = {**server_options(), "lifespan": "on", **uvicorn_options}
        self._server: _InProcessServer | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        """The HTTP origin of the server, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The websocket origin of the server, e.g. ``ws://127.0.0.1:54321``."""
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> None:
        """Start serving and wait until the server accepts connections."""
        if self.app is None:
            raise RuntimeError("LocalServer has no app to serve")
        self._server = _InProcessServer(uvicorn.Config(self.app, **self._options))
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # surfaces the startup error
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving and wait for the server to finish."""
        if self._task is None or self._server is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, timeout=10)
        except TimeoutError:
            self._server.force_exit = True
            await self._task
        self._task = None

    async def __aenter__(self) -> "LocalServer":
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        """Stop the server."""
        await self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_for_port(port: int, process=None, timeout: float = 60.0) -> None:
    """Wait until something listens on ``port`` of 127.0.0.1.

    Args:
        port: The port.
        process: An ``asyncio`` subprocess expected to listen; if it exits first, fail early.
        timeout: Seconds to wait at most.

    Raises:
        RuntimeError: If ``process`` exited.
        TimeoutError: If nothing listened in time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if process is not None and process.returncode is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listened on {port} within {timeout:.0f} s")
