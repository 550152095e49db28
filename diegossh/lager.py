# -*- test-case-name: tests.test_lager -*-
"""
Log lines in lager's JSON, the format every Cloud Foundry component writes
and operators' tooling reads (C{sshd.started} is how upstream's tests and
scripts know the daemon listens).

One JSON object per line, compact, in lager's field order::

    {"timestamp":"1764745200.123456789","source":"ssh-proxy",
     "message":"ssh-proxy.started","log_level":1,"data":{...}}

With C{time_format: rfc3339} lager writes its "pretty" form instead, and so
do we: C{timestamp} is RFC 3339 with nanoseconds in UTC and C{log_level}
becomes C{"level":"info"}. Levels are lager's four: debug 0, info 1,
error 2, fatal 3. Twisted's C{warn} is written as info (lager has no warn)
and C{critical} as fatal.

An event names its lager message with the key C{lager} (the action, e.g.
C{"started"}; the line's message is C{SOURCE.ACTION}) and its data with
C{lager_data} (a mapping of JSON values). Any other event is written as
C{SOURCE.log} with its formatted text as C{data.message}, so nothing is
lost and no field of an event (which may hold a secret) is written unless
the event put it in C{lager_data}.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

LEVELS = {"debug": 0, "info": 1, "error": 2, "fatal": 3}
TIME_FORMATS = ("unix-epoch", "rfc3339")
_NAMES = {number: name for name, number in LEVELS.items()}
_FROM_TWISTED = {
    LogLevel.debug: 0,
    LogLevel.info: 1,
    LogLevel.warn: 1,
    LogLevel.error: 2,
    LogLevel.critical: 3,
}


def parseLogLevel(text: str) -> int:
    """
    C{debug}, C{info}, C{error} or C{fatal} (any case) as lager's number.

    @raise ValueError: naming the four.
    """
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(f"unknown log level {text!r}: debug, info, error or fatal")
    return level


def parseTimeFormat(text: str) -> str:
    """
    C{unix-epoch} (the default) or C{rfc3339}.

    @raise ValueError: naming the two.
    """
    if text not in TIME_FORMATS:
        raise ValueError(f"unknown time format {text!r}: unix-epoch or rfc3339")
    return text


def epochTimestamp(nanoseconds: int) -> str:
    """
    Seconds since the epoch with nine decimals, as lager's C{%.9f} prints
    them (exactly, without a float's rounding).
    """
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    return f"{seconds}.{fraction:09d}"


def rfc3339Timestamp(nanoseconds: int) -> str:
    """
    UTC RFC 3339 with nanoseconds, trailing zeros trimmed, as Go marshals a
    C{time.Time} (C{2026-12-03T07:20:00.5Z}; whole seconds have no point).
    """
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


@implementer(ILogObserver)
class LagerObserver:
    """
    A Twisted log observer writing lager lines through C{write} (one call
    per line, newline included). C{level} is the least lager level written;
    L{setLevel} changes it while running (the debug server's C{/log-level}).
    """

    def __init__(
        self,
        write: Callable[[str], object],
        source: str,
        level: int = LEVELS["info"],
        timeFormat: str = "unix-epoch",
        now: Callable[[], int] = time.time_ns,
    ) -> None:
        self._write = write
        self.source = source
        self.level = level
        self.timeFormat = parseTimeFormat(timeFormat)
        self._now = now

    def setLevel(self, name: str) -> None:
        self.level = parseLogLevel(name)

    def __call__(self, event: Mapping[str, Any]) -> None:
        level = _FROM_TWISTED.get(event.get("log_level", LogLevel.info), 1)
        if level < self.level:
            return
        self._write(self.line(event, level) + "\n")

    def line(self, event: Mapping[str, Any], level: int) -> str:
        """
        The JSON line for C{event} at lager level C{level}, without newline.
        """
        action = event.get("lager")
        data: dict[str, Any]
        if action:
            data = dict(event.get("lager_data") or {})
        else:
            action = "log"
            data = {"message": formatEvent(dict(event))}
        failure = event.get("log_failure")
        if failure is not None:
            data.setdefault("error", failure.getErrorMessage())
        message = f"{self.source}.{action}"
        now = self._now()
        if self.timeFormat == "rfc3339":
            fields: dict[str, Any] = {
                "timestamp": rfc3339Timestamp(now),
                "source": self.source,
                "message": message,
                "level": _NAMES[level],
                "data": data,
            }
        else:
            fields = {
                "timestamp": epochTimestamp(now),
                "source": self.source,
                "message": message,
                "log_level": level,
                "data": data,
            }
        return json.dumps(fields, separators=(",", ":"), default=str)
