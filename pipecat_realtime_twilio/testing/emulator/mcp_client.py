#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What OpenAI does with a session's MCP server: list its tools, call one (Streamable HTTP).

Each operation opens its own connection (the ``mcp`` package's client, imported only
when a session names an MCP server), sends the session's headers for the server,
and reports a failure as the ``mcp_call`` item's ``error`` would:
``{"type": "http_error", "code": status}`` for an HTTP error (502 when the server
could not be reached at all), ``{"type": "protocol_error", "code": ...}`` for a
JSON-RPC error, ``{"type": "tool_execution_error"}`` for a tool that returned an error.
"""

import asyncio
import json
from dataclasses import dataclass
from typing import Any

MCP_TIMEOUT_SECS = 10.0
"""Most seconds one MCP operation (connect, then list or call) may take."""

UNREACHABLE = 502
"""The ``http_error`` code of a server that could not be reached (no HTTP status)."""


class McpUnavailable(RuntimeError):
    """The ``mcp`` package is not installed (the message says how to install it)."""


class McpFailure(Exception):
    """An MCP operation failed; ``error`` is the ``mcp_call`` item's error for it."""

    def __init__(self, error: dict[str, Any]):
        """Initialize the failure.

        Args:
            error: ``{"type": ..., "message": ..., "code": ...}`` as the API words it.
        """
        super().__init__(error.get("message"))
        self.error = error


@dataclass
class McpOutcome:
    """What a tool call gave: its output text, or the error.

    Parameters:
        output: The tool's text output (None if it failed).
        error: The error, as the ``mcp_call`` item carries it (None if it answered).
    """

    output: str | None = None
    error: dict[str, Any] | None = None


def _modules() -> tuple[Any, Any, Any, Any]:
    try:
        import httpx2
        from mcp import Client, MCPError
        from mcp.client.streamable_http import streamable_http_client
    except ImportError as e:
        raise McpUnavailable(
            "the Realtime emulator calls MCP servers with the 'mcp' package: "
            "pip install 'mcp>=2.3,<3' (it is in the dev extra)"
        ) from e
    return httpx2, Client, MCPError, streamable_http_client


def _leaf(error: BaseException) -> BaseException:
    """The first error inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _as_failure(error: BaseException) -> McpFailure:
    httpx2, _, mcp_error, _ = _modules()
    error = _leaf(error)
    if isinstance(error, McpFailure):
        return error
    if isinstance(error, httpx2.HTTPStatusError):
        status = error.response.status_code
        return McpFailure({"type": "http_error", "code": status, "message": f"HTTP {status}"})
    if isinstance(error, mcp_error):
        return McpFailure({"type": "protocol_error", "code": error.code, "message": error.message})
    if isinstance(error, TimeoutError):
        message = f"no answer within {MCP_TIMEOUT_SECS:g} s"
    else:
        message = f"{type(error).__name__}: {error}"
    return McpFailure({"type": "http_error", "code": UNREACHABLE, "message": message})


async def _with_client(url: str, headers: dict[str, str], operation):
    httpx2, client_class, _, streamable_http_client = _modules()
    try:
        async with asyncio.timeout(MCP_TIMEOUT_SECS):
            async with httpx2.AsyncClient(
                headers=headers, timeout=httpx2.Timeout(MCP_TIMEOUT_SECS)
            ) as http:
                transport = streamable_http_client(url, http_client=http)
                async with client_class(transport, mode="legacy", cache=None) as client:
                    return await operation(client)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        raise _as_failure(e) from None


async def list_tools(url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """List an MCP server's tools.

    Args:
        url: The server's URL.
        headers: The headers to send.

    Returns:
        The tools as the ``mcp_list_tools`` item has them (``name``, ``input_schema``,
        ``description``, ``annotations``).

    Raises:
        McpFailure: If the server could not be reached or answered with an error.
        McpUnavailable: Without the ``mcp`` package.
    """

    async def operation(client) -> list[dict[str, Any]]:
        result = await client.list_tools()
        tools = []
        for tool in result.tools:
            entry: dict[str, Any] = {"name": tool.name, "input_schema": tool.input_schema}
            if tool.description:
                entry["description"] = tool.description
            if tool.annotations is not None:
                entry["annotations"] = tool.annotations.model_dump(mode="json", exclude_none=True)
            tools.append(entry)
        return tools

    return await _with_client(url, headers, operation)


async def call_tool(
    url: str, headers: dict[str, str], name: str, arguments: dict[str, Any]
) -> McpOutcome:
    """Call an MCP server's tool.

    Args:
        url: The server's URL.
        headers: The headers to send.
        name: The tool.
        arguments: Its arguments.

    Returns:
        The output, or the error (a tool's own error, or the failed request's).

    Raises:
        McpUnavailable: Without the ``mcp`` package.
    """

    async def operation(client) -> McpOutcome:
        result = await client.call_tool(name, arguments)
        texts = [
            part.text if hasattr(part, "text") else json.dumps(part.model_dump(mode="json"))
            for part in result.content
        ]
        text = "\n".join(texts)
        if result.is_error:
            return McpOutcome(error={"type": "tool_execution_error", "message": text})
        return McpOutcome(output=text)

    try:
        return await _with_client(url, headers, operation)
    except McpFailure as e:
        return McpOutcome(error=e.error)
