#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A real MCP server on 127.0.0.1 for tests, recording every request it gets.

The ``mcp`` package's ``MCPServer`` over Streamable HTTP, served by uvicorn in the
test's event loop; a bot declares it as an MCP server and the Realtime emulator
calls it as OpenAI would::

    crm = McpTestServer("crm")

    @crm.tool
    def lookup_customer(phone: str) -> str:
        \"\"\"Find a customer by phone number.\"\"\"
        return "Ada Lovelace, 3 open orders"

    async with crm:
        ...  # crm.url is http://127.0.0.1:PORT/mcp
    assert crm.calls[0].headers["authorization"] == "Bearer ..."
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat_realtime_twilio.testing.server import LocalServer


@dataclass
class McpRequest:
    """An HTTP request the server got.

    Parameters:
        http_method: ``POST``, ``GET`` or ``DELETE``.
        headers: Its headers, names in lower case.
        method: The JSON-RPC method (``initialize``, ``tools/list``, ``tools/call`` ...).
        params: The JSON-RPC params.
    """

    http_method: str
    headers: dict[str, str]
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def tool(self) -> str | None:
        """The tool called, for a ``tools/call``."""
        return self.params.get("name") if self.method == "tools/call" else None

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments of a ``tools/call``."""
        return self.params.get("arguments") or {}


class McpTestServer:
    """An MCP server with the tools a test gives it, on a free port of 127.0.0.1.

    Attributes:
        requests: Every HTTP request, in order.
    """

    def __init__(self, name: str = "test"):
        """Create the server (not started).

        Args:
            name: The server's name.

        Raises:
            RuntimeError: Without the ``mcp`` package.
        """
        try:
            from mcp.server.mcpserver import MCPServer
        except ImportError as e:
            raise RuntimeError("McpTestServer needs the 'mcp' package: pip install mcp") from e
        self.mcp = MCPServer(name, log_level="WARNING")
        self.requests: list[McpRequest] = []
        self._app = self.mcp.streamable_http_app()
        self._server = LocalServer(self._record, interface="asgi3")

    def tool(
        self, fn: Callable | None = None, *, name: str | None = None, read_only: bool = False
    ) -> Any:
        """Register a tool (a typed function with a docstring); use as ``@server.tool``.

        Args:
            fn: The function.
            name: The tool's name; the function's by default.
            read_only: Annotate it ``readOnlyHint``.

        Returns:
            The function (or a decorator).
        """
        from mcp.types import ToolAnnotations

        annotations = ToolAnnotations(readOnlyHint=True) if read_only else None

        def register(function: Callable) -> Callable:
            return self.mcp.tool(name=name, annotations=annotations)(function)

        return register(fn) if fn is not None else register

    @property
    def url(self) -> str:
        """The server's MCP endpoint, ``http://127.0.0.1:PORT/mcp``."""
        return f"{self._server.url}/mcp"

    @property
    def calls(self) -> list[McpRequest]:
        """The ``tools/call`` requests, in order."""
        return [request for request in self.requests if request.method == "tools/call"]

    async def start(self) -> None:
        """Start serving."""
        await self._server.start()

    async def stop(self) -> None:
        """Stop serving (the port stays bound to nobody: a server that is down)."""
        await self._server.stop()

    async def __aenter__(self) -> "McpTestServer":
        """Start serving."""
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        """Stop serving."""
        await self.stop()

    async def _record(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = McpRequest(http_method=scope["method"], headers=headers)
        self.requests.append(request)
        body = bytearray()

        async def recording_receive():
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    _read_rpc(request, bytes(body))
            return message

        await self._app(scope, recording_receive, send)


def _read_rpc(request: McpRequest, body: bytes) -> None:
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return
    if isinstance(data, dict):
        request.method = data.get("method")
        params = data.get("params")
        request.params = params if isinstance(params, dict) else {}
