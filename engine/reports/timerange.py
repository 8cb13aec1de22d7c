"""--since / --until: a UTC date or an ISO-8601 time -> ms since the epoch.

``--since 2026-11-01`` starts at that day's 00:00 UTC; ``--until 2026-11-30``
ends after that day (the day is included); a time (``2026-11-30T12:00``,
``...Z`` or with an offset; without one it is UTC) is used as it is, the
end excluded. Without them a report covers everything stored.
"""
import datetime

DAY_MS = 86_400_000
EVERYTHING = (0, 1 << 62)


class RangeError(ValueError):
    pass


def _parse(text, what):
    try:
        if len(text) == 10:
            return datetime.datetime.combine(datetime.date.fromisoformat(text),
                                             datetime.time(), datetime.timezone.utc), True
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(f"{what}: got {text!r}, expected a date YYYY-MM-DD or a time "
                         "YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment, False


def _ms(moment):
    return int(moment.timestamp() * 1000)


def parse_range(since=None, until=None):
    """(start, end) in ms, end excluded."""
    start, end = EVERYTHING
    if since:
        start = _ms(_parse(since, "--since")[0])
    if until:
        moment, is_day = _parse(until, "--until")
        end = _ms(moment) + (DAY_MS if is_day else 0)
    if end <= start:
        raise RangeError(f"--until ({until}) must be after --since ({since})")
    return start, end
