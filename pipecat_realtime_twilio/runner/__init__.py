#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The server: Twilio's webhooks and media streams, one fresh pipeline per call.

Here live the FastAPI app and router (:class:`~pipecat_realtime_twilio.runner.app.CallRunner`,
``create_app``) and its parts: admission (lines, stream tokens, capacity), pre-warm,
call records (store, webhook outbox) and pricing, metrics, the browser playground,
and loading bots.

Imports: ``agent``, ``phone`` and the package's root modules. Only the public face
(``pipecat_realtime_twilio``), the CLI and ``simulate`` import the runner.
"""
