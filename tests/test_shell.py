"""The shell for bot authors: `emulator` on its own port, `simulate --url` against a `serve`."""

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from types import SimpleNamespace

import pytest
from conftest import clean_env, free_port, wait_for_port

from pipecat_realtime_twilio.agent.realtime import KEYPAD_INPUT
from pipecat_realtime_twilio.errors import SettingsError
from pipecat_realtime_twilio.shell_args import (
    Press,
    check_shell_arguments,
    parse_press,
    runner_target,
)
from pipecat_realtime_twilio.shell_progress import record_lines
from pipecat_realtime_twilio.testing.replies_file import (
    DEFAULT_LINE,
    ScriptedReplies,
    load_replies,
    parse_replies,
)

KEYS_BOT = """\
---
description: Presses are the answer.
greeting: Hello. Press one and hash.
tools: [end_call]
---
Ask the caller to press one and hash. Then say goodbye and call end_call.
"""

REPLIES = """\
# What the emulated model says, for tests/test_shell.py.
transcripts:
  - "What time do you open?"
turns:
  - keys: "1#"
    say: You pressed one. Goodbye!
    call: end_call
"""


# --- --press and --url -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, press",
    [
        ("1#", Press("1#")),
        ("1#@2.5", Press("1#", 2.5)),
        ("*9@6", Press("*9", 6.0)),
        (" 0@.5 ", Press("0", 0.5)),
    ],
)
def test_press_takes_keys_and_an_optional_time(text, press):
    assert parse_press(text) == press


@pytest.mark.parametrize(
    "text, problem",
    [
        ("1x", "not keypad keys: 'x'"),
        ("1#@", "optionally @SECONDS"),
        ("@2", "optionally @SECONDS"),
        ("1#@-1", "optionally @SECONDS"),
        ("", "give keys from 0-9 * #"),
    ],
)
def test_press_says_what_is_wrong(text, problem):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(problem)):
        parse_press(text)


def test_url_is_a_base_or_a_webhook_and_the_signature_goes_over_the_public_url():
    base = runner_target("http://127.0.0.1:8080/")
    assert base.dial_url == base.signed_url == "http://127.0.0.1:8080/incoming"

    webhook = runner_target(
        "http://127.0.0.1:8080/incoming?bot=survey", public_url="https://bot.example.com/"
    )
    assert webhook.dial_url == "http://127.0.0.1:8080/incoming?bot=survey"
    assert webhook.signed_url == "https://bot.example.com/incoming?bot=survey"

    # --bot wins over the URL's; a runner mounted under a prefix keeps it on both sides.
    mounted = runner_target(
        "http://10.0.0.5:9000/twilio/incoming?bot=a", "https://x.example.com", bot="b"
    )
    assert mounted.server_url == "http://10.0.0.5:9000/twilio"
    assert mounted.signed_url == "https://x.example.com/twilio/incoming?bot=b"


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ws://127.0.0.1:8080", "http://"])
def test_url_that_is_not_http_is_named(url):
    with pytest.raises(SettingsError, match="--url .* is not an http"):
        runner_target(url)


def test_options_of_a_running_runner_need_url():
    args = argparse.Namespace(
        url=None, public_url=None, auth_token=None, api_key=None, press=None, hangup_after=3.0
    )
    with pytest.raises(SettingsError, match="^--hangup-after needs --url"):
        check_shell_arguments(args)
    check_shell_arguments(argparse.Namespace(**{**vars(args), "url": "http://127.0.0.1:1"}))


def test_record_is_printed_in_time_order():
    record = {
        "call_sid": "CA1",
        "bot": "keys",
        "end_reason": "bot ended the call",
        "duration_s": 4.2,
        "started_at": 100.0,
        "transcript": [
            {"role": "bot", "text": "Hello.", "at": 101.0},
            {"role": "bot", "text": "Goodbye!", "at": 103.5, "interrupted": True},
        ],
        "keypad": [{"digits": "1#", "at": 102.0}],
        "tool_calls": [{"name": "end_call", "arguments": "{}", "result": "ok", "at": 103.6}],
    }
    assert record_lines(record) == [
        "Record of call CA1 (bot 'keys'): ended: bot ended the call after 4.2 s",
        "  [  1.0 s]      bot: Hello.",
        "  [  2.0 s]     keys: 1#",
        "  [  3.5 s]      bot: Goodbye! (cut off)",
        "  [  3.6 s]     tool: end_call {} -> ok",
    ]


