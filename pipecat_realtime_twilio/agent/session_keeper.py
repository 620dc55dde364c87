#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Keeping a call's Realtime session: connect, configure, receive, reconnect, rotate, fall back.

:class:`SessionKeeper` is Pipecat's ``OpenAIRealtimeLLMService`` kept alive for
a whole phone call; :class:`~pipecat_realtime_twilio.agent.realtime.RealtimeAgent`
builds on it. What it needs from the agent it declares as abstract methods (and
the :attr:`SessionKeeper.transcript` the agent keeps):

- The session is configured (``session.update``) as soon as its socket opens,
  before any caller audio, so the server never reads μ-law as its default PCM.
- Its receive loop follows Pipecat's dispatch (:data:`SERVER_EVENT_HANDLERS`) but
  drops a malformed event, or one whose handling fails, with a log line, and logs
  recoverable ``error`` events; Pipecat's loop stops at the first of either.
- A lost socket is reopened with backoff: the session configuration goes first,
  then the conversation so far is replayed (both sides' transcripts as items),
  and the caller's audio held meanwhile (bounded) is sent, preceded by the
  caller's turn so far when they were in the middle of one.
- Before the API's 60-minute cap the session is moved to a fresh one at a turn
  boundary, the same way.
- Opening a session retries what a wait may cure (rate limits, 5xx, hanging or
  refused connects) within a budget (:mod:`~pipecat_realtime_twilio.agent.handshake`);
  the caller waits at most one budget: a pre-warm that failed so spent the part of it
  that ran after the stream started, and the connect at start gets only the rest.
- When the API is gone for good (a refused handshake, a fatal error code,
  reconnects exhausted) the agent falls back (a line in Twilio's own voice, or a
  transfer): never dead air. What failed is a
  :class:`~pipecat_realtime_twilio.failures.Failure` (stage and code).
- Pre-warm (:mod:`~pipecat_realtime_twilio.agent.prewarm`): the session can open
  before the pipeline starts; what the server sends meanwhile (kept in
  ``_early_events``) is handled first once the receive loop starts.
"""

import asyncio
import contextlib
import time
from abc import abstractmethod
from collections import deque
from urllib.parse import urlsplit

from loguru import logger
from openai.types.realtime.input_audio_buffer_timeout_triggered import (
    InputAudioBufferTimeoutTriggered,
)
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websocket_connect

from pipecat_realtime_twilio.agent.configuration import is_azure_url, realtime_url
from pipecat_realtime_twilio.agent.handshake import (
    ConnectBudget,
    ConnectFailed,
    Refusal,
    open_realtime,
)
from pipecat_realtime_twilio.agent.ledger import TranscriptEntry
from pipecat_realtime_twilio.audio import BYTES_PER_MS
from pipecat_realtime_twilio.failures import FALLBACK_LINE, Failure, Stage
from pipecat_realtime_twilio.settings import DEFAULT_REALTIME_URL

__all__ = ["FALLBACK_LINE", "SessionKeeper"]

MAX_BUFFERED_AUDIO_MS = 5000
"""Caller audio kept while reconnecting (sent once the new session is up); older is dropped."""

SESSION_MAX_SECS = 55 * 60
"""Age at which the agent moves to a fresh session (the API caps a session at 60 minutes)."""

MAX_RECONNECTS = 10
"""Reconnects one call may use; after that the Realtime API counts as gone."""

FATAL_ERROR_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "model_not_found"}
)
"""Realtime ``error`` codes no reconnect can cure: the call gets the fallback instead."""


SERVER_EVENT_HANDLERS = {
    "session.created": "_handle_evt_session_created",
    "session.updated": "_handle_evt_session_updated",
    "response.created": "_handle_evt_response_created",
    "response.output_audio.delta": "_handle_evt_audio_delta",
    "conversation.item.added": "_handle_evt_conversation_item_added",
    "conversation.item.done": "_handle_evt_conversation_item_done",
    "conversation.item.input_audio_transcription.delta": (
        "_handle_evt_input_audio_transcription_delta"
    ),
    "conversation.item.input_audio_transcription.completed": (
        "handle_evt_input_audio_transcription_completed"
    ),
    "conversation.item.retrieved": "_handle_conversation_item_retrieved",
    "response.done": "_handle_evt_response_done",
    "input_audio_buffer.speech_started": "_handle_evt_speech_started",
    "input_audio_buffer.speech_stopped": "_handle_evt_speech_stopped",
    "response.output_text.delta": "_handle_evt_text_delta",
    "response.output_audio_transcript.delta": "_handle_evt_audio_transcript_delta",
    "response.function_call_arguments.done": "_handle_evt_function_call_arguments_done",
}
"""Server event -> handler method: Pipecat's dispatch, as its receive loop has it."""

EXTRA_EVENT_HANDLERS = {
    "conversation.item.input_audio_transcription.failed": (
        "handle_evt_input_audio_transcription_failed"
    ),
    "input_audio_buffer.timeout_triggered": "_handle_evt_timeout_triggered",
}
"""Server events Pipecat's loop ignores and ours handles."""

# Pipecat's parser has no model of input_audio_buffer.timeout_triggered (idle_timeout_ms)
# and drops it: given openai's, our receive loop dispatches it (EXTRA_EVENT_HANDLERS).
events._server_event_types.setdefault(
    "input_audio_buffer.timeout_triggered", InputAudioBufferTimeoutTriggered
)


class SessionKeeper(OpenAIRealtimeLLMService):
    """Pipecat's OpenAI Realtime service, kept alive for a whole phone call.

    A subclass provides the hooks: :meth:`_at_turn_boundary`,
    :meth:`_forget_responses`, :meth:`_greet_early`, :meth:`_fall_back`, and keeps
    :attr:`transcript`, which a new session is given as the conversation so far.
    """

    transcript: list[TranscriptEntry]
    """Both sides' utterances so far (kept by the subclass; replayed to a new session)."""

    # Pipecat's service state: its __init__ sets these to None untyped, which mypy
    # reads as the type None.
    _websocket: ClientConnection | None  # type: ignore[assignment]
    _receive_task: asyncio.Task | None  # type: ignore[assignment]

    def __init__(
        self,
        *,
        fallback_line: str,
        fallback_number: str | None,
        session_max_secs: float,
        **kwargs,
    ):
        """Initialize the service.

        Args:
            fallback_line: What the caller hears when the API is gone for good.
            fallback_number: Where such a call is transferred instead, if set.
            session_max_secs: Age at which the session moves to a fresh one.
            **kwargs: ``OpenAIRealtimeLLMService`` arguments.
        """
        super().__init__(**kwargs)
        self.fallback_line = fallback_line
        self.fallback_number = fallback_number
        self.reconnects = 0
        self.rotations = 0
        self._session_max_secs = session_max_secs
        self._session_opened_at = 0.0
        self._session_sent = False
        self._rotating = False
        self._rotation_task: asyncio.Task | None = None
        self._dropped_events = 0
        self._reconnecting = False
        self._held_audio: deque[str] = deque()
        # The caller's audio sent since their last turn ended (Twilio's 20 ms packets):
        # a new session hears a turn cut by a reconnect or a rotation from its start.
        self._turn_audio: deque[str] = deque(maxlen=MAX_BUFFERED_AUDIO_MS // 20)
        self.caller_speaking = False
        self._held_dropped = 0
        self._session_expires_at: float | None = None  # time.monotonic()
        self._connect_failed: Refusal | None = None
        self._connect_budget = ConnectBudget()  # what is left of the caller's wait
        self._pending_failure: Failure | None = None
        self._prewarm_task: asyncio.Task | None = None
        self._early_reader: asyncio.Task | None = None
        self._early_events: deque[str | bytes] = deque()
        # Pipecat appends "?model=" to any URL; keep a URL's own query (an Azure
        # deployment, an api-version) and name the model only where it names none.
        base_url = kwargs.get("base_url") or DEFAULT_REALTIME_URL
        # The model as Pipecat settled it (mypy cannot resolve its Settings alias).
        model: str = self._settings.model  # type: ignore[attr-defined]
        self.base_url = realtime_url(base_url, model)
        self._azure = is_azure_url(base_url)
        if self._azure and "api-version=" in base_url:
            logger.warning(
                f"{self}: the Realtime URL selects Azure's preview realtime API (api-version=), "
                "whose superseded protocol this agent does not speak; use an "
                "/openai/v1/realtime URL instead"
            )
        auth = "Azure OpenAI: the key in an api-key header" if self._azure else "a Bearer key"
        logger.info(f"{self}: Realtime at {urlsplit(base_url).netloc}, authenticated by {auth}")

    async def _auth_headers(self) -> dict[str, str]:
        """The headers that authenticate the websocket: Azure's ``api-key``, else Bearer."""
        if self._azure:
            return {"api-key": self.api_key}
        return {"Authorization": f"Bearer {self.api_key}"}

    #
    # what the subclass provides
    #

    @abstractmethod
    def _at_turn_boundary(self) -> bool:
        """Whether nobody is speaking and nothing is playing (a session may rotate now)."""

    @abstractmethod
    def _forget_responses(self) -> None:
        """Drop what belonged to the responses of a session that is gone."""

    @abstractmethod
    async def _greet_early(self) -> None:
        """Ask a pre-warmed session for the greeting (it is configured already)."""

    @abstractmethod
    async def _fall_back(self, failure: Failure) -> None:
        """The API is gone for this call: hand the caller to the fallback."""

    @abstractmethod
    def _stage(self) -> Stage:
        """The stage the call is in, for a failure with no stage of its own."""

    #
    # connecting and configuring
    #

    async def _connect(self):
        if self._prewarm_task is not None:
            return  # start() takes the pre-warmed session over, once it knows the phone
        if self._connect_failed is not None:
            return  # failed already (at setup): start() falls back
        if self._websocket is None:
            budget = self._connect_budget.take()
            if isinstance(budget, Refusal):
                self._connect_failed = budget  # the caller's wait is spent: start() falls back
                return
            try:
                self._websocket = await open_realtime(
                    self._open_socket, budget_secs=budget, name=str(self)
                )
            except ConnectFailed as e:
                self._connect_failed = e.refusal
                return
            self._receive_task = self.create_task(self._receive_task_handler())
        self._session_opened_at = time.monotonic()
        await self._configure()

    async def _configure(self) -> None:
        """Send the session configuration, once per session, before anything else."""
        if self._websocket is not None and not self._session_sent:
            self._session_sent = True
            await self._send_session_update()

    async def _disconnect(self):
        await super()._disconnect()
        self._session_sent = False

    def _forget_session(self) -> None:
        """Drop what belonged to the session that is gone."""
        self._session_sent = False
        self._api_session_ready = False
        self._response_active = False
        self._current_audio_response = None
        self._open_function_calls = set()
        self._forget_responses()

    async def _open_socket(self, timeout: float) -> ClientConnection:
        """Open the Realtime websocket once, the handshake taking at most ``timeout`` s.

        Without permessage-deflate: base64 audio barely compresses, and deflating
        every 20 ms packet (and inflating every delta) costs CPU and latency.
        """
        return await websocket_connect(
            uri=self.base_url,
            additional_headers=await self._auth_headers(),
            compression=None,
            open_timeout=timeout,
        )

    def _connect_failure(self, stage: Stage) -> Failure:
        """The failure of the last connect (``stage``: where it was needed)."""
        refusal = self._connect_failed or Refusal("handshake", True, "no session")
        return Failure(stage, refusal.code, refusal.detail)

    #
    # receiving
    #

    async def _receive_task_handler(self):
        """Read server events until the socket ends; then reconnect, unless we closed it.

        Pipecat's loop (whose dispatch this follows, see :data:`SERVER_EVENT_HANDLERS`)
        stops at the first malformed event or ``error``. Here a malformed event, or one
        whose handling fails, is logged and dropped; a recoverable ``error`` is logged;
        a fatal one ends in the fallback; a lost socket in a reconnect.
        """
        fatal = None
        websocket = self._websocket
        try:
            while self._early_events and not fatal:  # what came while pre-warmed
                fatal = await self._on_server_message(self._early_events.popleft())
            if websocket is not None and not fatal:
                async for message in websocket:
                    fatal = await self._on_server_message(message)
                    if fatal:
                        break
        except Exception as e:  # the socket died under us (ConnectionClosedError and kin)
            logger.warning(f"{self} Realtime socket lost: {type(e).__name__}: {e}")
        if self._rotating:
            await self._reconnect(rotation=True)
            return
        if self._disconnecting or self._websocket is None:
            return  # we closed it
        if fatal:
            await self._fatal(Failure(self._stage(), fatal))
        elif self.reconnects >= MAX_RECONNECTS:
            await self._fatal(
                Failure(Stage.RECONNECT, "reconnects_exhausted", f"{MAX_RECONNECTS} reconnects")
            )
        else:
            await self._reconnect()

    async def _on_server_message(self, message: str | bytes) -> str | None:
        """Handle one server event; return a fatal error code, if it is one."""
        try:
            evt = events.parse_server_event(message)
            if evt is None:
                return None
            if evt.type == "error":
                return await self._on_error_event(evt)
            handler = SERVER_EVENT_HANDLERS.get(evt.type) or EXTRA_EVENT_HANDLERS.get(evt.type)
            if handler is not None:
                await getattr(self, handler)(evt)
        except Exception as e:  # one bad event never ends the call
            self._dropped_events += 1
            if self._dropped_events <= 20 or self._dropped_events % 1000 == 0:
                preview = message[:120] if isinstance(message, (str, bytes)) else ""
                logger.warning(
                    f"{self} dropped a server event ({type(e).__name__}: "
                    f"{str(e)[:200]}; {self._dropped_events} so far): {preview!r}"
                )
        return None

    async def _on_error_event(self, evt) -> str | None:
        """Log a Realtime ``error``; return its code if no reconnect can cure it."""
        if await self._maybe_handle_evt_retrieve_conversation_item_error(evt):
            return None
        code = evt.error.code or evt.error.type
        if code in ("response_cancel_not_active", "conversation_already_has_active_response"):
            logger.debug(f"{self} {evt.error.message}")
            return None
        if code in FATAL_ERROR_CODES:
            logger.error(f"{self} Realtime error {code}: {evt.error.message}")
            return code
        if code == "session_expired":
            # The server closes the socket next: open the new session as a rotation.
            logger.info(f"{self} the session reached its cap: moving to a fresh one")
            self._rotating = True
            return None
        if await self._on_rejected(evt.error):
            return None
        logger.warning(f"{self} Realtime error {code} (the call goes on): {evt.error.message}")
        return None

    async def _on_rejected(self, error) -> bool:
        """A subclass's look at an error (e.g. a rejected ``session.update``); True if handled."""
        return False

    async def _handle_evt_session_created(self, evt):
        await self._configure()
        expires_at = evt.session.expires_at
        if expires_at:
            # The server's cap, on our clock; rotation comes before it (see _rotation_due).
            self._session_expires_at = time.monotonic() + (expires_at - time.time())

    def _rotation_due(self) -> bool:
        """Whether the session is old enough to move: ``session_max_secs``, or near its cap.

        Near means within a twelfth of the session's life of its ``expires_at``
        (5 minutes of the API's 60), so a short cap is honoured too.
        """
        now = time.monotonic()
        if now - self._session_opened_at >= self._session_max_secs:
            return True
        if self._session_expires_at is None:
            return False
        life = self._session_expires_at - self._session_opened_at
        return now >= self._session_expires_at - life / 12

    async def _rotate_when_due(self):
        """Before the session cap, move to a fresh session at a turn boundary."""
        while True:
            await asyncio.sleep(0.25)
            if not self._rotation_due():
                continue
            if self._websocket is None or self._reconnecting or self._rotating:
                continue
            if not self._at_turn_boundary():
                continue
            age = time.monotonic() - self._session_opened_at
            logger.info(f"{self} session is {age:.0f} s old, near its cap: rotating")
            self._rotating = True
            await self._websocket.close()  # the receive loop ends and opens the new one

    async def _reconnect(self, rotation: bool = False):
        """Open a new session, send the configuration, replay the conversation, carry on.

        Args:
            rotation: A planned move to a fresh session, not a recovery.
        """
        self._reconnecting = True
        self._rotating = False
        if rotation:
            self.rotations += 1
        else:
            self.reconnects += 1
            logger.warning(f"{self} reconnecting to the Realtime API")
        await self._close_socket()
        self._forget_session()
        if self.caller_speaking:  # the old session had the turn so far: send it again
            self._held_audio.extendleft(reversed(self._turn_audio))
        self._turn_audio.clear()
        self._session_expires_at = None
        self._connect_failed = None
        await self._connect()  # retries within its budget; sends session.update once open
        if self._websocket is None:
            self._reconnecting = False
            await self._fatal(self._connect_failure(Stage.ROTATE if rotation else Stage.RECONNECT))
            return
        await self._replay_conversation()
        self._reconnecting = False  # held caller audio goes once the session is configured
        logger.info(f"{self} reconnected; replayed {len(self.transcript)} turns")

    async def _replay_conversation(self):
        for entry in self.transcript:
            if entry.unrecognised:
                continue  # no words to give: the new session did not hear that audio
            if entry.role == "caller":
                content = events.ItemContent(type="input_text", text=entry.text)
                item = events.ConversationItem(type="message", role="user", content=[content])
            else:
                content = events.ItemContent(type="output_text", text=entry.text)
                item = events.ConversationItem(type="message", role="assistant", content=[content])
            await self.send_client_event(events.ConversationItemCreateEvent(item=item))

    def _sent_caller_audio(self, payload: str) -> None:
        """Note caller audio the session got, in case a new session must hear its turn."""
        self._turn_audio.append(payload)

    def _turn_ended(self) -> None:
        """The caller's turn went to the session (``speech_stopped``): it need not go again."""
        self._turn_audio.clear()

    def _hold_audio(self, payload: str, size: int):
        self._held_audio.append(payload)
        limit = MAX_BUFFERED_AUDIO_MS * BYTES_PER_MS // max(1, size)
        while len(self._held_audio) > limit:
            self._held_audio.popleft()
            self._held_dropped += 1
            if self._held_dropped == 1 or self._held_dropped % 250 == 0:
                logger.warning(
                    f"{self} reconnecting: over {MAX_BUFFERED_AUDIO_MS} ms of caller audio "
                    f"held; dropped the oldest ({self._held_dropped} packets so far)"
                )

    async def _fatal(self, failure: Failure):
        """The Realtime API is gone for this call: fallback line or transfer, never dead air.

        Before the call is known (a pre-warmed session), the failure waits for it.
        """
        if self._pending_failure is not None:
            return  # falling back already
        logger.error(f"{self} Realtime API unusable ({failure}); falling back")
        self._pending_failure = failure
        await self._close_socket()
        await self._fall_back(failure)

    async def _close_socket(self) -> None:
        """Close the session's socket, if any, whatever state it is in."""
        websocket, self._websocket = self._websocket, None
        if websocket is not None:
            with contextlib.suppress(Exception):
                await websocket.close()
