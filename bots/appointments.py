"""An appointment booker for a hair salon, with Python tools for the calendar."""

from datetime import date, timedelta

from pipecat_realtime_twilio import CallLimits, CallSession, RealtimeAgent, end_call, realtime_tool

INSTRUCTIONS = """\
You book appointments for Studio Nine, a hair salon, over the phone.
Ask which day the caller would like, then use free_slots to find the open times and offer at
most three. When the caller picks one, ask for their name, then use book to book it, and confirm
the day and time in one sentence. Say goodbye and call end_call when they are done.
This is a phone call: short, plain sentences, one question at a time.
"""

OPENING_HOURS = ["09:00", "10:00", "11:00", "13:00", "14:00", "15:00", "16:00"]

# The salon's calendar: (ISO date, time) -> name. A real salon would call its booking system's
# API here instead; the tools below are the only place that would change.
BOOKINGS: dict[tuple[str, str], str] = {}


def _day(day: str) -> date:
    """Turn "today", "tomorrow" or an ISO date into a date."""
    words = {"today": 0, "tomorrow": 1}
    if day.strip().lower() in words:
        return date.today() + timedelta(days=words[day.strip().lower()])
    return date.fromisoformat(day.strip())


@realtime_tool(timeout_secs=5)
def free_slots(day: str) -> dict:
    """Find the open appointment times on a day.

    Args:
        day: "today", "tomorrow", or a date as YYYY-MM-DD.
    """
    when = _day(day)
    if when.weekday() == 6:
        return {"day": when.isoformat(), "open": [], "note": "closed on Sundays"}
    taken = {t for (d, t) in BOOKINGS if d == when.isoformat()}
    return {"day": when.isoformat(), "open": [t for t in OPENING_HOURS if t not in taken]}


@realtime_tool(timeout_secs=5)
def book(day: str, time: str, name: str) -> dict:
    """Book an appointment.

    Args:
        day: "today", "tomorrow", or a date as YYYY-MM-DD.
        time: One of the open times, as HH:MM.
        name: The caller's name.
    """
    when = _day(day).isoformat()
    if time not in OPENING_HOURS:
        raise ValueError(f"{time} is not an appointment time")
    if (when, time) in BOOKINGS:
        return {"booked": False, "reason": "that time was just taken"}
    BOOKINGS[(when, time)] = name
    return {"booked": True, "day": when, "time": time, "name": name}


def pipeline(call: CallSession) -> list:
    """Build the call's pipeline: caller in, the agent with the calendar tools, caller out."""
    return [
        call.input(),
        RealtimeAgent(
            instructions=INSTRUCTIONS,
            greeting="Hi, thanks for calling Studio Nine. What day would you like to come in?",
            tools=[free_slots, book, end_call()],
            limits=CallLimits(max_duration_secs=600, silence_timeout_secs=20),
        ),
        call.output(),
    ]