# --- the replies file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("turns:\n  - say: hi\n  - sya: hello\n", 3, "turn 2: unknown key 'sya'"),
        ("- say: hi\n- keys: 1x\n  say: no\n", 2, "turn 2: 'keys' must be keypad keys"),
        ("- when: '(open'\n  say: x\n", 1, "turn 1: 'when' is not a regular expression"),
        ("- say: hi\n\n- say: x\n  arguments: {a: 1}\n", 4, "turn 2: 'arguments' without"),
        ("- say:\n", 1, "turn 1: 'say' must be the words the model says, as text"),
        ("- call: end call\n", 1, "turn 1: 'call' must be a tool's name"),
        ("- say: y\n  when: x\n  keys: '1'\n", 3, "not both"),
        ("- when: x\n", 1, "turn 1: a turn needs 'say'"),
        ("- say: [a, b]\n", 1, "turn 1: 'say' must be the words"),
        ("turns: []\nvoice: marin\n", 2, "unknown key 'voice'"),
        ("transcripts: [a]\n", 1, "no 'turns:'"),
        ("turns: []\ntranscripts: [a, {b: c}]\n", 2, "'transcripts': each entry must be text"),
        ("turns: []\ndefault: [a]\n", 2, "'default' must be the line the model says"),
        ("say: hello\n", 1, "unknown key 'say'"),
        ("- say: hi\n  - say: there\n", 2, "not YAML"),
        ("hello\n", 1, "a replies file is a list of turns"),
        ("", 1, "the replies file is empty"),
    ],
)
def test_a_bad_replies_file_is_one_line_naming_file_line_and_problem(text, line, problem):
    with pytest.raises(SettingsError) as raised:
        parse_replies(text, "replies.yaml")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"replies.yaml:{line}: ")
    assert problem in message


def test_a_missing_replies_file_is_named(tmp_path):
    with pytest.raises(SettingsError, match="nope.yaml: no such replies file"):
        load_replies(tmp_path / "nope.yaml")


def test_a_replies_file_reads_turns_transcripts_and_default():
    script = parse_replies(
        "transcripts:\n  - What time do you open?\n  - no\n"
        "default: That's all.\n"
        "turns:\n"
        "  - when: (?i)open\n"
        "    say: Nine.\n"
        "  - keys: 12\n"
        "    call: lookup\n"
        "    arguments: {order: 12, urgent: true}\n"
        "  - say: Next.\n",
        "r.yaml",
    )
    assert script.transcripts == ("What time do you open?", "no")  # as written
    assert script.default == "That's all."
    assert [turn.line for turn in script.turns] == [6, 8, 11]
    lookup = script.turns[1].reply()
    assert lookup.text == "" and lookup.function_call is not None
    assert (lookup.function_call.name, lookup.function_call.arguments) == (
        "lookup",
        {"order": 12, "urgent": True},
    )
    assert parse_replies("- say: hi\n").default == DEFAULT_LINE
    assert parse_replies("- say: no\n").turns[0].say == "no"  # not YAML's False


def _session(sid="sess_1"):
    return SimpleNamespace(id=sid, items=[], client_events=[])


def _user(session, text=None, transcript=None):
    part = (
        {"type": "input_text", "text": text}
        if text is not None
        else {"type": "input_audio", "transcript": transcript}
    )
    session.items.append(
        {"id": f"item_{len(session.items)}", "type": "message", "role": "user", "content": [part]}
    )


