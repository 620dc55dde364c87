#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The Twilio side of a call: the media stream, what the caller hears, and Twilio's APIs.

Here live :class:`~pipecat_realtime_twilio.phone.call.CallSession` (one media
stream and its pipeline), the Media Streams serializer, the phone output with
its playback clock (marks), TwiML, signature checks, the REST client,
outbound calls and warm transfers (hold audio, the conference's two legs).

Imports: Pipecat, the ``twilio`` package and the package's root modules
(``audio``, ``frames``, ``errors``, ``failures``, ``settings``, ``seams``). Never ``agent``
(the call knows its agent only through the protocols in
:mod:`pipecat_realtime_twilio.seams`) and never ``runner``.
"""
