"""Failures as data: handshake refusals read as codes, end reasons, bounded metric labels."""

import json

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from pipecat_realtime_twilio.agent.handshake import read_refusal
from pipecat_realtime_twilio.failures import Failure, Stage
from pipecat_realtime_twilio.phone.ending import CallEnd, EndKind


def refused(status: int, body: object) -> InvalidStatus:
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InvalidStatus(Response(status, "refused", Headers(), text))


@pytest.mark.parametrize(
    ("status", "code", "expected", "transient"),
    [
        (401, "invalid_api_key", "invalid_api_key", False),
        (403, "unsupported_country_region_territory", None, False),
        (404, "model_not_found", "model_not_found", False),
        (429, "rate_limit_exceeded", "rate_limit_exceeded", True),
        (429, "insufficient_quota", "insufficient_quota", False),  # no wait cures it
        (500, None, "server_error", True),
        (503, None, "server_error", True),
    ],
)
def test_a_refused_handshake_reads_as_its_code_and_whether_a_wait_may_cure_it(
    status, code, expected, transient
):
    body = {"error": {"type": "server_error" if code is None else "x", "code": code}}
    refusal = read_refusal(refused(status, body))
    expected = expected or code
    assert (refusal.code, refusal.transient) == (expected, transient)
    assert f"HTTP {status}" in refusal.detail


def test_a_refusal_without_a_json_body_is_named_by_its_status():
    assert read_refusal(refused(502, b"<html>Bad gateway</html>")).code == "http_502"
    assert read_refusal(refused(401, b"")).transient is False
    assert read_refusal(TimeoutError()).code == "timeout"
    assert read_refusal(ConnectionRefusedError()).code == "unreachable"


def test_the_end_reason_names_stage_and_code_and_the_metric_label_is_bounded():
    failure = Failure(Stage.CONNECT, "invalid_api_key", "HTTP 401")
    assert failure.reason == "failed: connect: invalid_api_key"
    assert CallEnd(EndKind.FAILED, failure=failure).reason == "failed: connect: invalid_api_key"
    assert failure.metric_code == "invalid_api_key"
    assert Failure(Stage.RESPOND, "some_new_code_from_the_api").metric_code == "other"
    assert Failure(Stage.BUILD, "KeyError").metric_code == "exception"
    assert Failure(Stage.TASK, "ZeroDivisionError").reason == "failed: task: ZeroDivisionError"
