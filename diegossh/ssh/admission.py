# -*- test-case-name: tests.test_admission -*-
"""
Who may start a login: OpenSSH's C{MaxStartups}, C{PerSourceMaxStartups},
C{PerSourcePenalties} and C{PerSourcePenaltyExemptList}, for both services
(L{diegossh.interfaces.IAdmission}).

  - B{MaxStartups start:rate:full}: with C{start} or more connections that
    have not logged in yet, a new one is refused with a probability rising
    linearly from C{rate}% to 100% at C{full}; at C{full}, every new one is.
    OpenSSH's arithmetic, integer percentages included.
  - B{PerSourceMaxStartups}: at most this many of them from one source.
  - B{PerSourcePenalties}: a connection that ends without logging in, after a
    failed attempt (C{authfail}), at the grace time (C{grace-exceeded}), after
    garbage (C{protocol}) or with none of these (C{noauth}), adds that many
    seconds to its source's penalty, up to C{max}. Once a source's penalty
    reaches C{min}, every new connection from it is refused at accept, until
    the penalty runs out.

How this differs from OpenSSH:

  - A connection is charged once, when it ends, for the costliest thing it
    did, and only if it never logged in (OpenSSH also charges once, at the
    end of the connection's process). So an honest user whose first key or
    first password is refused and whose next one works costs nothing: at a
    front door where many users share one NAT address, only failures and
    abuse count against the address.
  - C{protocol} replaces C{crash} (a Python process does not crash on garbage;
    the transport reports it instead); C{noauth} is off in the daemon (see
    L{DAEMON_PENALTIES}).
  - The table is bounded per address family (C{max-sources4},
    C{max-sources6}); when it is full, the entry closest to expiring is
    dropped to make room (OpenSSH's C{overflow:permissive}; there is no
    C{deny-all}).
  - The exempt list also exempts from C{PerSourceMaxStartups}; exempt sources
    still count towards C{MaxStartups}.
  - A source is the address L{diegossh.addresses.clientAddress} gives, grouped
    as IPv4 /32 and IPv6 /64 (OpenSSH's C{PerSourceNetBlockSize} is 32:128;
    a /64 is what one IPv6 host can draw addresses from). A load balancer's
    own connection (its PROXY v2 health check) is exempt like the exempt list.

A refused connection is closed by L{AdmittingFactory} before any byte is
sent, with no key exchange. Each process keeps its own tables (with
C{--workers N}, each worker process has its own, so the limits are per
process).
"""

from __future__ import annotations

import heapq
import ipaddress
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from diegossh.addresses import clientAddress, isBalancer
from diegossh.interfaces import IAdmission
from diegossh.ssh.metrics import NO_METRICS

log = Logger()

REASONS = ("protocol", "authfail", "grace", "noauth")

# -- settings


_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME_PART = re.compile(r"(\d+)([smhdw]?)", re.IGNORECASE)


def parseTime(text: str, name: str = "time") -> float:
    """
    Seconds from OpenSSH's time format (C{90}, C{90s}, C{10m}, C{1h30m}).

    @raise ValueError: naming C{name}.
    """
    value = text.strip()
    pos, seconds = 0, 0
    for match in _TIME_PART.finditer(value):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _TIME_UNITS[match.group(2).lower()]
        pos = match.end()
    if not value or pos != len(value):
        raise ValueError(f"{name}: {text!r} is not a time (like 90, 90s, 10m, 1h30m)")
    return float(seconds)


