#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The media stream's Pipecat transport: Pipecat's FastAPI websocket transport, our phone output."""

from fastapi import WebSocket
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

from pipecat_realtime_twilio.phone.output import CHUNK_MS, MAX_LEAD_MS, TwilioOutputTransport


class TwilioTransport(FastAPIWebsocketTransport):
    """Pipecat's FastAPI websocket transport with :class:`TwilioOutputTransport` as output."""

    def __init__(
        self,
        websocket,
        params: FastAPIWebsocketParams,
        *,
        stream_sid: str,
        chunk_ms: int = CHUNK_MS,
        max_lead_ms: int = MAX_LEAD_MS,
        **kwargs,
    ):
        """Initialize the transport.

        Args:
            websocket: The media-stream websocket.
            params: The transport parameters.
            stream_sid: The Media Stream SID.
            chunk_ms: Milliseconds of audio per ``media`` message.
            max_lead_ms: Most audio buffered at Twilio ahead of the phone.
            **kwargs: Further ``FastAPIWebsocketTransport`` arguments.
        """
        super().__init__(websocket, params, **kwargs)
        self._phone_output = TwilioOutputTransport(
            self,
            self._client,
            self._params,
            stream_sid=stream_sid,
            chunk_ms=chunk_ms,
            max_lead_ms=max_lead_ms,
            name=self._output_name,
        )
        self._output = self._phone_output  # replaces Pipecat's output

    def output(self) -> TwilioOutputTransport:
        """The phone output."""
        return self._phone_output

    def attach(self, websocket: WebSocket, stream_sid: str) -> None:
        """Give a transport built before its stream started the stream's websocket.

        Args:
            websocket: The media-stream websocket, accepted.
            stream_sid: The stream's Media Stream SID.
        """
        self._client._websocket = websocket  # Pipecat's client has no setter for it
        self._phone_output.attach(stream_sid)
