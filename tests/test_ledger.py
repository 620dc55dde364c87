"""The heard ledger on its own: no sockets, no Pipecat, milliseconds per test."""

from hypothesis import given
from hypothesis import strategies as st

from pipecat_realtime_twilio.agent.ledger import HeardLedger, Truncation, cut_words
from pipecat_realtime_twilio.audio import BYTES_PER_MS

CHUNK = 40 * BYTES_PER_MS  # one 40 ms delta


def speak(ledger: HeardLedger, response: str, items: dict[str, int], text: str = "") -> None:
    """A response that speaks ``items`` (item -> number of 40 ms deltas) and says ``text``."""
    ledger.response_started(response)
    for item, deltas in items.items():
        for _ in range(deltas):
            assert ledger.audio(item, 0, response, CHUNK)
    if text:
        for word in text.split(" "):
            ledger.text(response, word + " ")


def test_a_response_heard_in_full_truncates_nothing_and_keeps_its_words():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_1": 5}, "hello there how are you")
    entry = ledger.response_done("resp_1")
    assert entry is not None and entry.role == "bot"
    assert entry.text == "hello there how are you" and not entry.interrupted
    cut = ledger.cut({"item_1": 5 * CHUNK})
    assert cut.truncations == [] and not cut.interrupted


def test_a_barge_in_truncates_at_what_was_heard_and_cuts_the_words():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_1": 10}, "one two three four five six seven eight nine ten")
    cut = ledger.cut({"item_1": 4 * CHUNK})  # 160 ms of 400 ms heard
    assert cut.interrupted
    assert cut.truncations == [Truncation("item_1", 0, 160)]
    # The transcript ends with the response: cut to the share heard, marked interrupted.
    entry = ledger.response_done("resp_1")
    assert entry is not None and entry.interrupted
    assert entry.text == "one two three four"


def test_late_audio_of_a_cut_response_is_refused_until_it_is_done():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_1": 3})
    ledger.cut({"item_1": CHUNK})
    assert not ledger.audio("item_1", 0, "resp_1", CHUNK)  # a delta already on its way
    assert ledger.unconfirmed == {}  # and nothing of it is tracked
    ledger.response_done("resp_1")
    speak(ledger, "resp_2", {"item_2": 1})
    assert ledger.unconfirmed == {"item_2": CHUNK}


def test_a_cut_after_the_response_ended_cuts_its_entry_in_place():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_1": 4}, "a b c d")
    entry = ledger.response_done("resp_1")  # the text is done before the phone played it
    assert entry is not None and not entry.interrupted
    ledger.cut({"item_1": 2 * CHUNK})
    assert entry.interrupted and entry.text == "a b"
    # A second cut of the same entry changes nothing.
    speak(ledger, "resp_2", {"item_2": 1})
    ledger.cut({})
    assert entry.text == "a b"


def test_several_items_of_one_response_are_truncated_each_at_its_own_point():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_a": 2, "item_b": 3}, "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10")
    # item_a was heard in full, item_b not at all.
    cut = ledger.cut({"item_a": 2 * CHUNK})
    assert cut.truncations == [Truncation("item_b", 0, 0)]
    entry = ledger.response_done("resp_1")
    assert entry is not None and entry.text == "w1 w2 w3 w4"  # 2 of 5 deltas heard


def test_heard_bytes_beyond_what_arrived_never_truncate_past_the_audio():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_1": 2})
    ledger.audio("item_2", 1, "resp_1", 100)
    cut = ledger.cut({"item_1": 10 * CHUNK, "item_2": 99})
    assert cut.truncations == [Truncation("item_2", 1, 99 // BYTES_PER_MS)]


def test_prune_forgets_items_the_phone_confirmed_in_full():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_1": 2, "item_2": 2})
    confirmed = {"item_1": 2 * CHUNK, "item_2": CHUNK}
    assert ledger.prune(lambda item: confirmed.get(item, 0)) == ["item_1"]
    assert ledger.unconfirmed == {"item_2": 2 * CHUNK}


def test_a_lost_session_forgets_its_items_and_its_response():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_1": 2}, "lost words")
    ledger.forget_session()
    assert ledger.unconfirmed == {}
    # No response is in progress: a barge-in now cuts nothing and drops no audio.
    assert ledger.cut({}).truncations == []
    assert ledger.audio("item_9", 0, "resp_1", CHUNK)


def test_a_response_that_said_nothing_has_no_entry():
    ledger = HeardLedger()
    speak(ledger, "resp_1", {"item_1": 1})
    assert ledger.response_done("resp_1") is None


def test_only_the_newest_entries_can_still_be_cut():
    ledger = HeardLedger(entries_kept=2)
    entries = []
    for n in range(3):
        speak(ledger, f"resp_{n}", {f"item_{n}": 2}, "x y")
        entries.append(ledger.response_done(f"resp_{n}"))
    # The oldest entry is out of reach; its item's audio is still unconfirmed.
    ledger.cut({})
    assert [e.interrupted for e in entries if e is not None] == [False, True, True]


@given(
    deltas=st.lists(st.integers(min_value=1, max_value=2000), min_size=1, max_size=30),
    items=st.integers(min_value=1, max_value=4),
    heard_share=st.floats(min_value=0.0, max_value=1.5),
    late=st.lists(st.integers(min_value=1, max_value=2000), max_size=5),
)
def test_any_barge_in_point(deltas, items, heard_share, late):
    """Random deltas over several items, a barge-in anywhere, late deltas after it."""
    ledger = HeardLedger()
    ledger.response_started("resp_1")
    received: dict[str, int] = {}
    for n, size in enumerate(deltas):
        item = f"item_{n % items}"
        assert ledger.audio(item, 0, "resp_1", size)
        received[item] = received.get(item, 0) + size
    assert ledger.unconfirmed == received
    heard = {item: int(size * heard_share) for item, size in received.items()}
    cut = ledger.cut(heard)
    truncated = {t.item_id: t for t in cut.truncations}
    for item, size in received.items():
        played = min(heard[item], size)
        if played < size:
            # Truncated at what was heard, never beyond the item's audio.
            assert truncated[item].audio_end_ms == played // BYTES_PER_MS
            assert truncated[item].audio_end_ms * BYTES_PER_MS <= size
        else:
            assert item not in truncated
    assert cut.interrupted == bool(cut.truncations)
    for size in late:  # late deltas of the cut response are all dropped
        assert not ledger.audio("item_0", 0, "resp_1", size)
    assert ledger.unconfirmed == {}
    for word in ["w"] * 20:
        ledger.text("resp_1", word + " ")
    entry = ledger.response_done("resp_1")
    assert entry is not None
    heard_total = sum(min(heard[i], s) for i, s in received.items())
    share = heard_total / sum(received.values())
    if cut.interrupted:
        assert entry.interrupted and entry.text == cut_words("w " * 20, share)
    else:
        assert not entry.interrupted and len(entry.text.split()) == 20


def test_cut_words_keeps_the_share_heard():
    assert cut_words("a b c d", 0.5) == "a b"
    assert cut_words("a b c d", 0.0) == ""
    assert cut_words("a b c d", 2.0) == "a b c d"