def test_scripted_replies_follow_keys_words_and_order():
    script = parse_replies(
        "- keys: '1#'\n  say: One.\n"
        "- when: (?i)hours\n  say: Nine to five.\n"
        "- say: First.\n"
        "- say: Second.\n  call: end_call\n"
    )
    told = []
    replies = ScriptedReplies(script, on_turn=lambda session, what: told.append(what))
    call = _session()
    # The greeting and other words the bot asks for are said as asked.
    call.client_events.append(
        {"type": "response.create", "response": {"instructions": _say("Hello there.")}}
    )
    assert replies(call, "response.create").text == "Hello there."
    call.client_events.clear()

    _user(call, text=KEYPAD_INPUT + "1")  # the '#' is optional on either side
    assert replies(call, "response.create").text == "One."
    _user(call, transcript="What are your hours?")
    assert replies(call, "vad").text == "Nine to five."
    _user(call, transcript="Thanks.")  # no condition matches: the next turn in order
    assert replies(call, "vad").text == "First."
    _user(call, text=KEYPAD_INPUT + "2")  # keys with no turn of their own: in order too
    second = replies(call, "response.create")
    assert second.text == "Second." and second.function_call.name == "end_call"
    assert replies(call, "response.create").text == DEFAULT_LINE  # after the tool's result
    _user(call, text=KEYPAD_INPUT + "1#")  # conditions answer every time they match
    assert replies(call, "response.create").text == "One."
    # Another call starts the script over.
    other = _session("sess_2")
    _user(other, transcript="Hi")
    assert replies(other, "vad").text == "First."
    assert told[:3] == [
        "saying what the bot asked for",
        'script turn keys "1#" (line 1)',
        'script turn when "(?i)hours" (line 3)',
    ]


def _say(words):
    from pipecat_realtime_twilio.agent.conversation import SAY_INSTRUCTION

    return "Be nice. " + SAY_INSTRUCTION + words


# --- the shell, end to end -------------------------------------------------------------------


async def _cli(*args, env, cwd, stderr):
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipecat_realtime_twilio",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


async def _lines_with_times(stream) -> list[tuple[float, str]]:
    """Each line of ``stream`` with the loop time it arrived at."""
    loop = asyncio.get_running_loop()
    lines = []
    while line := await stream.readline():
        lines.append((loop.time(), line.decode().rstrip("\n")))
    return lines


async def _simulate(*args, env, cwd, timeout=60):
    process = await _cli("simulate", *args, env=env, cwd=cwd, stderr=asyncio.subprocess.PIPE)
    lines, stderr = await asyncio.wait_for(
        asyncio.gather(_lines_with_times(process.stdout), process.stderr.read()), timeout
    )
    await process.wait()
    return process.returncode, lines, stderr.decode()


def _at(lines, pattern):
    """The arrival time and text of the first line matching ``pattern``."""
    found = next(((at, text) for at, text in lines if re.search(pattern, text)), None)
    assert found is not None, f"no line matches {pattern!r} in:\n" + "\n".join(t for _, t in lines)
    return found


async def _serve(tmp_path, port, realtime_url, public):
    """``serve`` on ``port`` with the keys bot, its output in ``serve.log``."""
    (tmp_path / "bots").mkdir(exist_ok=True)
    (tmp_path / "bots" / "keys.md").write_text(KEYS_BOT)
    with open(tmp_path / "serve.log", "wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipecat_realtime_twilio",
            "serve",
            cwd=tmp_path,
            stdout=log,
            stderr=log,
            env=clean_env(
                OPENAI_API_KEY="sk-test",
                OPENAI_REALTIME_URL=realtime_url,
                TWILIO_AUTH_TOKEN="the-token",
                PUBLIC_URL=public,
                PORT=str(port),
                BOTS_DIR=str(tmp_path / "bots"),
                BOT="keys",
                DATABASE_URL=f"sqlite:///{tmp_path}/calls.db",
                RUNNER_API_KEY="the-key",
            ),
        )


async def _stop(*processes):
    for process in processes:
        if process is not None and process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)


