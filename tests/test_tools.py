"""Tool schemas and checks, without a call: the unit tier of the tools."""

import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.services.llm_service import FunctionCallParams

from pipecat_realtime_twilio import CallSession, end_call, realtime_tool, transfer_call
from pipecat_realtime_twilio.agent.tools import split_tools
from pipecat_realtime_twilio.seams import PhoneCall


def test_a_tool_can_be_renamed():
    @realtime_tool(name="lookup_order", timeout_secs=3)
    async def order_status(order_number: int) -> dict:
        """Look up where an order is.

        Args:
            order_number: The order number the caller reads out.
        """
        return {"order": order_number}

    assert order_status.name == "lookup_order"
    assert order_status.schema.name == "lookup_order"
    assert order_status.schema.description == "Look up where an order is."
    assert order_status.schema.properties["order_number"]["type"] == "integer"
    assert order_status.schema.required == ["order_number"]


def test_the_call_is_given_not_asked_of_the_model():
    @realtime_tool
    def note(text: str, call: CallSession, urgent: bool = False) -> str:
        """Take a note.

        Args:
            text: What to note.
            urgent: Whether it is urgent.
        """
        return text

    # CallSession (a PhoneCall) is given by the agent, not described to the model.
    assert PhoneCall in CallSession.__mro__
    assert list(note.schema.properties) == ["text", "urgent"]
    assert note.schema.required == ["text"]


def test_tools_are_split_and_checked():
    schema = FunctionSchema(name="plain", description="A plain schema.", properties={}, required=[])
    tools, tools_schema = split_tools([end_call(), transfer_call("+15551230000"), schema])
    assert [tool.name for tool in tools] == ["end_call", "transfer_call"]
    assert tools_schema is not None
    assert [s.name for s in tools_schema.standard_tools] == ["end_call", "transfer_call", "plain"]
    with pytest.raises(ValueError, match="tools listed twice: end_call"):
        split_tools([end_call(), end_call()])
    with pytest.raises(TypeError, match="unsupported tool"):
        split_tools(["end_call"])
    assert split_tools(None) == ([], None)


async def test_a_tool_refuses_an_llm_that_is_not_a_realtime_agent():
    tool = end_call()
    results = []

    async def result_callback(result, properties=None):
        results.append(result)

    params = FunctionCallParams(
        function_name="end_call",
        tool_call_id="call_1",
        arguments={},
        llm=object(),  # type: ignore[arg-type]
        pipeline_worker=None,  # type: ignore[arg-type]
        context=None,  # type: ignore[arg-type]
        result_callback=result_callback,
    )
    with pytest.raises(TypeError, match="needs a RealtimeAgent"):
        await tool.handler(params)
    assert results == []
