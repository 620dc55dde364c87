#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The revisions of the call records' schema, oldest first: ``0001_*``, ``0002_*``..."""
