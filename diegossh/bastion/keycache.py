# -*- test-case-name: tests.test_bastion_keycache -*-
"""
Which key opens which target: the targets the engine reports, each with the
keys it published, plus the operator's C{authorized_keys_cache} file.

Logins are answered from memory. The cache refreshes on a timer and at once
when an unknown key knocks, but at most once per C{minInterval} for such
knocks, so a stream of bad keys cannot hammer the engine API; a refresh that
fails keeps what was known, so the engine being down never blocks a login
the cache can already answer.

The timer is the cache's life: it is an L{IService} (returned in the
bastion's L{diegossh.proxy.realms.BuiltRealm}), refreshing from
C{startService} to C{stopService}, which also cancels a refresh in flight so
no engine call outlives the proxy.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from diegossh.bastion.authorizedkeys import AuthorizedKey, UnsupportedLine, operatorKey
from diegossh.bastion.targets import EngineTarget
from diegossh.ssh.keys import parsePublishedKeys

log = Logger(namespace="diegossh.bastion")

#: exec and HTTP calls in flight at once while reading new targets' keys
FETCH_CONCURRENCY = 8


@dataclass(frozen=True)
class Destination:
    """
    Where a permitted tunnel goes: the address to dial, and the target's
    name as the access log and the host fence see it.
    """

    name: str
    address: str


class KeyCache(Service):
    """
    @param engine: an L{IContainerEngine}, or L{None} for the operator's file
        only (C{MANUAL_AUTH_FILE=true}).
    @param fetchPublished: C{fetchPublished(address)} is the body of the
        target's C{/publickey}, or L{None}.
    @param keyPath: the file read through the engine's exec API when a
        target publishes no key over HTTP.
    @param authorizedKeysFile: the operator's file; a missing file is empty.
    """

    def __init__(
        self,
        clock: IReactorTime,
        engine: Any,
        fetchPublished: Callable[[str], Awaitable[bytes | None]] | None,
        keyPath: str,
        authorizedKeysFile: str | None,
        interval: float,
        minInterval: float,
    ) -> None:
        self._clock = clock
        self._engine = engine
        self._fetchPublished = fetchPublished
        self._keyPath = keyPath
        self._file = authorizedKeysFile
        self._interval = interval
        self._minInterval = minInterval
        self._targets: dict[str, EngineTarget] = {}
        self._published: dict[str, frozenset[bytes]] = {}  # target id -> key blobs
        self._byBlob: dict[bytes, set[str]] = {}  # key blob -> target names
        self._fileKeys: dict[bytes, AuthorizedKey] = {}
        self._fileStamp: tuple[float, int] | None = None
        self._inflight: defer.Deferred[None] | None = None
        self._waiters: list[defer.Deferred[None]] = []
        self._lastKnock = -math.inf
        self._loop: task.LoopingCall | None = None
        self.refreshes = 0
        self.lastError: str | None = None

    # -- lifecycle (IService)

    def startService(self) -> None:
        """
        Refresh now, then every C{interval} seconds.
        """
        super().startService()
        loop = task.LoopingCall(self.refresh)
        loop.clock = self._clock
        self._loop = loop
        loop.start(self._interval, now=True)

    def stopService(self) -> None:
        """
        No more refreshes: the timer stops and a refresh in flight is
        cancelled (its waiters are answered from what is cached).
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._inflight is not None:
            self._inflight.cancel()

    # -- answering logins

    def knows(self, blob: bytes) -> bool:
        return blob in self._byBlob or blob in self._fileKeys

    async def lookup(self, blob: bytes) -> bool:
        """
        Whether C{blob} may log in; an unknown key refreshes first, unless a
        knock already did so less than C{minInterval} ago.
        """
        if self.knows(blob):
            return True
        now = self._clock.seconds()
        if now - self._lastKnock < self._minInterval:
            return False
        self._lastKnock = now
        await self.refresh()
        return self.knows(blob)

    def destination(self, blob: bytes, host: str, port: int) -> Destination | None:
        """
        Where a tunnel to C{host:port} with this key goes, or L{None} when the
        key does not open that target. C{host} may be a target's name or its
        address.
        """
        target = self._targets.get(host) or next(
            (t for t in self._targets.values() if t.address == host), None
        )
        if target is not None and target.name in self._byBlob.get(blob, ()):
            return Destination(target.name, target.address)
        fileKey = self._fileKeys.get(blob)
        if fileKey is None:
            return None
        name = target.name if target is not None else host
        address = target.address if target is not None else host
        if fileKey.permitOpen is None:
            return Destination(name, address)
        for hostPattern, portPattern in fileKey.permitOpen:
            if fnmatch.fnmatchcase(name, hostPattern) and portPattern in ("*", str(port)):
                return Destination(name, address)
        return None

    def targetName(self, host: str) -> str:
        """
        The discovered target's name for C{host} (a name or an address), or
        C{host} itself.
        """
        if host in self._targets:
            return host
        for target in self._targets.values():
            if target.address == host:
                return target.name
        return host

    # -- refreshing

    def refresh(self) -> defer.Deferred[None]:
        """
        One refresh at a time: callers during one wait for that one.
        """
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._inflight is None:
            self._waiters = [waiter]
            inflight = defer.ensureDeferred(self._refresh())
            self._inflight = inflight
            inflight.addErrback(self._failed)
            inflight.addBoth(self._refreshed)
        else:
            self._waiters.append(waiter)
        return waiter

    def _failed(self, failure: Failure) -> None:
        if not failure.check(defer.CancelledError):  # cancelled: the service stopped
            log.failure("refresh failed", failure)

    def _refreshed(self, result: object) -> None:
        self._inflight = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _refresh(self) -> None:
        self.refreshes += 1
        self._readFile()
        if self._engine is None:
            return
        try:
            listed = await self._engine.listTargets()
        except defer.CancelledError:
            raise  # the service stopped: not the engine's failure
        except Exception as e:
            if self.lastError != str(e):
                log.warn("target discovery failed, keeping what is cached: {error}", error=str(e))
            self.lastError = str(e)
            return
        self.lastError = None
        current = {target.name: target for target in listed}
        known = {target.id: target for target in self._targets.values()}
        fresh = [
            target
            for target in current.values()
            if not self._published.get(target.id) or known.get(target.id) != target
        ]
        semaphore = defer.DeferredSemaphore(FETCH_CONCURRENCY)
        results = await defer.gatherResults(
            [semaphore.run(self._keysOf, target) for target in fresh]
        )
        published = {
            target.id: self._published[target.id]
            for target in current.values()
            if target.id in self._published and target not in fresh
        }
        for target, blobs in zip(fresh, results, strict=True):
            if blobs:
                published[target.id] = blobs
        self._targets = current
        self._published = published
        byBlob: dict[bytes, set[str]] = {}
        for target in current.values():
            for blob in published.get(target.id, ()):
                byBlob.setdefault(blob, set()).add(target.name)
        self._byBlob = byBlob

    def _keysOf(self, target: EngineTarget) -> defer.Deferred[frozenset[bytes]]:
        return defer.ensureDeferred(self._fetchKeys(target))

    async def _fetchKeys(self, target: EngineTarget) -> frozenset[bytes]:
        """
        The target's published keys: its C{/publickey} first, else its key
        file through exec. None found is retried at the next refresh (the
        target may still be starting).
        """
        if self._fetchPublished is not None:
            body = await self._fetchPublished(target.address)
            if body:
                found = parsePublishedKeys(body)
                if found:
                    return frozenset(key.blob() for key in found)
        try:
            data = await self._engine.readFile(target, self._keyPath)
        except defer.CancelledError:
            raise
        except Exception as e:
            log.info("no key from target {target} yet: {error}", target=target.name, error=str(e))
            return frozenset()
        return frozenset(key.blob() for key in parsePublishedKeys(data))

    def _readFile(self) -> None:
        """
        (Re)read the operator's file when it changed; a vanished file is empty.
        """
        if not self._file:
            return
        try:
            info = os.stat(self._file)
        except FileNotFoundError:
            self._fileKeys, self._fileStamp = {}, None
            return
        except OSError as e:
            log.warn("cannot read {path}: {error}", path=self._file, error=str(e))
            return
        stamp = (info.st_mtime, info.st_size)
        if stamp == self._fileStamp:
            return
        try:
            with open(self._file, encoding="utf-8", errors="replace") as f:
                lines = f.read(4 * 1024 * 1024).splitlines()
        except OSError as e:
            log.warn("cannot read {path}: {error}", path=self._file, error=str(e))
            return
        fileKeys: dict[bytes, AuthorizedKey] = {}
        for number, line in enumerate(lines, 1):
            try:
                entry = operatorKey(line)
            except UnsupportedLine as e:
                log.warn("{path}:{line}: key skipped: {why}", path=self._file, line=number, why=e)
                continue
            if entry is not None:
                fileKeys[entry.key.blob()] = entry
        self._fileKeys, self._fileStamp = fileKeys, stamp
