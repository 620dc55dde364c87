"""``python -m pipecat_realtime_twilio``: the same as the ``pipecat-realtime-twilio`` command."""

import sys

from pipecat_realtime_twilio.cli import main

sys.exit(main())
