#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""MCP servers as Realtime tools: the Realtime API calls a remote MCP server for the model.

A bot lists MCP servers among its tools; the agent sends each as a tool of type
``mcp`` in ``session.update`` and OpenAI connects to the server, lists its tools and
calls them during the conversation (nothing runs in the runner)::

    crm = McpServer(
        label="crm",
        url="https://crm.example.com/mcp",
        allowed_tools=["lookup_customer", "cancel_order"],
        approval=["cancel_order"],
        headers={"Authorization": "Bearer ${CRM_TOKEN}"},
    )
    RealtimeAgent(instructions=..., tools=[crm, end_call()])

A prompt bot lists the same under ``mcp:`` in its front matter.

- ``url``: ``https://`` only (``http://`` for 127.0.0.1 or localhost, in tests).
- ``headers``: ``${VAR}`` in a value is read from the environment when the call
  starts; a variable that is not set is an error when the bot is loaded (and when a
  call starts). Header values are never logged, shown or put in an error.
- ``approval``: ``never`` (the default: the API calls any allowed tool), ``always``,
  or a list of tool names. Nobody can click "approve" on a phone line, so a tool
  that needs approval needs the *caller's* consent: the model tells the caller what
  it is about to do and asks; the caller's yes or no reaches the API through the
  ``confirm_tool_call`` function tool the agent adds (see
  :mod:`~pipecat_realtime_twilio.agent.mcp_events`). A request for a tool the bot
  did not list is approved by the agent at once.
"""

import os
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from openai.types.realtime.realtime_tools_config_union import Mcp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts an ``http://`` MCP server may have (a test server on this machine)."""

_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class McpHeaderError(ValueError):
    """A header's environment variable is missing at call time (the message names it)."""


def _nested(key: str, message: str, **values: object) -> PydanticCustomError:
    """An error about the nested key ``key`` (e.g. a header's name)."""
    return PydanticCustomError("nested", message, {"key": key, **values})


def header_variables(value: str) -> list[str]:
    """The environment variables a header value reads (``${VAR}``), in order.

    Args:
        value: The header value as written.

    Returns:
        The variable names.

    Raises:
        ValueError: For a ``${...}`` that holds no variable name.
    """
    names = _VARIABLE.findall(value)
    for name in names:
        if not _VARIABLE_NAME.fullmatch(name):
            raise ValueError(f"'${{{name}}}' is no environment variable (letters, digits, _)")
    return names


