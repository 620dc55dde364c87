"""Testing kit: run a whole phone call on 127.0.0.1, no phone, network or key needed.

- :mod:`~pipecat_realtime_twilio.testing.emulator`: ``RealtimeEmulator``, a local OpenAI
  Realtime API (GA) server that validates every client event against the ``openai`` models.
- :mod:`~pipecat_realtime_twilio.testing.caller`: ``TwilioCaller``, a client that calls a
  runner as Twilio does, with a phone playback clock that echoes marks as audio is played.
- :mod:`~pipecat_realtime_twilio.testing.twilio_side`: what Twilio does beside the stream:
  signing (auth token or SharedKey), stream status callbacks, its debugger's errors.
- :mod:`~pipecat_realtime_twilio.testing.scenario`: ``Scenario``, a scripted call to a bot
  (caller says or presses, the model says or calls a tool) and its outcome.
- :mod:`~pipecat_realtime_twilio.testing.model`: what the agent asked the model for
  (words to say, keypad input), for scripted replies.
- :mod:`~pipecat_realtime_twilio.testing.fake_rest`: ``FakeTwilioRest``, a fake Twilio REST API.
- :mod:`~pipecat_realtime_twilio.testing.sounds`: caller speech (tones, silence, WAV files).
- :mod:`~pipecat_realtime_twilio.testing.twiml`: TwiML parsed the way Twilio reads it.
- :mod:`~pipecat_realtime_twilio.testing.server`: ``LocalServer``, an ASGI app on a local port.
"""
