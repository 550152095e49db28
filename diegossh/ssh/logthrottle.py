# -*- test-case-name: tests.test_logging -*-
"""
What a connection that has not logged in can make a service write, bounded.

Before login anyone on the network can open connections, and every
connection can provoke log lines (a failed attempt, a malformed message, the
goodbye). Each line is short (L{diegossh.logtext}); L{LogThrottle} bounds
how many there are:

  - at most L{PER_CONNECTION} lines per connection before it logs in;
  - at most L{PER_SOURCE} lines per source (the address
    L{diegossh.addresses.clientAddress} gives, an IPv6 one grouped by /64 as
    for penalties) per L{WINDOW} seconds, whatever the number of its
    connections; a source in the exempt list (C{exempt}, the tap sets it from
    C{--perSourcePenaltyExemptList}: a load balancer's address, say) has only
    the per-connection budget, as it has no per-source limits at all;
  - what is held back is counted, and when the source's window closes one
    line says how many ("N more from ADDR suppressed");
  - the table holds at most L{MAX_SOURCES} sources; past that, new sources
    share one budget, reported as C{(other sources)}.

Kinds (C{"log"} for the service's log, C{"access"} for the proxy's access
log) have budgets of their own, so a flood of protocol noise cannot hide
denied logins from the access log. Windows run on the clock passed in.

L{ConnectionLogger} is the L{SafeLogger} the transport and user
authentication services use: its events are bounded text, and before login
they go through the factory's C{logThrottle}.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

from diegossh.addresses import clientAddress
from diegossh.logtext import SafeLogger, boundedFields, boundedFormat
from diegossh.ssh.admission import sourceOf

__all__ = [
    "MAX_SOURCES",
    "OTHER_SOURCES",
    "PER_CONNECTION",
    "PER_SOURCE",
    "WINDOW",
    "ConnectionLogger",
    "LogThrottle",
    "OncePerSource",
]

PER_CONNECTION = 20
PER_SOURCE = 60
WINDOW = 60.0
MAX_SOURCES = 4096
OTHER_SOURCES = "(other sources)"

_log = SafeLogger(namespace="diegossh.logthrottle")
_accessLog = Logger(namespace="diegossh.access")


class _Window:
    __slots__ = ("ends", "logged", "suppressed", "timer")

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.logged = 0
        self.suppressed = 0
        self.timer: IDelayedCall | None = None


class LogThrottle:
    """
    Per-source and per-connection budgets for log lines before login.

    A window opens at a source's first line and lasts L{WINDOW} seconds;
    windows are kept in the order they opened (which is the order they end),
    and ended ones are dropped as new lines come. A timer exists only for a
    window that held something back: it writes the summary when the window
    ends.
    """

    def __init__(
        self,
        clock: IReactorTime,
        perSource: int = PER_SOURCE,
        window: float = WINDOW,
        perConnection: int = PER_CONNECTION,
        maxSources: int = MAX_SOURCES,
    ) -> None:
        self.clock = clock
        self.perSource = perSource
        self.window = window
        self.perConnection = perConnection
        self.maxSources = maxSources
        # Networks whose addresses have only the per-connection budget.
        self.exempt: tuple[Any, ...] = ()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._perConnection: weakref.WeakKeyDictionary[Any, dict[str, int]] = (
            weakref.WeakKeyDictionary()
        )

    def admit(self, source: str, connection: Any = None, kind: str = "log") -> bool:
        """
        Whether one more line of C{kind} from C{source} (a client address)
        and C{connection}, if given, may be written now; if not, it is
        counted for the summary.
        """
        if self.exempt and self._isExempt(source):
            return connection is None or self._perConnectionAdmits(connection, kind)
        now = self.clock.seconds()
        self._expire(now)
        key = (sourceOf(source)[1], kind)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self.maxSources:
                key = (OTHER_SOURCES, kind)
                window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(now + self.window)
        allowed = window.logged < self.perSource
        if allowed and connection is not None:
            allowed = self._perConnectionAdmits(connection, kind)
        if allowed:
            window.logged += 1
            return True
        window.suppressed += 1
        if window.timer is None:
            window.timer = self.clock.callLater(
                max(0.0, window.ends - now), self._close, key, window
            )
        return False

    def _perConnectionAdmits(self, connection: Any, kind: str) -> bool:
        counts = self._perConnection.setdefault(connection, {})
        if counts.get(kind, 0) >= self.perConnection:
            return False
        counts[kind] = counts.get(kind, 0) + 1
        return True

    def _isExempt(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.exempt)

    def sources(self) -> int:
        """
        How many (source, kind) windows are open.
        """
        return len(self._windows)

    def _expire(self, now: float) -> None:
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if window.ends > now:
                return
            if window.timer is not None and window.timer.active():
                window.timer.cancel()
                self._close(key, window)
            else:
                del self._windows[key]

    def _close(self, key: tuple[str, str], window: _Window) -> None:
        if self._windows.get(key) is window:
            del self._windows[key]
        window.timer = None
        if not window.suppressed:
            return
        source, kind = key
        logger = _accessLog if kind == "access" else _log
        logger.info(
            "{count} more {kind} lines from {source} before login suppressed "
            "in the last {window:.0f}s",
            event="suppressed",
            count=window.suppressed,
            kind=kind,
            source=source,
            window=self.window,
            client=source,
        )

    def stop(self) -> None:
        """
        Cancel the summaries' timers (their summaries are not written).
        """
        for window in self._windows.values():
            if window.timer is not None and window.timer.active():
                window.timer.cancel()
        self._windows.clear()


def _connectionOf(source: Any) -> Any:
    """
    The server transport a logging object belongs to (itself, or a service's
    transport), or None.
    """
    for candidate in (source, getattr(source, "transport", None)):
        if candidate is not None and hasattr(candidate, "loggedIn"):
            return candidate
    return None


def admitBeforeLogin(connection: Any, kind: str = "log") -> bool:
    """
    Whether a line about C{connection} (a server transport) may be written:
    always after login, on the client side, or without a throttle; before
    login, as its factory's L{LogThrottle} says.
    """
    if connection is None or getattr(connection, "loggedIn", True):
        return True
    if getattr(connection, "isClient", False):
        return True
    throttle = getattr(getattr(connection, "factory", None), "logThrottle", None)
    if throttle is None:
        return True
    admit: Callable[..., bool] = throttle.admit
    return admit(clientAddress(connection), connection, kind)


class ConnectionLogger(SafeLogger):
    """
    A L{SafeLogger} for the objects of one SSH connection (the transport,
    its services): before login, each event is first admitted by the
    connection factory's L{LogThrottle}.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if not admitBeforeLogin(_connectionOf(self.source)):
            return
        Logger.emit(self, level, boundedFormat(format), **boundedFields(kwargs))


_said: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


class OncePerSource(SafeLogger):
    """
    A L{SafeLogger} that writes each format once per source object: for
    Conch's factory, which says "disabling non-fixed-group key exchange
    algorithms" for every connection it builds (one line per connection an
    attacker opens).
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if self.source is not None and format is not None:
            try:
                said = _said.setdefault(self.source, set())
            except TypeError:
                said = None
            if said is not None:
                if format in said:
                    return
                said.add(format)
        super().emit(level, format, **kwargs)