class McpServer(BaseModel):
    """A remote MCP server whose tools the model may call (a Realtime tool of type ``mcp``).

    Parameters:
        label: The server's label (``server_label``): letters, digits, ``_`` and ``-``.
        url: The server's URL: ``https://``, or ``http://`` on 127.0.0.1/localhost.
        allowed_tools: The tools the model may use; None: all the server lists.
        approval: ``"never"``, ``"always"``, or the tools that need the caller's consent.
        headers: HTTP headers OpenAI sends to the server; ``${VAR}`` in a value is read
            from the environment when the call starts (values are never shown).
        description: What the server is for (``server_description``), for the model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    url: str
    allowed_tools: list[str] | None = None
    approval: Literal["never", "always"] | list[str] = "never"
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    description: str | None = None

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _LABEL.fullmatch(value):
            raise PydanticCustomError(
                "label", "{value} must be 1 to 64 letters, digits, _ or -", {"value": repr(value)}
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and host:
            return value
        if parts.scheme == "http" and host in LOCAL_HOSTS:
            return value
        raise PydanticCustomError(
            "url",
            "{value} must be an https:// URL (http:// only for 127.0.0.1 or localhost)",
            {"value": repr(value)},
        )

    @field_validator("allowed_tools")
    @classmethod
    def _tool_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            _check_names(value, "allowed_tools")
        return value

    @field_validator("approval", mode="before")
    @classmethod
    def _approval(cls, value: object) -> object:
        if isinstance(value, list):
            _check_names(value, "approval")
            return value
        if value in ("never", "always"):
            return value
        raise PydanticCustomError(
            "approval",
            "must be never, always, or a list of tool names, not {value}",
            {"value": repr(value)},
        )

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise _nested(name, "is no HTTP header name")
            try:
                variables = header_variables(text)
            except ValueError as e:
                raise _nested(name, str(e)) from None
            missing = [v for v in variables if v not in os.environ]
            if missing:
                raise _nested(
                    name, "environment variable {variable} is not set", variable=missing[0]
                )
        return value

    @model_validator(mode="after")
    def _approved_tools_allowed(self) -> "McpServer":
        if isinstance(self.approval, list) and self.allowed_tools is not None:
            left_out = [name for name in self.approval if name not in self.allowed_tools]
            if left_out:
                raise _nested(
                    "approval",
                    "names {name}, which allowed_tools leaves out",
                    name=repr(left_out[0]),
                )
        return self

    def needs_consent(self, tool: str) -> bool:
        """Whether a call of ``tool`` needs the caller's consent.

        Args:
            tool: The tool's name.

        Returns:
            True for ``approval: always``, and for a tool in an ``approval`` list.
        """
        if isinstance(self.approval, list):
            return tool in self.approval
        return self.approval == "always"

    def require_approval(self) -> Any:
        """``require_approval`` as the API takes it: ``"never"``, ``"always"`` or a filter.

        A list becomes ``{"always": {"tool_names": [...]}}``, and, when ``allowed_tools``
        is set, ``"never"`` for the other allowed tools.
        """
        if not isinstance(self.approval, list):
            return self.approval
        if not self.approval:
            return "never"
        rule: dict[str, Any] = {"always": {"tool_names": list(self.approval)}}
        others = [name for name in self.allowed_tools or [] if name not in self.approval]
        if others:
            rule["never"] = {"tool_names": others}
        return rule

    def resolved_headers(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers with ``${VAR}`` replaced from the environment.

        Args:
            environ: Where variables are read; ``os.environ`` by default.

        Returns:
            The headers to send.

        Raises:
            McpHeaderError: If a variable is not set (named; the value never is).
        """
        env = os.environ if environ is None else environ

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise McpHeaderError(
                    f"MCP server {self.label}: header {header}: environment variable "
                    f"{name} is not set"
                )
            return env[name]

        resolved = {}
        for header, text in self.headers.items():
            resolved[header] = _VARIABLE.sub(value, text)
        return resolved

    def to_realtime_tool(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The tool as ``session.update`` carries it, headers read from the environment.

        Args:
            environ: Where header variables are read; ``os.environ`` by default.

        Returns:
            The ``mcp`` tool (the ``openai`` package's ``Mcp`` model, as a dict).

        Raises:
            McpHeaderError: If a header's variable is not set.
        """
        tool = Mcp(
            type="mcp",
            server_label=self.label,
            server_url=self.url,
            allowed_tools=list(self.allowed_tools) if self.allowed_tools is not None else None,
            require_approval=self.require_approval(),
            headers=self.resolved_headers(environ) or None,
            server_description=self.description,
        )
        return tool.model_dump(mode="json", exclude_none=True)

    def describe(self) -> str:
        """One line for ``bots check``: label, URL, tools, approval, header names (no values)."""
        tools = ", ".join(self.allowed_tools) if self.allowed_tools is not None else "all"
        approval = (
            ", ".join(self.approval) or "never"
            if isinstance(self.approval, list)
            else self.approval
        )
        parts = [f"{self.label} {self.url}", f"tools: {tools}", f"caller consent: {approval}"]
        if self.headers:
            names = []
            for name, text in self.headers.items():
                variables = header_variables(text)
                names.append(f"{name} (from {', '.join(variables)})" if variables else name)
            parts.append("headers: " + ", ".join(names))
        return "; ".join(parts)


def _check_names(names: list[str], key: str) -> None:
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise PydanticCustomError(key, "tool names must be non-empty text")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise PydanticCustomError(key, "lists {name} twice", {"name": repr(repeated[0])})


class McpDeclarationError(ValueError):
    """A mistake in a list of MCP servers.

    Attributes:
        loc: Where: the server's index, then its key (and a header's name), e.g.
            ``(0, "headers", "Authorization")``.
        message: What is wrong (never a header's value).
    """

    def __init__(self, loc: tuple[str | int, ...], message: str):
        """Initialize the error.

        Args:
            loc: Where the mistake is.
            message: What is wrong.
        """
        super().__init__(f"{'.'.join(str(p) for p in loc)}: {message}")
        self.loc = loc
        self.message = message


def parse_mcp_servers(value: object) -> list[McpServer]:
    """Check a declared list of MCP servers (a bot's ``mcp:``).

    Args:
        value: The list, as read from YAML (or already ``McpServer`` objects).

    Returns:
        The servers.

    Raises:
        McpDeclarationError: For the first mistake: not a list, a bad server, a label
            used twice.
    """
    if not isinstance(value, list):
        raise McpDeclarationError((), "must be a list of servers (label, url, ...)")
    servers: list[McpServer] = []
    for index, entry in enumerate(value):
        try:
            server = entry if isinstance(entry, McpServer) else McpServer.model_validate(entry)
        except ValidationError as e:
            error = e.errors()[0]
            loc: list[str | int] = [index, *(p for p in error["loc"] if isinstance(p, str))]
            context = error.get("ctx") or {}
            if error["type"] == "nested" and context.get("key") not in loc:
                loc.append(str(context["key"]))
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            raise McpDeclarationError(tuple(loc), message) from None
        if any(s.label == server.label for s in servers):
            raise McpDeclarationError((index, "label"), f"{server.label!r} is used twice")
        servers.append(server)
    return servers


def mcp_servers_in(tools: object) -> list[McpServer]:
    """The MCP servers among an agent's ``tools`` (a list, or anything else: none)."""
    if not isinstance(tools, list):
        return []
    return [tool for tool in tools if isinstance(tool, McpServer)]
