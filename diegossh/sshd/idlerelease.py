# -*- test-case-name: tests.test_sshd_startuppages -*-
"""
Give back the pages a login brought in once the daemon is idle again
(issue 15).

The daemon releases its start-up's pages once it listens
(L{diegossh.sshd.startuppages}); a login maps about 6 MiB of them back
(cryptography's and Conch's code), and they would stay mapped for as long
as the daemon runs, though an app instance's daemon sits idle for hours
between sessions. So every L{CHECK_EVERY} seconds, if connections have come
and gone since the last look and none is open now, the pages are released
again. At most one release (about 10 ms of CPU) per interval, and none at
all while the daemon is never used or always busy.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from diegossh.ssh.openconnections import OpenConnections

__all__ = ["CHECK_EVERY", "IdleRelease"]

CHECK_EVERY = 30.0


class IdleRelease(Service):
    """
    Calls C{release} on the first check (every C{every} seconds) that finds
    no connection open and some ended since the previous release.
    """

    def __init__(
        self,
        connections: OpenConnections,
        clock: IReactorTime,
        release: Callable[[], object],
        every: float = CHECK_EVERY,
    ) -> None:
        self._connections = connections
        self._clock = clock
        self._release = release
        self._every = every
        self._released = connections.ended
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._released = self._connections.ended
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._clock
        self._loop.start(self._every, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _check(self) -> None:
        if self._connections.open or self._connections.ended == self._released:
            return
        self._released = self._connections.ended
        self._release()