@dataclass(frozen=True)
class MaxStartups:
    """
    C{start:rate:full}, as OpenSSH's C{MaxStartups}.
    """

    start: int
    rate: int
    full: int

    @classmethod
    def parse(cls, text: str, name: str = "--maxStartups") -> MaxStartups:
        """
        C{start:rate:full}, or one number (C{start} and C{full} both).

        @raise ValueError: naming C{name}.
        """
        parts = text.strip().split(":")
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) == 1:
            numbers = [numbers[0], 100, numbers[0]]
        if len(numbers) != 3:
            raise ValueError(f"{name}: {text!r} is not start:rate:full (like 10:30:100)")
        start, rate, full = numbers
        if start < 1 or full < start or not 1 <= rate <= 100:
            raise ValueError(f"{name}: {text!r} needs 1 <= start <= full and a rate from 1 to 100")
        return cls(start, rate, full)

    def dropPercent(self, unauthenticated: int) -> int:
        """
        The chance, in percent, that a new connection is refused while
        C{unauthenticated} connections have not logged in (OpenSSH's
        C{should_drop_connection}).
        """
        if unauthenticated < self.start:
            return 0
        if unauthenticated >= self.full or self.rate == 100:
            return 100
        p = 100 - self.rate
        p *= unauthenticated - self.start
        p //= self.full - self.start
        return p + self.rate

    def __str__(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"


@dataclass(frozen=True)
class Penalties:
    """
    C{PerSourcePenalties}: seconds per reason, the threshold and the cap, and
    how many sources each table holds.
    """

    authfail: float = 5.0
    grace: float = 10.0
    protocol: float = 10.0
    noauth: float = 1.0
    min: float = 15.0
    max: float = 600.0
    maxSources4: int = 65536
    maxSources6: int = 65536
    enabled: bool = True

    _KEYWORDS = {
        "authfail": "authfail",
        "grace-exceeded": "grace",
        "grace": "grace",
        "protocol": "protocol",
        "noauth": "noauth",
        "min": "min",
        "max": "max",
        "max-sources4": "maxSources4",
        "max-sources6": "maxSources6",
    }

    def parse(self, text: str, name: str = "--perSourcePenalties") -> Penalties:
        """
        These penalties with C{text}'s keywords (OpenSSH's form, space or
        comma separated: C{authfail:5s grace-exceeded:10s protocol:10s
        noauth:0 min:15s max:10m max-sources4:65536 max-sources6:65536}) put
        over them; C{no} turns penalties off, C{yes} keeps these.

        @raise ValueError: naming C{name} and the keyword.
        """
        words = text.replace(",", " ").split()
        if words == ["no"]:
            return replace(self, enabled=False)
        changes: dict[str, Any] = {}
        for word in words:
            if word == "yes":
                continue
            keyword, sep, value = word.partition(":")
            attribute = self._KEYWORDS.get(keyword)
            if not sep or attribute is None:
                raise ValueError(
                    f"{name}: {word!r} is not one of "
                    + ", ".join(f"{k}:..." for k in self._KEYWORDS)
                    + ", yes or no"
                )
            if attribute.startswith("maxSources"):
                if not value.isdigit() or int(value) < 1:
                    raise ValueError(f"{name}: {keyword} needs a whole number of at least 1")
                changes[attribute] = int(value)
            else:
                changes[attribute] = parseTime(value, f"{name} {keyword}")
        result = replace(self, enabled=True, **changes)
        if result.max < result.min:
            raise ValueError(f"{name}: max is less than min")
        return result

    def charge(self, reason: str) -> float:
        return float(getattr(self, reason, 0.0))

    def __str__(self) -> str:
        if not self.enabled:
            return "no"
        return (
            f"authfail:{self.authfail:g}s grace-exceeded:{self.grace:g}s "
            f"protocol:{self.protocol:g}s noauth:{self.noauth:g}s min:{self.min:g}s "
            f"max:{self.max:g}s max-sources4:{self.maxSources4} max-sources6:{self.maxSources6}"
        )


# The proxy's are OpenSSH's (with protocol for crash): noauth:1s is what
# refuses a one-source key exchange flood (DHEat) after 15 in 15 s. The
# daemon's tables are smaller, and noauth is off there: its one client is the
# proxy, which must not be charged for the logins its users abandon mid-way
# (docs/prelogin.md).
DEFAULT_PENALTIES = Penalties()
DAEMON_PENALTIES = Penalties(noauth=0.0, maxSources4=4096, maxSources6=4096)


def parseExemptList(
    text: str | None, name: str = "--perSourcePenaltyExemptList"
) -> tuple[Any, ...]:
    """
    Networks from a comma (or space) separated list of addresses and CIDRs.

    @raise ValueError: naming C{name} and the entry.
    """
    networks = []
    for entry in (text or "").replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{name}: {entry!r} is not an address or a CIDR") from None
    return tuple(networks)


def sourceOf(host: str) -> tuple[int, str]:
    """
    The source a host counts as: (4, the IPv4 address) or (6, its /64).
    Anything else (a UNIX socket, an unknown peer) is one source, C{(4, host)}.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return 4, host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return 4, str(address.ipv4_mapped)
        return 6, str(ipaddress.IPv6Network((address, 64), strict=False))
    return 4, str(address)


# -- the penalty table


@dataclass(slots=True)
class _Penalty:
    expiry: float
    active: bool
    reason: str


class PenaltyTable:
    """
    Penalised sources of one address family, at most C{limit} of them.

    Expired entries go as soon as they are seen, and whenever something is
    charged; when the table is full, the entry that expires first (the least
    penalised) makes room for the new one. A heap of expiries finds both
    without a scan; it is rebuilt when stale entries outnumber live ones.
    """

    def __init__(self, clock: IReactorTime, penalties: Penalties, limit: int) -> None:
        self._clock = clock
        self._penalties = penalties
        self.limit = limit
        self._entries: dict[str, _Penalty] = {}
        self._heap: list[tuple[float, str]] = []
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, source = heapq.heappop(self._heap)
            entry = self._entries.get(source)
            if entry is not None and entry.expiry <= now:
                del self._entries[source]

    def _push(self, source: str, expiry: float) -> None:
        heapq.heappush(self._heap, (expiry, source))
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(e.expiry, s) for s, e in self._entries.items()]
            heapq.heapify(self._heap)

    def _evictOne(self) -> None:
        while self._heap:
            expiry, source = heapq.heappop(self._heap)
            entry = self._entries.get(source)
            if entry is not None and entry.expiry == expiry:
                del self._entries[source]
                self.evicted += 1
                return

    def charge(self, source: str, seconds: float, reason: str) -> bool:
        """
        Add C{seconds} to C{source}'s penalty (capped at C{max} from now).

        @return: whether this made the penalty active (it reached C{min}).
        """
        if seconds <= 0:
            return False
        now = self._clock.seconds()
        self._expire(now)
        p = self._penalties
        entry = self._entries.get(source)
        if entry is None:
            if len(self._entries) >= self.limit:
                self._evictOne()
            entry = self._entries[source] = _Penalty(now, False, reason)
        entry.expiry = min(entry.expiry + seconds, now + p.max)
        entry.reason = reason
        self._push(source, entry.expiry)
        if not entry.active and entry.expiry - now >= p.min:
            entry.active = True
            return True
        return False

    def remaining(self, source: str) -> float:
        """
        Seconds for which C{source} is refused (0 when it is not).
        """
        entry = self._entries.get(source)
        if entry is None:
            return 0.0
        now = self._clock.seconds()
        if entry.expiry <= now:
            del self._entries[source]
            return 0.0
        return entry.expiry - now if entry.active else 0.0

    def accrued(self, source: str) -> float:
        """
        Seconds of penalty C{source} has now, active or not.
        """
        entry = self._entries.get(source)
        if entry is None:
            return 0.0
        return max(0.0, entry.expiry - self._clock.seconds())


# -- the policy


_dice = random.SystemRandom()


def _systemRandom() -> int:
    return _dice.randrange(100)


@dataclass(slots=True)
class _Connection:
    family: int
    source: str
    exempt: bool
    authenticated: bool = False
    reason: str | None = None


@dataclass
class AdmissionStats:
    """
    What admission refused, by cause, since start (for logs and the bench).
    """

    penalised: int = 0
    perSource: int = 0
    maxStartups: int = 0


@implementer(IAdmission)
class Admission:
    """
    L{IAdmission} for one process: the unauthenticated connections, in all
    and per source, and the penalty tables.

    @param randomPercent: returns a whole number from 0 to 99 (the early
        drop's dice; tests pass a seeded one).
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxStartups: MaxStartups,
        perSourceMaxStartups: int | None = None,
        penalties: Penalties = DEFAULT_PENALTIES,
        exempt: tuple[Any, ...] = (),
        randomPercent: Callable[[], int] | None = None,
    ) -> None:
        self.clock = clock
        self.maxStartups = maxStartups
        self.perSourceMaxStartups = perSourceMaxStartups
        self.penalties = penalties
        self.exempt = exempt
        self._randomPercent = randomPercent or _systemRandom
        self.tables = {
            4: PenaltyTable(clock, penalties, penalties.maxSources4),
            6: PenaltyTable(clock, penalties, penalties.maxSources6),
        }
        self.unauthenticated = 0
        self.perSource: dict[str, int] = {}
        self._connections: dict[int, _Connection] = {}
        self.stats = AdmissionStats()
        self._dropping = False
        # An ISSHMetrics told of refusals and penalties (the assembly sets it).
        self.metrics: Any = NO_METRICS

    def _isExempt(self, host: str) -> bool:
        if not self.exempt:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.exempt)

    def _classify(self, transport: Any) -> _Connection:
        host = clientAddress(transport)
        family, source = sourceOf(host)
        return _Connection(family, source, isBalancer(transport) or self._isExempt(host))

    # -- IAdmission

    def admit(self, transport: Any) -> bool:
        c = self._classify(transport)
        if not c.exempt and self.penalties.enabled:
            if self.tables[c.family].remaining(c.source) > 0:
                self.stats.penalised += 1
                self.metrics.refused("penalty")
                return False
        if (
            not c.exempt
            and self.perSourceMaxStartups is not None
            and self.perSource.get(c.source, 0) >= self.perSourceMaxStartups
        ):
            self.stats.perSource += 1
            self.metrics.refused("per_source")
            return False
        percent = self.maxStartups.dropPercent(self.unauthenticated)
        if percent and (percent >= 100 or self._randomPercent() < percent):
            self.stats.maxStartups += 1
            self.metrics.refused("max_startups")
            if not self._dropping:
                self._dropping = True
                log.warn(
                    "{count} connections have not logged in (MaxStartups {limits}): "
                    "refusing new ones at random until fewer than {start}",
                    count=self.unauthenticated,
                    limits=str(self.maxStartups),
                    start=self.maxStartups.start,
                )
            return False
        return True

    def opened(self, transport: Any) -> None:
        c = self._classify(transport)
        self._connections[id(transport)] = c
        self.unauthenticated += 1
        self.perSource[c.source] = self.perSource.get(c.source, 0) + 1

    def _leave(self, c: _Connection) -> None:
        self.unauthenticated -= 1
        left = self.perSource.get(c.source, 0) - 1
        if left > 0:
            self.perSource[c.source] = left
        else:
            self.perSource.pop(c.source, None)
        if self._dropping and self.unauthenticated < self.maxStartups.start:
            self._dropping = False
            log.info(
                "fewer than {start} connections waiting to log in: accepting again "
                "({refused} refused by MaxStartups so far)",
                start=self.maxStartups.start,
                refused=self.stats.maxStartups,
            )

    def authenticated(self, transport: Any) -> None:
        c = self._connections.get(id(transport))
        if c is None or c.authenticated:
            return
        c.authenticated = True
        self._leave(c)

    def penalise(self, transport: Any, reason: str) -> None:
        c = self._connections.get(id(transport))
        if c is None or c.authenticated or reason not in REASONS:
            return
        if c.reason is None or self.penalties.charge(reason) >= self.penalties.charge(c.reason):
            c.reason = reason

    def closed(self, transport: Any) -> None:
        c = self._connections.pop(id(transport), None)
        if c is None or c.authenticated:
            return
        self._leave(c)
        if c.exempt or not self.penalties.enabled:
            return
        table = self.tables[c.family]
        reason = c.reason or "noauth"
        if self.penalties.charge(reason) > 0:
            self.metrics.penalised(reason)
        if table.charge(c.source, self.penalties.charge(reason), reason):
            log.info(
                "refusing connections from {source} for {seconds:.0f}s: "
                "{reason} (PerSourcePenalties)",
                source=c.source,
                seconds=table.accrued(c.source),
                reason=reason,
            )


