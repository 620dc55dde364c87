"""Testing kit: a Realtime API emulator, a Twilio caller simulator and a fake Twilio REST API."""
