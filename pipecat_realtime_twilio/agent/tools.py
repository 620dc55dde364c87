#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Tools for Realtime bots: a decorator for Python functions, and call control.

A tool is a :class:`RealtimeTool`: the schema the model sees plus the handler
Pipecat runs. Pass tools to ``RealtimeAgent(tools=[...])``, which registers
their handlers.

Example (the tool's docstring, with its ``Args:`` section, is what the model reads)::

    @realtime_tool(timeout_secs=5)
    async def opening_hours(day: str) -> str:
        return HOURS[day.lower()]

    tools = [opening_hours, end_call(), transfer_call("+15551230000")]
    RealtimeAgent(instructions=..., tools=tools)
"""

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

import docstring_parser
from loguru import logger
from pipecat.adapters.llm.schemas.direct_function import BaseDirectFunctionWrapper
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import AdapterType, ToolsSchema
from pipecat.frames.frames import FunctionCallResultProperties
from pipecat.services.llm_service import FunctionCallParams
from pydantic import ConfigDict, validate_call
from pydantic_core import to_jsonable_python

from pipecat_realtime_twilio.agent.controls import AgentControls
from pipecat_realtime_twilio.agent.mcp import McpServer
from pipecat_realtime_twilio.errors import CallControlError
from pipecat_realtime_twilio.seams import PhoneCall
from pipecat_realtime_twilio.targets import check_transfer_target

DEFAULT_TOOL_TIMEOUT_SECS = 10.0
"""How long a tool may run before the bot apologizes instead."""

_NO_ANSWER = FunctionCallResultProperties(run_llm=False)


@dataclass(frozen=True)
class RealtimeTool:
    """A tool the model can call: its schema and its Pipecat handler.

    Parameters:
        name: The function name the model calls.
        schema: The schema the model sees.
        handler: Runs the call (a Pipecat function handler).
    """

    name: str
    schema: FunctionSchema
    handler: Callable[[FunctionCallParams], Awaitable[None]]


class _ToolSignature(BaseDirectFunctionWrapper):
    """Pipecat's signature-and-docstring schema extraction, for plain functions.

    Every parameter is the model's, except those annotated ``CallSession``
    (or another :class:`~pipecat_realtime_twilio.seams.PhoneCall`), which receive
    the call.
    """

    @classmethod
    def special_first_param_name(cls) -> str:
        return ""

    @classmethod
    def validate_function(cls, function: Callable) -> None:
        if not callable(function):
            raise TypeError(f"a tool must be a function, not {function!r}")

    def _get_parameters_as_jsonschema(
        self, func: Callable, docstring_params: list[docstring_parser.DocstringParam]
    ) -> tuple[dict[str, Any], list[str]]:
        hints = get_type_hints(func)
        descriptions = {p.arg_name: p.description or "" for p in docstring_params}
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, param in inspect.signature(func).parameters.items():
            if name in _injected(func):
                continue
            properties[name] = self._typehint_to_jsonschema(hints.get(name))
            if name in descriptions:
                properties[name]["description"] = descriptions[name]
            if param.default is inspect.Parameter.empty:
                required.append(name)
        return properties, required


def _injected(func: Callable) -> set[str]:
    """The parameters of ``func`` that receive the call rather than come from the model."""
    hints = get_type_hints(func)
    return {
        name
        for name, hint in hints.items()
        if name != "return" and isinstance(hint, type) and PhoneCall in hint.__mro__
    }


def _agent_of(params: FunctionCallParams) -> AgentControls:
    """The agent running a tool (a ``RealtimeAgent``)."""
    if not isinstance(params.llm, AgentControls):
        raise TypeError(f"{params.llm} cannot run this tool: it needs a RealtimeAgent")
    return params.llm


def realtime_tool(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    timeout_secs: float = DEFAULT_TOOL_TIMEOUT_SECS,
):
    """Turn a typed Python function (sync or async) with a docstring into a tool.

    The schema comes from the signature and the docstring (Google style: the
    summary describes the tool, ``Args:`` describe the parameters). The model's
    arguments are validated and converted to the annotated types (pydantic),
    the function runs (a sync one in a worker thread), and its return value,
    made JSON-ready, goes back as the ``function_call_output``; then the model
    answers. A parameter annotated ``CallSession`` receives the call.

    If the arguments are invalid, the function raises, or it runs longer than
    ``timeout_secs``, the error goes back to the model and the bot says its
    ``tool_error_message``; the call goes on.

    Can be used with or without arguments: ``@realtime_tool`` or
    ``@realtime_tool(timeout_secs=5)``.

    Args:
        fn: The function (when used without arguments).
        name: The tool's name; the function's name by default.
        timeout_secs: Most seconds the function may run.

    Returns:
        The :class:`RealtimeTool` (or a decorator that makes one).
    """

    def build(function: Callable) -> RealtimeTool:
        schema = _ToolSignature(function).to_function_schema()
        if name:
            schema = FunctionSchema(
                name=name,
                description=schema.description,
                properties=schema.properties,
                required=schema.required,
            )
        if not schema.description:
            raise ValueError(f"tool {schema.name}: give the function a docstring for the model")
        validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(function)
        injected = _injected(function)
        is_async = inspect.iscoroutinefunction(function)

        async def handler(params: FunctionCallParams) -> None:
            agent = _agent_of(params)
            arguments = dict(params.arguments or {})
            for parameter in injected:
                arguments[parameter] = agent.call
            try:
                if is_async:
                    run = validated(**arguments)
                else:
                    run = asyncio.to_thread(validated, **arguments)
                result = await asyncio.wait_for(run, timeout_secs)
            except TimeoutError:
                logger.warning(f"Tool {schema.name} timed out after {timeout_secs:g} s")
                await _apologize(params, agent, f"{schema.name} timed out")
                return
            except Exception as e:
                logger.opt(exception=e).warning(f"Tool {schema.name} failed: {e}")
                await _apologize(params, agent, f"{schema.name} failed: {e}")
                return
            await params.result_callback(to_jsonable_python(result, fallback=str))

        return RealtimeTool(name=schema.name, schema=schema, handler=handler)

    if fn is not None:
        return build(fn)
    return build


async def _apologize(params: FunctionCallParams, agent: AgentControls, error: str) -> None:
    agent.call_events.tool_failed(params.tool_call_id, error)  # the record's error, not a result
    await params.result_callback({"error": error}, properties=_NO_ANSWER)
    await agent.say(agent.tool_error_message)


def end_call(
    *,
    description: str = (
        "Hang up the phone call. Use it when the conversation is over or the caller asks "
        "to end the call. Say goodbye first: the call ends once the caller has heard it."
    ),
) -> RealtimeTool:
    """The ``end_call`` tool: hang up once the goodbye has been heard.

    Args:
        description: What the model is told about the tool.

    Returns:
        The tool.
    """
    schema = FunctionSchema(name="end_call", description=description, properties={}, required=[])

    async def handler(params: FunctionCallParams) -> None:
        agent = _agent_of(params)
        await params.result_callback({"status": "ending the call"}, properties=_NO_ANSWER)
        try:
            await agent.end_call(reason="bot ended the call")
        except CallControlError as e:
            logger.error(f"end_call: {e}")
            agent.call_events.tool_failed(params.tool_call_id, f"end_call failed: {e}")

    return RealtimeTool(name="end_call", schema=schema, handler=handler)


def transfer_call(
    number: str,
    *,
    description: str = (
        "Transfer the caller to a person. Use it when the caller asks for a human or you "
        "cannot help. Tell the caller you are transferring them first."
    ),
) -> RealtimeTool:
    """The ``transfer_call`` tool: a cold transfer to ``number``.

    The transfer happens once the caller has heard what the bot said: TwiML
    ``<Dial>`` (``<Dial><Sip>`` for a SIP URI) through Twilio's REST API when
    credentials are set, else through the runner's ``<Connect action>`` URL.

    Args:
        number: Where to transfer (E.164 phone number or SIP URI), set per bot.
        description: What the model is told about the tool.

    Returns:
        The tool.

    Raises:
        ValueError: If ``number`` is missing, or neither a phone number nor a SIP URI.
    """
    if not number:
        raise ValueError("transfer_call needs a number to transfer to")
    number = check_transfer_target(number)  # a wrong one fails when the bot is built
    schema = FunctionSchema(
        name="transfer_call", description=description, properties={}, required=[]
    )

    async def handler(params: FunctionCallParams) -> None:
        agent = _agent_of(params)
        await params.result_callback({"status": "transferring the call"}, properties=_NO_ANSWER)
        try:
            await agent.transfer_call(number)
        except CallControlError as e:
            logger.error(f"transfer_call: {e}")
            agent.call_events.tool_failed(params.tool_call_id, f"transfer_call failed: {e}")
            await agent.say(agent.tool_error_message)

    return RealtimeTool(name="transfer_call", schema=schema, handler=handler)


def split_tools(tools: list | ToolsSchema | None) -> tuple[list[RealtimeTool], ToolsSchema | None]:
    """Separate tools with handlers (``RealtimeTool``) from plain schemas, checking both.

    Args:
        tools: What a ``RealtimeAgent`` was given: ``RealtimeTool`` objects, Pipecat
            ``FunctionSchema`` objects and/or :class:`~pipecat_realtime_twilio.agent.mcp.McpServer`
            objects (sent as tools of type ``mcp``, their headers read from the
            environment now), or a ``ToolsSchema``.

    Returns:
        The tools whose handlers the agent registers, and the schema of all of them.

    Raises:
        TypeError: For anything else in the list.
        ValueError: If two tools (or two MCP servers) have the same name.
        McpHeaderError: If an MCP server's header variable is not set.
    """
    if tools is None or isinstance(tools, ToolsSchema):
        return [], tools
    realtime_tools = [tool for tool in tools if isinstance(tool, RealtimeTool)]
    schemas: list[Any] = []
    mcp_tools: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, RealtimeTool):
            schemas.append(tool.schema)
        elif isinstance(tool, FunctionSchema):
            schemas.append(tool)
        elif isinstance(tool, McpServer):
            mcp_tools.append(tool.to_realtime_tool())
        else:
            raise TypeError(
                f"unsupported tool {tool!r}: use @realtime_tool, a FunctionSchema or an McpServer"
            )
    names = [schema.name for schema in schemas]
    duplicates = {name for name in names if names.count(name) > 1}
    labels = [tool["server_label"] for tool in mcp_tools]
    duplicates |= {f"MCP server {label}" for label in labels if labels.count(label) > 1}
    if duplicates:
        raise ValueError(f"tools listed twice: {', '.join(sorted(duplicates))}")
    if not schemas and not mcp_tools:
        return realtime_tools, None
    custom = {AdapterType.OPENAI: mcp_tools} if mcp_tools else None
    return realtime_tools, ToolsSchema(standard_tools=schemas, custom_tools=custom)
