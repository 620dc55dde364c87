#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""TwiML as Twilio reads it: the verbs of a voice webhook's answer and its media stream."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urljoin


class TwimlError(ValueError):
    """The webhook's answer is not a TwiML document Twilio could execute."""


@dataclass
class TwimlVerb:
    """One TwiML element with its attributes, text and nested elements.

    Parameters:
        name: The element name, e.g. ``"Say"`` or ``"Connect"``.
        attributes: The element's attributes.
        text: The element's text, stripped (e.g. what ``<Say>`` speaks).
        children: Nested elements (nouns), e.g. ``<Stream>`` inside ``<Connect>``.
    """

    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    text: str = ""
    children: list[TwimlVerb] = field(default_factory=list)

    @classmethod
    def from_element(cls, element: ET.Element) -> TwimlVerb:
        """Build a verb tree from a parsed XML element."""
        return cls(
            name=element.tag,
            attributes=dict(element.attrib),
            text=(element.text or "").strip(),
            children=[cls.from_element(child) for child in element],
        )


@dataclass
class DialResult:
    """What the voice webhook answered, parsed the way Twilio reads it.

    Parameters:
        status: HTTP status of the webhook response.
        twiml: The response body as text.
        content_type: The response's Content-Type header.
        url: The public URL that was requested (and signed).
        params: The form parameters that were sent.
        signature: The ``X-Twilio-Signature`` that was sent, if signing.
        verbs: Every top-level TwiML verb, in order.
        stream_url: The ``<Connect><Stream url>``, exactly as written.
        stream_attributes: All attributes of the ``<Stream>`` element.
        parameters: The ``<Parameter name value>`` pairs inside ``<Stream>``.
        connect_action: The ``<Connect action>`` attribute as written, if any.
        connect_method: The ``<Connect method>`` (Twilio's default is POST).
        action_url: ``connect_action`` resolved against ``url``, if any.
        after_connect: The verbs after ``<Connect>``, which Twilio runs when the stream
            ends and there is no action URL.
    """

    status: int
    twiml: str
    content_type: str | None = None
    url: str = ""
    params: dict[str, str] = field(default_factory=dict)
    signature: str | None = None
    verbs: list[TwimlVerb] = field(default_factory=list)
    stream_url: str | None = None
    stream_attributes: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    connect_action: str | None = None
    connect_method: str = "POST"
    action_url: str | None = None
    after_connect: list[TwimlVerb] = field(default_factory=list)

    @property
    def verb_names(self) -> list[str]:
        """The names of the top-level verbs, e.g. ``["Say", "Connect", "Hangup"]``."""
        return [verb.name for verb in self.verbs]


def parse_twiml(
    twiml: str, *, url: str = "", status: int = 200, content_type: str | None = None
) -> DialResult:
    """Parse a TwiML document the way Twilio does for a ``<Connect><Stream>`` call.

    Args:
        twiml: The TwiML text.
        url: The URL the document was fetched from; relative ``action`` URLs resolve
            against it.
        status: HTTP status to record in the result.
        content_type: Content-Type to record in the result.

    Returns:
        The parsed document.

    Raises:
        TwimlError: If the text is not XML or its root is not ``<Response>``.
    """
    try:
        root = ET.fromstring(twiml.strip())
    except ET.ParseError as exc:
        raise TwimlError(f"TwiML is not well-formed XML ({exc}): {twiml[:200]!r}") from exc
    if root.tag != "Response":
        raise TwimlError(f"TwiML root element is <{root.tag}>, not <Response>")
    result = DialResult(status=status, twiml=twiml, content_type=content_type, url=url)
    result.verbs = [TwimlVerb.from_element(element) for element in root]
    for index, element in enumerate(root):
        if element.tag != "Connect":
            continue
        stream = element.find("Stream")
        if stream is None:
            continue
        result.stream_url = stream.get("url")
        result.stream_attributes = dict(stream.attrib)
        result.parameters = {
            param.get("name", ""): param.get("value", "") for param in stream.iter("Parameter")
        }
        result.connect_action = element.get("action")
        result.connect_method = (element.get("method") or "POST").upper()
        if result.connect_action:
            result.action_url = urljoin(url, result.connect_action) if url else None
        result.after_connect = result.verbs[index + 1 :]
        break
    return result
