#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Scripted replies from a YAML file, for ``pipecat-realtime-twilio emulator --replies FILE``.

A replies file is a list of turns, or a mapping with ``turns:`` and optionally
``transcripts:`` and ``default:``::

    transcripts:                 # what the caller's spoken turns are reported as, in order
      - What time do you open?
    default: Sorry, my script has nothing more.   # when the script has run out
    turns:
      - when: "(?i)open"         # a regex searched in the caller's words
        say: We open at nine.
      - keys: "1#"               # keypad input (quote it: YAML)
        say: You pressed one. Goodbye!
        call: end_call           # then the model calls a tool...
        arguments: {}            # ...with these arguments
      - say: Anything else?      # no when/keys: the next turn in order

How a response is chosen (:class:`ScriptedReplies`), in a call (one emulated session):

1. The greeting and the words the bot asks the model to say exactly (an apology, a
   closing line) are spoken as asked (:func:`~pipecat_realtime_twilio.testing.model.words_to_say`).
2. When the caller gave new input since the last response, the first turn with a
   matching condition answers it: ``keys:`` matches keypad input (the keys of one
   group, a trailing ``#`` optional on either side), ``when:`` a spoken turn's
   transcript or typed text (``re.search``). Turns with a condition answer every time
   they match.
3. Otherwise the next turn without a condition, in order (each is used once per call):
   the answer to a spoken turn no condition matched, or to a tool's result.
4. When those have run out: ``default`` (a line saying the script is over).

The emulator cannot hear: a spoken turn's transcript is the next line of
``transcripts`` (the list starts over with each new session, i.e. each call;
concurrent calls share it), else ``(caller speech, N ms)``. So ``when:`` matches
spoken turns in the order the transcripts give, whatever was said; keypad input
reaches the model as text, so ``keys:`` matches what was really pressed.

A mistake stops :func:`load_replies` with one line naming the file, the line and the
problem (:class:`~pipecat_realtime_twilio.errors.SettingsError`).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT
from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.testing.emulator import FunctionCall, Reply
from pipecat_realtime_twilio.testing.model import words_to_say

DEFAULT_LINE = "That is all my script says. This is the bundled emulator speaking."
"""What the model says when the script has run out and the file gives no ``default``."""

KEYPAD_KEYS = "0123456789*#"
"""The keys a ``keys:`` condition may name."""

TURN_KEYS = ("say", "call", "arguments", "when", "keys")
"""The keys of one turn."""

FILE_KEYS = ("turns", "transcripts", "default")
"""The keys of a replies file that is a mapping."""

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class ScriptTurn:
    """One turn of a replies file.

    Parameters:
        line: The file line the turn starts on.
        say: What the model says (may be empty when it only calls a tool).
        call: The tool the model calls after speaking, if any.
        arguments: The tool's arguments.
        when: Answers caller words this regex finds (``re.search``).
        keys: Answers this keypad input.
    """

    line: int
    say: str = ""
    call: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    when: re.Pattern[str] | None = None
    keys: str | None = None

    @property
    def conditional(self) -> bool:
        """Whether the turn answers only input that matches its ``when`` or ``keys``."""
        return self.when is not None or self.keys is not None

    def reply(self) -> Reply:
        """The emulator's reply for this turn."""
        call = FunctionCall(self.call, dict(self.arguments)) if self.call else None
        return Reply(text=self.say, function_call=call)

    def describe(self) -> str:
        """The turn in a few words, e.g. ``keys "1#" (line 4)``."""
        if self.keys is not None:
            return f'keys "{self.keys}" (line {self.line})'
        if self.when is not None:
            return f'when "{self.when.pattern}" (line {self.line})'
        return f"line {self.line}"

    def matches(self, kind: str, value: str) -> bool:
        """Whether this turn answers caller input.

        Args:
            kind: ``"keys"`` (keypad digits) or ``"text"`` (a transcript or typed text).
            value: The digits or the text.
        """
        if kind == "keys" and self.keys is not None:
            return self.keys.rstrip("#") == value.rstrip("#") and value.rstrip("#") != ""
        if kind == "text" and self.when is not None:
            return self.when.search(value) is not None
        return False


@dataclass(frozen=True)
class RepliesScript:
    """A parsed replies file.

    Parameters:
        path: The file.
        turns: Its turns, in order.
        transcripts: What the caller's spoken turns are reported as, in order.
        default: What the model says once the script has run out.
    """

    path: Path
    turns: tuple[ScriptTurn, ...]
    transcripts: tuple[str, ...] = ()
    default: str = DEFAULT_LINE


def load_replies(path: str | Path) -> RepliesScript:
    """Read and check a replies file.

    Args:
        path: The YAML file.

    Returns:
        The script.

    Raises:
        SettingsError: One line naming the file, the line and the problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such replies file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path}: cannot read the replies file ({e})") from None
    return parse_replies(text, path)


def parse_replies(text: str, path: str | Path = "<replies>") -> RepliesScript:
    """Parse the text of a replies file.

    Args:
        text: The YAML text.
        path: The file's name, for error messages.

    Returns:
        The script.

    Raises:
        SettingsError: One line naming the file, the line and the problem.
    """
    path = Path(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise SettingsError(f"{path}:{line}: not YAML: {problem}") from None

    def fail(node: yaml.Node | None, problem: str) -> SettingsError:
        line = node.start_mark.line + 1 if node is not None else 1
        return SettingsError(f"{path}:{line}: {problem}")

    if root is None:
        raise fail(None, "the replies file is empty; give a list of turns such as '- say: Hello'")
    transcripts: tuple[str, ...] = ()
    default = DEFAULT_LINE
    turns_node: yaml.Node | None = root
    turns_data: Any = data
    if isinstance(root, yaml.MappingNode):
        turns_node, turns_data = None, None
        for key, value in root.value:
            name = key.value
            if name not in FILE_KEYS:
                raise fail(key, f"unknown key '{name}' (a replies file has {', '.join(FILE_KEYS)})")
            if name == "turns":
                turns_node, turns_data = value, data[name]
            elif name == "transcripts":
                transcripts = _strings(data[name], value, "transcripts", fail)
            else:
                written = value.value if isinstance(value, yaml.ScalarNode) else None
                if not isinstance(written, str) or not written.strip():
                    raise fail(value, "'default' must be the line the model says, as text")
                default = written.strip()
        if turns_node is None:
            raise fail(root, "no 'turns:' (the list of what the model says)")
    if not isinstance(turns_node, yaml.SequenceNode) or not isinstance(turns_data, list):
        raise fail(
            turns_node,
            "a replies file is a list of turns ('- say: Hello'), or a mapping with 'turns:'",
        )
    turns = tuple(
        _turn(index + 1, node, value, fail)
        for index, (node, value) in enumerate(zip(turns_node.value, turns_data, strict=True))
    )
    return RepliesScript(path=path, turns=turns, transcripts=transcripts, default=default)


def _strings(
    value: Any, node: yaml.Node, name: str, fail: Callable[[yaml.Node, str], SettingsError]
) -> tuple[str, ...]:
    if not isinstance(value, list) or not isinstance(node, yaml.SequenceNode):
        raise fail(node, f"'{name}' must be a list of lines")
    lines = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or item.tag.endswith(":null"):
            raise fail(item, f"'{name}': each entry must be text")
        lines.append(str(item.value))  # as written: '- no' is "no"
    return tuple(lines)


def _turn(
    number: int, node: yaml.Node, value: Any, fail: Callable[[yaml.Node, str], SettingsError]
) -> ScriptTurn:
    """Check one turn of the file and build it."""
    where = f"turn {number}"
    if not isinstance(node, yaml.MappingNode) or not isinstance(value, dict):
        raise fail(node, f"{where}: a turn is a mapping such as 'say: Hello'")
    nodes = {str(key.value): (key, item) for key, item in node.value}
    for name, (key, _) in nodes.items():
        if name not in TURN_KEYS:
            raise fail(key, f"{where}: unknown key '{name}' (a turn has {', '.join(TURN_KEYS)})")

    def key_node(name: str) -> yaml.Node:
        return nodes[name][0]

    def text(name: str, what: str) -> str | None:
        """The key's value as written (``say: no`` says "no"); None when absent."""
        if name not in nodes:
            return None
        item = nodes[name][1]
        written = item.value if isinstance(item, yaml.ScalarNode) else None
        if not isinstance(written, str) or not written.strip() or item.tag.endswith(":null"):
            raise fail(key_node(name), f"{where}: '{name}' must be {what}, as text")
        return written.strip()

    say = text("say", "the words the model says")
    call = text("call", "a tool's name")
    if call is not None and not _TOOL_NAME.fullmatch(call):
        raise fail(key_node("call"), f"{where}: 'call' must be a tool's name, not {call!r}")
    if say is None and call is None:
        raise fail(node, f"{where}: a turn needs 'say' (words), 'call' (a tool), or both")
    arguments = value.get("arguments")
    if "arguments" in nodes:
        if call is None:
            raise fail(key_node("arguments"), f"{where}: 'arguments' without 'call'")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise fail(key_node("arguments"), f"{where}: 'arguments' must be a mapping")
    if "when" in nodes and "keys" in nodes:
        raise fail(key_node("keys"), f"{where}: a turn has 'when' or 'keys', not both")
    pattern = text("when", "a regular expression")
    when = None
    if pattern is not None:
        try:
            when = re.compile(pattern)
        except re.error as e:
            problem = f"{where}: 'when' is not a regular expression ({e})"
            raise fail(key_node("when"), problem) from None
    keys = text("keys", "keypad keys (0-9, * and #)")
    if keys is not None and any(key not in KEYPAD_KEYS for key in keys):
        raise fail(
            key_node("keys"), f"{where}: 'keys' must be keypad keys (0-9, * and #), not {keys!r}"
        )
    return ScriptTurn(
        line=node.start_mark.line + 1,
        say=say or "",
        call=call,
        arguments=dict(arguments or {}),
        when=when,
        keys=keys,
    )


@dataclass
class _CallState:
    """How far one session (one call) is in the script."""

    next_turn: int = 0  # index into the unconditional turns
    answered: str | None = None  # the id of the last caller item answered


TurnListener = Callable[[Any, str], None]
"""Told ``(session, what)`` each time a response is chosen: ``what`` says which and why."""


class ScriptedReplies:
    """The emulator's reply source for a script: ``RealtimeEmulator(replies=ScriptedReplies(s))``.

    Each session (call) plays the script from the start; see the module's docstring for
    how a response is chosen.
    """

    def __init__(self, script: RepliesScript, on_turn: TurnListener | None = None):
        """Initialize the source.

        Args:
            script: The parsed replies file.
            on_turn: Told about each response chosen (for logging).
        """
        self.script = script
        self.on_turn = on_turn
        self._sequence = [turn for turn in script.turns if not turn.conditional]
        self._conditional = [turn for turn in script.turns if turn.conditional]
        self._calls: dict[str, _CallState] = {}

    def __call__(self, session: Any, trigger: str) -> Reply:
        """Choose the reply of a response of ``session``.

        Args:
            session: The emulated session.
            trigger: ``"response.create"`` or ``"vad"``.

        Returns:
            The reply.
        """
        reply, what = self._choose(session, trigger)
        if self.on_turn is not None:
            self.on_turn(session, what)
        return reply

    def _choose(self, session: Any, trigger: str) -> tuple[Reply, str]:
        words = words_to_say(session, trigger)
        if words:
            return Reply(text=words), "saying what the bot asked for"
        state = self._calls.setdefault(str(getattr(session, "id", id(session))), _CallState())
        latest = latest_caller_input(session)
        if latest is not None and latest[0] != state.answered:
            item_id, kind, value = latest
            state.answered = item_id
            turn = next((t for t in self._conditional if t.matches(kind, value)), None)
            if turn is not None:
                return turn.reply(), f"script turn {turn.describe()}"
        if state.next_turn < len(self._sequence):
            turn = self._sequence[state.next_turn]
            state.next_turn += 1
            return turn.reply(), f"script turn {turn.describe()}"
        return Reply(text=self.script.default), "the script has run out: the default line"


def latest_caller_input(session: Any) -> tuple[str, str, str] | None:
    """The caller's newest input in a session's conversation.

    Args:
        session: The emulated session: a Realtime one's ``items``; a GPT-Live one's
            ``contexts`` (keypad input only: its transcripts are not read here).

    Returns:
        ``(item_id, kind, value)``: ``kind`` ``"keys"`` with the digits of keypad
        input, or ``"text"`` with a spoken turn's transcript (empty when none) or typed
        text; None when the caller has given no input yet.
    """
    items = getattr(session, "items", None)
    if items is None:  # a GPT-Live session: keypad input comes as a context append
        contexts = list(getattr(session, "contexts", None) or [])
        for index in range(len(contexts) - 1, -1, -1):
            content = str(getattr(contexts[index], "content", ""))
            if content.startswith(KEYPAD_INPUT):
                return f"context-{index}", "keys", content[len(KEYPAD_INPUT) :].strip()
        return None
    for item in reversed(items):
        if item.get("type") != "message" or item.get("role") != "user":
            continue
        item_id = str(item.get("id"))
        for part in item.get("content") or []:
            text = part.get("text") or ""
            if part.get("type") == "input_text" and text.startswith(KEYPAD_INPUT):
                return item_id, "keys", text[len(KEYPAD_INPUT) :].strip()
            if part.get("type") == "input_text":
                return item_id, "text", text
            if part.get("type") == "input_audio":
                return item_id, "text", part.get("transcript") or ""
        return item_id, "text", ""
    return None