@pytest.mark.call
async def test_simulate_url_calls_a_running_serve_and_keys_reach_the_model(tmp_path):
    (tmp_path / "replies.yaml").write_text(REPLIES)
    emulator_port, runner_port = free_port(), free_port()
    public = "https://bot.example.com"  # what the runner believes; it listens on 127.0.0.1
    emulator = await _cli(
        "emulator",
        "--port",
        str(emulator_port),
        "--replies",
        "replies.yaml",
        env=clean_env(),
        cwd=tmp_path,
        stderr=asyncio.subprocess.STDOUT,
    )
    serve = None
    try:
        banner = [(await asyncio.wait_for(emulator.stdout.readline(), 60)).decode()]
        while "OPENAI_BASE_URL=" not in banner[-1]:
            assert banner[-1], "the emulator stopped: " + "".join(banner)  # EOF, not a line
            banner.append((await asyncio.wait_for(emulator.stdout.readline(), 10)).decode())
        realtime = next(line for line in banner if "OPENAI_REALTIME_URL=" in line)
        assert realtime.split("=", 1)[1].strip() == f"ws://127.0.0.1:{emulator_port}/v1/realtime"
        assert "replies.yaml (1 turn)" in banner[0]

        serve = await _serve(tmp_path, runner_port, realtime.split("=", 1)[1].strip(), public)
        await wait_for_port(runner_port, serve)
        url = f"http://127.0.0.1:{runner_port}"
        # The shell's environment, as a bot author's .env would have it.
        shell = clean_env(
            TWILIO_AUTH_TOKEN="the-token", PUBLIC_URL=public, RUNNER_API_KEY="the-key"
        )

        code, lines, stderr = await _simulate(
            "--url", url, "--press", "1#@2", "--out", "heard.wav", env=shell, cwd=tmp_path
        )
        printed = "\n".join(text for _, text in lines)
        print(printed)
        assert code == 0, stderr + printed
        # Printed as it went: the keys line came through the pipe before the runner ended the
        # call (after the bot's goodbye was heard), not all at once at the end.
        pressed_at, _ = _at(lines, r"\] you press 1# \(at 2 s\)$")
        closed_at, _ = _at(lines, r"\] the runner closed the stream \(code 1000\)")
        assert pressed_at < closed_at
        # With the runner's key, the words came as they were said: the greeting's before the end.
        greeted_at, _ = _at(lines, r"\] bot: Hello\. Press one and hash\.$")
        assert greeted_at < closed_at
        _at(lines, r"\] greeting heard \d+ ms after the stream started")
        _at(lines, r"\] the call goes on to: <Hangup>")
        # The keys reached the model: the reply scripted for them was spoken, and the record
        # has the keypad group.
        _at(lines, r"ended: bot ended the call")
        _at(lines, r"^  \[ *[\d.]+ s\]     keys: 1#$")
        _at(lines, r"^  \[ *[\d.]+ s\]      bot: You pressed one\. Goodbye!$")
        _at(lines, r"tool: end_call")
        assert (tmp_path / "heard.wav").stat().st_size > 8000

        # Keys pressed after the greeting (no time given), then hang up at a time.
        code, lines, stderr = await _simulate(
            "--url", url, "--press", "1#", env=shell, cwd=tmp_path
        )
        assert code == 0, stderr
        greeting_quiet, _ = _at(lines, r"\] bot quiet after")
        assert greeting_quiet < _at(lines, r"\] you press 1#$")[0]
        _at(lines, r"bot: You pressed one\. Goodbye!$")

        # The caller speaks (the built-in sample): their words come as they are transcribed.
        code, lines, stderr = await _simulate("--url", url, env=shell, cwd=tmp_path)
        assert code == 0, stderr
        heard_at, _ = _at(lines, r"\] caller: What time do you open\?$")
        _at(lines, r"\] bot: That is all my script says")
        assert heard_at < _at(lines, r"\] you hang up$")[0]
        _at(lines, r"ended: caller hung up")

        # Without the runner's key: the progress lines only, no words.
        keyless = {k: v for k, v in shell.items() if k != "RUNNER_API_KEY"}
        code, lines, stderr = await _simulate(
            "--url", url, "--hangup-after", "1", env=keyless, cwd=tmp_path
        )
        assert code == 0, stderr
        _at(lines, r"\] you hang up$")
        _at(lines, r"give the runner's RUNNER_API_KEY")
        assert not [text for _, text in lines if re.search(r"\] (bot|caller): ", text)]

        # A wrong token: refused at the webhook, one line that says so.
        wrong = {**shell, "TWILIO_AUTH_TOKEN": "not-the-token"}
        code, lines, stderr = await _simulate(
            "--url", url, "--press", "1#", env=wrong, cwd=tmp_path
        )
        assert code == 1
        assert stderr.count("\n") == 1 and "refused the webhook's signature (HTTP 403)" in stderr
        assert f"signed over {public}/incoming" in stderr

        # A bot the runner does not have: it answers with its default; simulate says so.
        code, lines, stderr = await _simulate(
            "--url", url, "--bot", "nosuch", "--press", "1", env=shell, cwd=tmp_path
        )
        assert code == 1
        assert stderr == (
            "pipecat-realtime-twilio: the runner has no bot 'nosuch': it answered with 'keys' "
            "(pipecat-realtime-twilio bots lists them)\n"
        )

        # The emulator told each session, turn and tool call as it went.
        emulator.send_signal(signal.SIGTERM)
        told = (await asyncio.wait_for(emulator.stdout.read(), 15)).decode()
        assert await asyncio.wait_for(emulator.wait(), 15) == 0
        print(told)
        assert re.search(r"sess_\w+ caller pressed 1#\n.*response: script turn keys \"1#\"", told)
        assert re.search(r'sess_\w+ said "You pressed one\. Goodbye!"', told)
        assert re.search(r"sess_\w+ called end_call \{\}", told)
        assert "tool result" in told and "closed" in told
    finally:
        await _stop(serve, emulator)
        if serve is not None and serve.returncode not in (0, -signal.SIGTERM):
            print((tmp_path / "serve.log").read_text())


