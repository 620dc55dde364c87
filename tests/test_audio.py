import warnings

import numpy as np

from pipecat_realtime_twilio.audio import (
    ALAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop as reference


def test_ulaw_round_trip_is_identity_on_every_code():
    codes = bytes(range(256))
    assert pcm16_to_ulaw(ulaw_to_pcm16(codes)) == codes


def test_decoder_matches_g711_except_negative_zero():
    codes = bytes(range(256))
    ours = np.frombuffer(ulaw_to_pcm16(codes), dtype=np.int16)
    ref = np.frombuffer(reference.ulaw2lin(codes, 2), dtype=np.int16)
    differing = np.nonzero(ours != ref)[0].tolist()
    assert differing == [0x7F]
    assert ours[0x7F] == -1 and ref[0x7F] == 0


def test_encoder_matches_g711_on_every_sample_but_minus_one():
    samples = np.arange(-32768, 32768, dtype=np.int16)
    ours = np.frombuffer(pcm16_to_ulaw(samples.tobytes()), dtype=np.uint8)
    ref = np.frombuffer(reference.lin2ulaw(samples.tobytes(), 2), dtype=np.uint8)
    differing = samples[np.nonzero(ours != ref)[0]].tolist()
    assert differing == [-1]


def test_odd_trailing_byte_is_ignored():
    assert pcm16_to_ulaw(b"\x00\x00\x01") == b"\xff"


def test_alaw_round_trip_is_identity_on_every_code():
    codes = bytes(range(256))
    assert pcm16_to_alaw(alaw_to_pcm16(codes)) == codes


def test_alaw_decoder_matches_g711_on_every_code():
    # Unlike the mu-law decoder there is no intentional difference: A-law has no negative zero.
    codes = bytes(range(256))
    assert alaw_to_pcm16(codes) == reference.alaw2lin(codes, 2)


def test_alaw_encoder_matches_g711_on_every_sample():
    samples = np.arange(-32768, 32768, dtype=np.int16).tobytes()
    assert pcm16_to_alaw(samples) == reference.lin2alaw(samples, 2)


def test_alaw_silence_odd_trailing_byte_and_empty_input():
    assert pcm16_to_alaw(b"\x00\x00\x00\x00\x01") == bytes([ALAW_SILENCE]) * 2
    assert pcm16_to_alaw(b"") == b"" and alaw_to_pcm16(b"") == b""


def test_realtime_audio_frame_keeps_its_ulaw_only_while_the_audio_is_unchanged():
    from pipecat_realtime_twilio.frames import RealtimeAudioFrame

    ulaw = bytes(range(256))
    frame = RealtimeAudioFrame(
        audio=ulaw_to_pcm16(ulaw), sample_rate=8000, num_channels=1, item_id="i", ulaw=ulaw
    )
    assert frame.original_ulaw() == ulaw
    frame.audio = bytes(len(frame.audio))  # a processor on the way replaced the audio
    assert frame.original_ulaw() is None
