# -*- test-case-name: tests.test_logging,tests.test_proxy_shutdown,tests.test_proxy_interop -*-
"""
The proxy's access log: one structured event per login attempt and per
session end, in the C{diegossh.access} namespace so an operator can route
them (C{--accessLog FILE} writes them as JSON lines).

Events carry who, where from, to which instance, and why not (and which
proxy process served it, with C{--workers}); never a password, one-time code,
token or key.

A relayed session's pair of events goes through a L{SessionRecord}: one
C{session_end} for every C{success}, and none without one, whatever the
order in which the user, the container and the proxy end it.

Every field is bounded text (L{diegossh.logtext}): a user name is at most
128 characters and a marker. Denied logins are throttled per source like any
line before login (L{diegossh.ssh.logthrottle}, kind C{access}), with a
C{suppressed} event saying how many were held back.

The file (L{AccessLogFile}) is plain JSON lines, one object per line, and
rotates both ways: past C{maxBytes} it is renamed C{FILE.1} (C{FILE.1} to
C{FILE.2}, and so on, C{maxFiles} kept), and on SIGUSR1 it is reopened, for
logrotate's C{postrotate}. An L{AccessLogService} owns it: the file is opened
and its observer added when the proxy starts, and both go when it stops, after
the users' connections have been closed (L{diegossh.proxy.shutdown}), so a
session still open at shutdown gets its C{session_end} line.
"""

from __future__ import annotations

import fcntl
import os
import signal
from typing import IO, Any

from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    PredicateResult,
    eventAsJSON,
    globalLogPublisher,
)
from zope.interface import implementer

from diegossh.logtext import SafeLogger
from diegossh.proxy.login import LoginResult
from diegossh.ssh.logthrottle import admitBeforeLogin

NAMESPACE = "diegossh.access"
# Rotation by size: the file is rotated past this many bytes, and this many
# rotated files are kept (both are flags: --accessLogMaxBytes, --accessLogMaxFiles).
MAX_BYTES = 100 * 1024 * 1024
MAX_FILES = 5

_log = SafeLogger(namespace=NAMESPACE)


def _targetFields(result: LoginResult) -> dict[str, Any]:
    target = result.target
    return {
        "realm": result.realm,
        "process_guid": target.process_guid,
        "index": target.index,
        "instance_guid": target.instance_guid,
        "backend": target.address,
        "pid": os.getpid(),
        **result.audit,
    }


def loginSucceeded(client: str, result: LoginResult) -> None:
    _log.info(
        "Successful remote access by {client} to {process_guid}/{index} at {backend}",
        event="login",
        outcome="success",
        client=client,
        **_targetFields(result),
    )


class SessionRecord:
    """
    The access-log events of one relayed session: L{succeeded} logs the
    login's success once; L{ended} logs the end once, and only after a success.
    """

    def __init__(self, client: str, result: LoginResult, clock: Any) -> None:
        self.client = client
        self.result = result
        self._clock = clock
        self._started: float | None = None
        self._ended = False

    def succeeded(self) -> None:
        if self._started is not None:
            return
        self._started = self._clock.seconds()
        loginSucceeded(self.client, self.result)

    def ended(self, fromClient: int, fromBackend: int) -> None:
        if self._started is None or self._ended:
            return
        self._ended = True
        sessionEnded(
            self.client,
            self.result,
            fromClient,
            fromBackend,
            self._clock.seconds() - self._started,
        )


def loginFailed(
    client: str,
    username: str,
    realm: str,
    reason: str,
    *,
    connection: Any = None,
    **audit: str,
) -> None:
    """
    C{audit}: what else identifies the attempt (a key's fingerprint), never a secret.
    C{connection}: the user's server transport, whose source's budget of
    lines before login (L{diegossh.ssh.logthrottle}) this event takes from.
    """
    if not admitBeforeLogin(connection, "access"):
        return
    _log.info(
        "Login by {client} as {username} denied: {reason}",
        event="login",
        outcome="denied",
        client=client,
        username=username,
        realm=realm,
        reason=reason,
        **audit,
    )


def sessionEnded(
    client: str, result: LoginResult, fromClient: int, fromBackend: int, seconds: float
) -> None:
    _log.info(
        "Remote access ended for {client}: {bytes_from_client} bytes in, "
        "{bytes_to_client} bytes out, {duration:.3f}s",
        event="session_end",
        client=client,
        bytes_from_client=fromClient,
        bytes_to_client=fromBackend,
        duration=seconds,
        **_targetFields(result),
    )


