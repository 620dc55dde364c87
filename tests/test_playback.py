"""PlaybackClock: heard positions from marks, interpolation between echoes, clear, lead."""

from pipecat_realtime_twilio.phone.playback import PlaybackClock

MS = 8  # bytes per ms


def test_marks_confirm_what_was_played_per_item():
    clock = PlaybackClock()
    start = clock.start_mark(0.0)
    m1 = clock.sent(40 * MS, "item_a", 0.0)
    m2 = clock.sent(40 * MS, "item_a", 0.0)
    m3 = clock.sent(40 * MS, "item_b", 0.0)
    assert clock.lead_ms(0.0) == 120 and not clock.idle
    assert clock.echoed(start, 0.010)  # playback starts when Twilio has the audio
    assert clock.echoed(m1, 0.050)
    assert clock.confirmed_bytes("item_a") == 40 * MS
    assert clock.echoed(m2, 0.090)
    assert clock.confirmed_bytes("item_a") == 80 * MS
    assert clock.heard_bytes("item_b", 0.090) == 0
    assert clock.echoed(m3, 0.130) and clock.idle
    assert clock.confirmed_bytes("item_b") == 40 * MS
    assert clock.lead_ms(0.130) == 0


def test_position_advances_with_the_clock_but_not_past_an_unechoed_mark():
    clock = PlaybackClock()
    start = clock.start_mark(0.0)
    clock.sent(40 * MS, "a", 0.0)
    clock.sent(40 * MS, "a", 0.0)
    # Before the start mark is back nothing is known to play.
    assert clock.heard_bytes("a", 0.020) == 0
    clock.echoed(start, 0.005)
    assert clock.heard_bytes("a", 0.025) == 20 * MS
    # Capped at the first chunk's end until its mark comes back.
    assert clock.heard_bytes("a", 0.200) == 40 * MS
    assert clock.lead_ms(0.200) == 40


def test_echo_of_a_later_mark_acknowledges_the_earlier_ones():
    clock = PlaybackClock()
    clock.start_mark(0.0)
    clock.sent(40 * MS, "a", 0.0)
    last = clock.sent(40 * MS, "a", 0.0)
    assert clock.echoed(last, 0.1)
    assert clock.idle and clock.confirmed_bytes("a") == 80 * MS


def test_clear_returns_heard_estimate_and_ignores_flushed_echoes():
    clock = PlaybackClock()
    start = clock.start_mark(0.0)
    m1 = clock.sent(40 * MS, "a", 0.0)
    m2 = clock.sent(40 * MS, "a", 0.0)
    clock.echoed(start, 0.0)
    clock.echoed(m1, 0.040)
    heard = clock.clear(0.055)  # 15 ms into the second chunk
    assert heard == {"a": 55 * MS}
    assert clock.idle and clock.lead_ms(0.1) == 0
    # Twilio echoes the flushed mark right after the clear: it means nothing now.
    assert not clock.echoed(m2, 0.056)
    assert clock.confirmed_bytes("a") == 55 * MS


def test_unknown_marks_are_ignored():
    clock = PlaybackClock()
    clock.sent(40 * MS, "a", 0.0)
    assert not clock.echoed("nope", 0.01)
    assert not clock.idle


def test_overdue_marks_fall_back_to_the_wall_clock():
    clock = PlaybackClock(marks_overdue_secs=0.5)
    clock.start_mark(0.0)
    clock.sent(400 * MS, "a", 0.0)
    clock.sent(400 * MS, "a", 0.0)
    assert clock.lead_ms(0.4) == 800  # no echo at all yet: nothing known played
    assert not clock.marks_overdue
    assert clock.lead_ms(0.6) == 200  # no echo for 0.5 s: real time since the first send
    assert clock.marks_overdue
    assert clock.heard_bytes("a", 0.6) == 600 * MS
    clock.settle(0.7)  # not all played yet by the wall clock
    assert not clock.idle
    clock.settle(0.9)
    assert clock.idle and clock.confirmed_bytes("a") == 800 * MS


def test_round_trip_from_start_marks_counts_audio_played_while_a_clear_travels():
    clock = PlaybackClock()
    start = clock.start_mark(0.0)
    m1 = clock.sent(100 * MS, "a", 0.0)
    clock.sent(100 * MS, "a", 0.0)
    clock.echoed(start, 0.040)  # a 40 ms round trip
    assert clock.round_trip_secs == 0.040
    clock.echoed(m1, 0.140)  # ordinary marks don't count as round trips
    assert clock.round_trip_secs == 0.040
    # Cleared 30 ms into the second chunk: the phone plays 20 ms more until the clear lands.
    assert clock.clear(0.170) == {"a": 150 * MS}
