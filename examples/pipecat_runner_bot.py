"""A phone bot started by Pipecat's own development runner.

Run it with ``python examples/pipecat_runner_bot.py -t twilio -x your-tunnel.example.com`` and
point the Twilio number's voice webhook at ``https://your-tunnel.example.com/``. Pipecat's
runner answers the webhook with TwiML and accepts the media stream at ``/ws``; this package's
processors do the rest.
"""

from pipecat.runner.types import RunnerArguments

from pipecat_realtime_twilio import CallSession, RealtimeAgent


async def bot(runner_args: RunnerArguments):
    """Answer one call: Pipecat's runner calls this for every media stream it accepts."""
    call = await CallSession.from_websocket(runner_args.websocket)
    await call.run(
        [
            call.input(),
            RealtimeAgent(
                instructions="You are a helpful assistant on a phone line. Keep answers short.",
                greeting="Hi, thanks for calling. How can I help?",
            ),
            call.output(),
        ]
    )


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
