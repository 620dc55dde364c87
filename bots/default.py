"""A helpful, concise phone assistant."""

from pipecat_realtime_twilio import CallLimits, CallSession, RealtimeAgent, end_call

INSTRUCTIONS = """\
You are a friendly, helpful assistant answering a phone call.
This is a voice conversation on a phone line: keep every answer short, one or two
sentences, in plain spoken language. No lists, no markdown, no emoji, no URLs.
Ask one question at a time. If you did not catch something, say so and ask again.
If you do not know an answer, say so instead of guessing.
Speak in the caller's language.
When the caller is done or says goodbye, say goodbye and then call end_call.
"""


def pipeline(call: CallSession) -> list:
    """Build the call's pipeline: caller in, the agent, caller out."""
    return [
        call.input(),
        RealtimeAgent(
            instructions=INSTRUCTIONS,
            greeting="Hello! Thanks for calling. How can I help you today?",
            tools=[end_call()],
            limits=CallLimits(max_duration_secs=15 * 60, silence_timeout_secs=30),
        ),
        call.output(),
    ]