class AccessLogFile:
    """
    An append-only file that rotates past C{maxBytes} (keeping C{maxFiles}
    rotated files, C{PATH.1} the newest) and follows its path: when the file
    at C{path} is no longer the one open (logrotate moved it, or another
    process of the same proxy rotated it), the next write reopens. With
    C{--workers} every process appends to the same file; a rotation is done
    under an exclusive C{flock}, so only one process renames.
    """

    def __init__(self, path: str, maxBytes: int = MAX_BYTES, maxFiles: int = MAX_FILES) -> None:
        self.path = path
        self.maxBytes = maxBytes
        self.maxFiles = maxFiles
        self._file: IO[bytes] = open(path, "ab")

    def _current(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None

    def write(self, line: bytes) -> None:
        on = self._current()
        if on is None or on.st_ino != os.fstat(self._file.fileno()).st_ino:
            self.reopen()
        elif self.maxBytes and on.st_size and on.st_size + len(line) > self.maxBytes:
            self.rotate(len(line))
        self._file.write(line)
        self._file.flush()

    def rotate(self, incoming: int = 0) -> None:
        """
        Rename C{path} to C{path.1} (and so on) and start a new file, unless
        another process did so first.
        """
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        try:
            on = self._current()
            mine = os.fstat(self._file.fileno()).st_ino
            if on is not None and on.st_ino == mine and on.st_size + incoming > self.maxBytes:
                for n in range(self.maxFiles - 1, 0, -1):
                    older = f"{self.path}.{n}"
                    if os.path.exists(older):
                        os.replace(older, f"{self.path}.{n + 1}")
                if self.maxFiles > 0:
                    os.replace(self.path, f"{self.path}.1")
                else:
                    os.remove(self.path)
        finally:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self.reopen()

    def reopen(self) -> None:
        self._file.close()
        self._file = open(self.path, "ab")

    def close(self) -> None:
        self._file.close()


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each event as one line of JSON (Twisted's C{eventAsJSON}, which
    escapes every newline inside a value), with no record separator.
    """

    def __init__(self, output: AccessLogFile) -> None:
        self.output = output

    def __call__(self, event: LogEvent) -> None:
        self.output.write(eventAsJSON(event).encode("utf-8") + b"\n")


def _onlyAccess(event: LogEvent) -> PredicateResult:
    if event.get("log_namespace") == NAMESPACE:
        return PredicateResult.yes
    return PredicateResult.no


class AccessLogService(Service):
    """
    Writes the C{diegossh.access} events to C{path} as JSON lines while it
    runs: rotated by size, and reopened on SIGUSR1 (in the reactor's thread).

    The proxy adds it first, so it starts before anything that logs access
    events and stops after everything else (L{diegossh.proxy.shutdown.StopInOrder}).
    """

    def __init__(
        self,
        path: str,
        reactor: Any,
        maxBytes: int = MAX_BYTES,
        maxFiles: int = MAX_FILES,
        publisher: Any = globalLogPublisher,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self.maxBytes = maxBytes
        self.maxFiles = maxFiles
        self._publisher = publisher
        self.output: AccessLogFile | None = None
        self.observer: Any = None
        self._previousHandler: Any = None

    def privilegedStartService(self) -> None:
        """
        Open the file before twistd gives up root (C{--uid}), as the proxy
        always has: the log's directory may be writable by root only.
        """
        super().privilegedStartService()
        if self.output is None:
            self.output = AccessLogFile(self.path, self.maxBytes, self.maxFiles)

    def startService(self) -> None:
        super().startService()
        if self.output is None:
            self.output = AccessLogFile(self.path, self.maxBytes, self.maxFiles)
        output = self.output
        predicate: Any = _onlyAccess
        self.observer = FilteringLogObserver(JSONLinesObserver(output), [predicate])
        self._publisher.addObserver(self.observer)
        reactor = self._reactor

        def onSignal(signum: int, frame: Any) -> None:
            reactor.callFromThread(output.reopen)

        previous = signal.signal(signal.SIGUSR1, onSignal)
        # None: the handler was not set from Python; the default is what to restore.
        self._previousHandler = signal.SIG_DFL if previous is None else previous

    def stopService(self) -> None:
        """
        Stop writing: the observer goes, the file is closed, and SIGUSR1 has
        the handler it had before.
        """
        super().stopService()
        if self.observer is not None:
            self._publisher.removeObserver(self.observer)
            self.observer = None
        if self.output is not None:
            self.output.close()
            self.output = None
        if self._previousHandler is not None:
            signal.signal(signal.SIGUSR1, self._previousHandler)
            self._previousHandler = None