# -- refusing at accept


class AdmittingFactory:
    """
    A listening factory that asks C{admission} before handing a connection to
    C{factory} (an L{diegossh.ssh.factory.SSHServerFactory}): a refused one
    gets no protocol, so the port closes its socket at once, before any byte
    is sent (Twisted's C{tcp.Port} closes the socket when C{buildProtocol}
    returns C{None}).

    The connection is built first, so that L{IAdmission.admit} gets a server
    transport like every other call; its C{sourceAddress} is the accepted
    address (see L{diegossh.addresses.clientAddress}). The factory's
    C{admission} is set too, so its transports report to the same policy.
    """

    def __init__(self, factory: Any, admission: Any) -> None:
        self.factory = factory
        self.admission = admission
        factory.admission = admission

    def __getattr__(self, name: str) -> Any:
        return getattr(self.factory, name)

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.factory.buildProtocol(addr)
        if protocol is None:
            return None
        protocol.sourceAddress = addr
        if not self.admission.admit(protocol):
            return None
        return protocol


def admitting(
    factory: Any,
    clock: IReactorTime,
    maxStartups: MaxStartups,
    perSourceMaxStartups: int | None,
    penalties: Penalties,
    exempt: tuple[Any, ...],
) -> AdmittingFactory:
    """
    C{factory} behind a new L{Admission} with these settings.
    """
    return AdmittingFactory(
        factory, Admission(clock, maxStartups, perSourceMaxStartups, penalties, exempt)
    )


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """
    A service's pre-login limits, parsed once at start-up: what
    L{fromSettings} needs, in one value the daemon's and the proxy's settings
    both carry.
    """

    maxStartups: MaxStartups
    perSourceMaxStartups: int | None
    penalties: Penalties
    exempt: tuple[Any, ...]

    @classmethod
    def parse(
        cls,
        maxStartups: str,
        perSourceMaxStartups: str | int | None,
        penalties: str,
        exempt: str | None,
        basePenalties: Penalties,
    ) -> AdmissionLimits:
        """
        The limits from their flags' text; L{ValueError} names the flag.
        C{penalties} is read over C{basePenalties} (the service's defaults).
        """
        return cls(
            MaxStartups.parse(maxStartups),
            parsePerSourceMaxStartups(perSourceMaxStartups),
            basePenalties.parse(penalties),
            parseExemptList(exempt),
        )


def fromSettings(factory: Any, clock: IReactorTime, limits: AdmissionLimits) -> AdmittingFactory:
    """
    C{factory} behind an L{Admission} built from a service's parsed pre-login
    limits; the factory's log throttle exempts the same sources. One place
    for what the daemon's and the proxy's assembly both need.
    """
    throttle = getattr(factory, "logThrottle", None)
    if throttle is not None:
        throttle.exempt = limits.exempt
    return admitting(
        factory,
        clock,
        limits.maxStartups,
        limits.perSourceMaxStartups,
        limits.penalties,
        limits.exempt,
    )


def parsePerSourceMaxStartups(
    text: str | int | None, name: str = "--perSourceMaxStartups"
) -> int | None:
    """
    A whole number of at least 1, or C{none} (no per-source limit).
    """
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and text.strip().lower() == "none":
        return None
    elif isinstance(text, str) and text.strip().isdigit():
        value = int(text)
    else:
        raise ValueError(f"{name}: {text!r} is not a whole number or none")
    if value < 1:
        raise ValueError(f"{name}: {text!r} must be at least 1 (or none)")
    return value