@pytest.mark.call
async def test_emulator_with_a_bad_replies_file_stops_in_one_line(tmp_path):
    (tmp_path / "replies.yaml").write_text("turns:\n  - say: Hi\n  - keys: '1#'\n")
    process = await _cli(
        "emulator",
        "--port",
        str(free_port()),
        "--replies",
        "replies.yaml",
        env=clean_env(),
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert stdout == b""
    assert stderr.decode() == (
        "pipecat-realtime-twilio: replies.yaml:3: turn 2: a turn needs 'say' (words), "
        "'call' (a tool), or both\n"
    )


@pytest.mark.call
async def test_simulate_url_with_nothing_there_says_so(tmp_path):
    code, lines, stderr = await _simulate(
        "--url",
        f"http://127.0.0.1:{free_port()}",
        env=clean_env(TWILIO_AUTH_TOKEN="t"),
        cwd=tmp_path,
    )
    assert code == 1
    assert stderr.count("\n") == 1 and "nothing answers at" in stderr
    assert "is pipecat-realtime-twilio serve running there?" in stderr
    assert len(lines) == 1 and "] dialling http://127.0.0.1:" in lines[0][1]


@pytest.mark.call
async def test_simulate_url_exits_1_when_the_runner_fails_the_call(tmp_path):
    """No Realtime API where the runner looks: the caller gets the fallback; simulate says so."""
    port = free_port()
    nowhere = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    serve = await _serve(tmp_path, port, nowhere, f"http://127.0.0.1:{port}")
    try:
        await wait_for_port(port, serve)
        code, lines, stderr = await _simulate(
            "--url",
            f"http://127.0.0.1:{port}",
            "--api-key",
            "the-key",
            "--press",
            "1#",
            env=clean_env(TWILIO_AUTH_TOKEN="the-token"),
            cwd=tmp_path,
        )
    finally:
        await _stop(serve)
    assert code == 1
    assert stderr == "pipecat-realtime-twilio: the call failed (failed: connect: unreachable)\n"
    _at(lines, r"the call goes on to: <Say> Sorry, I'm having technical trouble")
