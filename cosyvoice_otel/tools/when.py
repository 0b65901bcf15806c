"""Times as an operator says them: ``yesterday 15:00``, ``today 9:30``, ``15:00``, ``now``, an
ISO 8601 time with its offset (``2026-12-06T15:00:00+08:00``) or without one (local time).
Local means the machine's time zone (``TZ``); the result is an aware datetime."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_CLOCK = re.compile(r"^(?:(?P<day>today|yesterday)\s+)?(?P<h>\d{1,2}):(?P<m>\d{2})"
                    r"(?::(?P<s>\d{2}))?$", re.I)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """The moment ``text`` names; ValueError with what is accepted otherwise."""
    now = (now or datetime.now().astimezone())
    value = text.strip()
    if value.lower() == "now":
        return now
    match = _CLOCK.match(value)
    if match:
        hour, minute, second = int(match["h"]), int(match["m"]), int(match["s"] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"no such time of day {text!r}")
        day = now - timedelta(days=1) if (match["day"] or "").lower() == "yesterday" else now
        return day.replace(hour=hour, minute=minute, second=second, microsecond=0)
    if len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.astimezone()
    raise ValueError(f"expected a time like 'yesterday 15:00', '15:00', 'now' or ISO 8601 "
                     f"('2026-12-06T15:00:00+08:00'), got {text[:60]!r}")
