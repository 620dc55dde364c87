"""GPT-Live's continuous audio as utterances, and what the caller heard of them (no I/O)."""

from pipecat_realtime_twilio.agent.live_ledger import (
    SPEECH_HANGOVER_MS,
    LiveLedger,
    LiveSpeech,
    is_quiet,
    is_voice,
)
from pipecat_realtime_twilio.audio import BYTES_PER_MS, pcm16_to_ulaw
from pipecat_realtime_twilio.testing.sounds import silence, tone

QUIET = b"\xff" * (100 * BYTES_PER_MS)  # 100 ms of digital silence
SPEECH = tone(100, freq=300)  # 100 ms of tone


def test_quiet_and_voice_tell_silence_from_speech():
    assert is_quiet(QUIET) and is_quiet(silence(20))
    assert not is_quiet(SPEECH)
    faint = pcm16_to_ulaw((30).to_bytes(2, "little", signed=True) * 160)  # -60 dBFS
    assert is_quiet(faint)
    loud_sample = pcm16_to_ulaw((2000).to_bytes(2, "little", signed=True)) + b"\xff" * 159
    assert not is_quiet(loud_sample)  # one sample is enough to be heard
    assert is_voice(SPEECH[:160]) and not is_voice(silence(20)) and not is_voice(faint)
    assert not is_voice(b"")


def test_quiet_before_speech_is_dropped_and_a_short_pause_kept():
    speech = LiveSpeech()
    assert speech.feed(QUIET).item is None
    first = speech.feed(SPEECH)
    assert first.began and first.item == "live_item_1"
    pause = speech.feed(QUIET)
    assert pause.item == "live_item_1" and pause.quiet and speech.quiet_ms == 100
    again = speech.feed(SPEECH)
    assert again.item == "live_item_1" and not again.began and speech.quiet_ms == 0


def test_a_long_quiet_ends_the_utterance_and_the_next_speech_starts_another():
    speech = LiveSpeech()
    speech.feed(SPEECH)
    steps = [speech.feed(QUIET) for _ in range(SPEECH_HANGOVER_MS // 100 + 2)]
    played = [s for s in steps if s.item is not None]
    assert len(played) == SPEECH_HANGOVER_MS // 100  # the hangover is played, no more
    ended = [s.ended for s in steps if s.ended]
    assert ended == ["live_item_1"] and speech.item is None
    assert all(s.item is None for s in steps[len(played) + 1 :])
    nxt = speech.feed(SPEECH)
    assert nxt.began and nxt.item == "live_item_2"
    assert speech.end() == "live_item_2" and speech.item is None and speech.end() is None


def test_a_cut_counts_only_unheard_speech_and_cuts_the_reply_by_its_share():
    ledger = LiveLedger()
    reply = ledger.reply_started()
    ledger.audio("live_item_1", reply, 800, quiet=False)  # 100 ms speech
    ledger.audio("live_item_1", reply, 800, quiet=False)  # 100 ms speech
    ledger.audio("live_item_1", reply, 800, quiet=True)  # 100 ms trailing quiet
    ledger.text(reply, "one two three four")
    assert ledger.unconfirmed == {"live_item_1": 2400}
    cut = ledger.cut({"live_item_1": 800})  # half the speech heard
    assert cut.interrupted and cut.item_id == "live_item_1" and cut.heard_ms == 100
    entry = ledger.reply_done(reply)
    assert entry is not None and entry.interrupted and entry.text == "one two"
    assert ledger.unconfirmed == {}


def test_only_trailing_quiet_unheard_is_no_barge_in():
    ledger = LiveLedger()
    reply = ledger.reply_started()
    ledger.audio("live_item_1", reply, 800, quiet=False)
    ledger.audio("live_item_1", reply, 800, quiet=True)
    ledger.text(reply, "hello there")
    assert ledger.speech_pending(lambda item: 400)
    assert not ledger.speech_pending(lambda item: 800)
    cut = ledger.cut({"live_item_1": 800})
    assert not cut.interrupted and cut.item_id is None
    entry = ledger.reply_done(reply)
    assert entry is not None and entry.text == "hello there" and not entry.interrupted


def test_a_late_cut_reaches_a_reply_already_done():
    ledger = LiveLedger()
    reply = ledger.reply_started()
    ledger.audio("live_item_1", reply, 1600, quiet=False)
    ledger.text(reply, "a b c d")
    entry = ledger.reply_done(reply)
    assert entry is not None and entry.text == "a b c d"
    ledger.cut({"live_item_1": 400})  # the phone was still playing it
    assert entry.interrupted and entry.text == "a"


def test_prune_forgets_what_the_phone_confirmed_and_a_silent_reply_has_no_entry():
    ledger = LiveLedger()
    reply = ledger.reply_started()
    ledger.audio("live_item_1", reply, 800, quiet=False)
    ledger.audio("live_item_2", reply, 800, quiet=False)
    assert ledger.prune({"live_item_1": 800, "live_item_2": 100}.__getitem__) == ["live_item_1"]
    assert ledger.unconfirmed == {"live_item_2": 800}
    assert ledger.reply_done(reply) is None  # it said nothing in words
    assert ledger.reply_done("live_reply_99") is None
