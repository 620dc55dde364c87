#
# Copyright (c) 2026, pipecat-realtime-twilio contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""``pipecat-realtime-twilio campaign numbers.csv --bot NAME``: start a campaign, follow it.

The CSV is checked here first (:mod:`~pipecat_realtime_twilio.runner.campaign_csv`: a bad
file is one clear line, exit 2), then POSTed to a running runner's ``/campaigns`` (``--url``,
``PUBLIC_URL`` by default; ``--api-key``, ``RUNNER_API_KEY`` by default). Then, unless
``--detach``, the progress is shown until every number has its outcome: a bar redrawn in
place on a terminal (``[#####-----] 23/50  answered 10 · voicemail 3 ...``), a line per
change otherwise. Exit 0 when the campaign is done, 1 when the runner refuses or fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from pipecat_realtime_twilio.runner.campaign_csv import CampaignInputError, read_csv
from pipecat_realtime_twilio.settings import Settings

POLL_SECS = 1.0
"""How often the progress is asked for."""

UNREACHABLE_SECS = 60.0
"""How long the runner may fail to answer (a restart, a 502) before ``campaign`` gives up."""

BAR_WIDTH = 20


def add_parser(commands: Any, run: Any) -> None:
    """Add the ``campaign`` subcommand.

    Args:
        commands: The CLI's subparsers.
        run: The function the subcommand runs (``args`` → exit status).
    """
    campaign = commands.add_parser(
        "campaign", help="start an outbound campaign from a CSV of numbers and follow it"
    )
    campaign.add_argument("csv", help="the numbers: a 'number' column (+ optional 'timezone')")
    campaign.add_argument("--bot", help="bot that talks to the people who answer (BOT)")
    campaign.add_argument("--name", help="the campaign's name")
    campaign.add_argument("--rate", type=float, help="calls per minute (CAMPAIGN_RATE_PER_MINUTE)")
    campaign.add_argument("--hours", help="calling hours, HH:MM-HH:MM (CAMPAIGN_CALLING_HOURS)")
    campaign.add_argument("--attempts", type=int, help="tries per number (CAMPAIGN_MAX_ATTEMPTS)")
    campaign.add_argument("--retry-secs", type=float, help="wait before a retry, doubled per try")
    campaign.add_argument(
        "--ring-secs", type=int, help="how long a call rings before no answer (CAMPAIGN_RING_SECS)"
    )
    campaign.add_argument("--from", help="caller ID (TWILIO_PHONE_NUMBER)")
    campaign.add_argument("--url", help="the runner's URL (PUBLIC_URL)")
    campaign.add_argument("--api-key", help="the runner's RUNNER_API_KEY")
    campaign.add_argument("--detach", action="store_true", help="start it and exit")
    campaign.set_defaults(run=run)


def run_campaign(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Start the campaign and follow it (see the module docstring).

    Args:
        args: The parsed command line.
        settings: The settings (``PUBLIC_URL``, ``RUNNER_API_KEY`` as defaults).
        out: Where the progress goes (standard output by default).

    Returns:
        The exit status.
    """
    out = out if out is not None else sys.stdout
    try:
        text = Path(args.csv).read_text(encoding="utf-8-sig")
        read_csv(text)
    except OSError as e:
        return _fail(f"{args.csv}: {e.strerror or e}", 2)
    except UnicodeDecodeError:
        return _fail(f"{args.csv}: not UTF-8 text", 2)
    except CampaignInputError as e:
        return _fail(f"{args.csv}: {e}", 2)
    url = args.url or (str(settings.public_url) if settings.public_url else None)
    key = args.api_key or (
        settings.runner_api_key.get_secret_value() if settings.runner_api_key else None
    )
    if not url or not key:
        return _fail("give the runner's --url (PUBLIC_URL) and --api-key (RUNNER_API_KEY)", 2)
    body: dict[str, Any] = {"csv": text}
    for name, value in (
        ("bot", args.bot),
        ("name", args.name),
        ("rate_per_minute", args.rate),
        ("calling_hours", args.hours),
        ("max_attempts", args.attempts),
        ("retry_secs", args.retry_secs),
        ("ring_secs", args.ring_secs),
        ("from", getattr(args, "from")),
    ):
        if value is not None:
            body[name] = value
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30) as client:
        try:
            answer = client.post("/campaigns", json=body)
        except httpx.HTTPError as e:
            return _fail(f"cannot reach the runner at {url}: {type(e).__name__}", 1)
        if answer.status_code != 201:
            return _fail(
                f"the runner refused the campaign ({answer.status_code}): {_detail(answer)}", 1
            )
        created = answer.json()
        refused = len(created["invalid"]) + len(created["duplicates"])
        print(
            f"Campaign {created['id']} ({created['name']}): {created['numbers']} numbers, bot "
            f"'{created['bot']}'" + (f"; {refused} invalid or repeated" if refused else ""),
            file=out,
        )
        for bad in created["invalid"]:
            print(f"  line {bad['line']}: {bad['number']}: {bad['problem']}", file=out)
        if args.detach:
            return 0
        return _follow(client, created["id"], out)


def _follow(client: httpx.Client, campaign_id: str, out: TextIO) -> int:
    tty = out.isatty()
    shown = ""
    failing_since: float | None = None
    while True:
        try:
            answer = client.get(f"/api/campaigns/{campaign_id}", params={"limit": 1})
            if answer.status_code in (401, 403, 404):  # asking again will not help
                return _fail(f"the runner answered {answer.status_code}: {answer.text[:200]}", 1)
            answer.raise_for_status()
            progress = answer.json()
        except (httpx.HTTPError, ValueError) as e:
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since > UNREACHABLE_SECS:
                return _fail(
                    f"lost the runner for {UNREACHABLE_SECS:g} s ({type(e).__name__}); the "
                    f"campaign goes on: follow it at /api/campaigns/{campaign_id}",
                    1,
                )
            time.sleep(POLL_SECS)
            continue
        failing_since = None
        line = progress_line(progress)
        if tty:
            out.write(f"\r{line}\x1b[K")
            out.flush()
        elif line != shown:
            print(line, file=out)
        shown = line
        if progress["status"] in ("done", "canceled") and progress["done"] >= progress["total"]:
            if tty:
                out.write("\n")
            return 0
        time.sleep(POLL_SECS)


def progress_line(progress: dict[str, Any]) -> str:
    """``[#####-----] 23/50  answered 10 · voicemail 3 · busy 2``.

    Args:
        progress: A campaign as ``GET /api/campaigns/{id}`` answers.
    """
    total = max(int(progress["total"]), 1)
    done = int(progress["done"])
    filled = BAR_WIDTH * done // total
    outcomes = " · ".join(
        f"{name} {count}"
        for name, count in sorted(progress["outcomes"].items(), key=lambda x: -x[1])
    )
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    return f"[{bar}] {done}/{progress['total']}  {outcomes}".rstrip()


def _detail(answer: httpx.Response) -> str:
    try:
        return str(json.loads(answer.text).get("detail"))[:300]
    except (ValueError, AttributeError):
        return answer.text[:300]


def _fail(message: str, status: int) -> int:
    print(f"pipecat-realtime-twilio: {message}", file=sys.stderr)
    return status
