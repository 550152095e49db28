# -*- test-case-name: tests.test_transport_bounds -*-
"""
Who stops reading when an SSH connection cannot send.

A transport's outgoing bytes pile up in two places a peer controls: the
socket's write buffer (a peer that does not read) and the queue of messages
held back by a key exchange (a peer that starts one and never finishes it).
L{WritePressure} tells the transport's feeders (the connection service's
channels, the proxy's other leg) when either is over its bound, so they stop
reading their own sources instead of handing over more. L{ReadGate} is how a
feeder that is itself a socket stops reading.

One exception keeps two relayed legs from waiting on each other: a gate held
only because the other leg is in a key exchange opens while its own leg is in
one too, since that exchange can finish only if its messages are read (and a
peer in a key exchange may send nothing but key exchange messages, which feed
nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

# The reasons a transport cannot take more.
SOCKET_FULL = "socket"
KEY_EXCHANGE = "key exchange"

WriteListener = Callable[[str, bool], None]


class WritePressure:
    """
    The reasons one transport cannot take more outgoing data, and who to tell
    when they come and go. A listener is called with (reason, blocked).
    """

    def __init__(self) -> None:
        self._reasons: set[str] = set()
        self._listeners: list[WriteListener] = []

    @property
    def blocked(self) -> bool:
        return bool(self._reasons)

    def holds(self, reason: str) -> bool:
        return reason in self._reasons

    def set(self, reason: str, blocked: bool) -> None:
        if blocked == (reason in self._reasons):
            return
        if blocked:
            self._reasons.add(reason)
        else:
            self._reasons.discard(reason)
        for listener in list(self._listeners):
            listener(reason, blocked)

    def listen(self, listener: WriteListener) -> None:
        """
        Add C{listener}; it hears at once about the reasons already in force.
        """
        self._listeners.append(listener)
        for reason in sorted(self._reasons):
            listener(reason, True)

    def unlisten(self, listener: WriteListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def clear(self) -> None:
        self._listeners.clear()


@implementer(IPushProducer)
class SocketWatch:
    """
    Registered as the streaming producer of a TCP transport: Twisted pauses
    it when the socket's write buffer passes the transport's C{bufferSize} and
    resumes it once the buffer is empty.
    """

    def __init__(self, pressure: WritePressure) -> None:
        self._pressure = pressure

    def pauseProducing(self) -> None:
        self._pressure.set(SOCKET_FULL, True)

    def resumeProducing(self) -> None:
        self._pressure.set(SOCKET_FULL, False)

    def stopProducing(self) -> None:
        self._pressure.set(SOCKET_FULL, False)


class ReadGate:
    """
    Pauses reading one socket for as long as any reason holds. Reasons added
    with C{yieldsToKeyExchange} do not hold while this socket's own connection
    is in a key exchange (see the module docstring).
    """

    def __init__(self, tcp: Any) -> None:
        self._tcp = tcp
        self._reasons: set[str] = set()
        self._yielding: set[str] = set()
        self._inKeyExchange = False
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, reason: str, yieldsToKeyExchange: bool = False) -> None:
        (self._yielding if yieldsToKeyExchange else self._reasons).add(reason)
        self._update()

    def resume(self, reason: str) -> None:
        self._reasons.discard(reason)
        self._yielding.discard(reason)
        self._update()

    def keyExchange(self, active: bool) -> None:
        self._inKeyExchange = active
        self._update()

    def _update(self) -> None:
        hold = bool(self._reasons) or (bool(self._yielding) and not self._inKeyExchange)
        if hold == self._paused:
            return
        self._paused = hold
        try:
            if hold:
                self._tcp.pauseProducing()
            else:
                self._tcp.resumeProducing()
        except Exception:  # noqa: S110 - a socket already gone cannot be paused
            pass
