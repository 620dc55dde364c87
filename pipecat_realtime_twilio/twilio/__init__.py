"""Twilio side of a call: Media Streams serializer, TwiML and webhook signatures."""
