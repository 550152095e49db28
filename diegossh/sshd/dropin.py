# -*- test-case-name: tests.test_sshd_dropin -*-
"""
The C{diego-sshd} script's daemon once its command line is read
(L{diegossh.sshd.script}) and the keys are off it: lager logging, the
options and their refusals as upstream logs them, the listeners and
C{sshd.started}.

Apart from the script so that the script's first process, which only reads
the flags and re-executes itself, imports no Twisted (issue 15).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, TextIO

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger, globalLogBeginner
from twisted.python import usage
from twisted.python.failure import Failure

from diegossh.lager import LagerObserver
from diegossh.sshd.idlerelease import IdleRelease
from diegossh.sshd.options import Options
from diegossh.sshd.script import (
    KEY_FLAGS,
    SOURCE,
    Command,
    optionsArguments,
    reexecEnvironment,
    usageText,
)
from diegossh.sshd.startuppages import releaseStartupPages
from diegossh.sshd.tap import debugPages, makeDaemon

_log = Logger()


def readOptions(command: Command, environ: MutableMapping[str, str]) -> Options:
    """
    L{Options} for C{command}; keys still on the command line (only when the
    re-exec did not happen) go through their variables as a re-exec would
    have carried them.

    @raise usage.UsageError: a refusal; its C{__cause__} is the settings'.
    """
    carried = reexecEnvironment(command, environ)
    for variable in KEY_FLAGS.values():
        if carried.get(variable):
            environ[variable] = carried[variable]
    options = Options()
    options.parseOptions(optionsArguments(command))
    return options


class DropInService(Service):
    """
    The daemon and, with C{-debugAddr}, its debug server: listens on both,
    then logs C{sshd.started} and calls C{afterStart} (the start-up is over:
    L{releasePages}); a listener that fails is logged as upstream's
    C{sshd.exited-with-failure} and C{failed} is called.
    """

    def __init__(
        self,
        listeners: Sequence[tuple[Any, Any]],
        failed: Callable[[Failure], object],
        afterStart: Callable[[], object] = lambda: None,
    ) -> None:
        self._listeners = listeners
        self._failed = failed
        self._afterStart = afterStart
        self._ports: list[Any] = []
        self._starting: Deferred[object] | None = None

    def startService(self) -> None:
        super().startService()
        self._starting = self._listenAll()

    def _listenAll(self) -> Deferred[object]:
        listening: Deferred[Any] = succeed(None)
        for endpoint, factory in self._listeners:
            listening.addCallback(self._listenOn, endpoint, factory)
            listening.addCallback(self._ports.append)

        def started(_: object) -> None:
            self._starting = None
            _log.info("sshd started", lager="started", lager_data={})
            self._afterStart()

        def failed(reason: Failure) -> None:
            self._starting = None
            _log.error(
                "sshd exited with failure: {error}",
                error=reason.getErrorMessage(),
                lager="exited-with-failure",
                lager_data={"error": reason.getErrorMessage()},
            )
            self._failed(reason)

        return listening.addCallbacks(started, failed)

    @staticmethod
    def _listenOn(_: object, endpoint: Any, factory: Any) -> Any:
        return endpoint.listen(factory)

    def stopService(self) -> Deferred[object]:
        super().stopService()
        if self._starting is not None:
            self._starting.cancel()
        ports, self._ports = self._ports, []
        stopping = gatherResults([port.stopListening() for port in ports])

        def exited(_: object) -> None:
            _log.info("sshd exited", lager="exited", lager_data={})

        return stopping.addCallback(exited)


def releasePages(release: Callable[[], int] = releaseStartupPages) -> None:
    """
    Give back the pages only the start-up used (L{diegossh.sshd.startuppages})
    and say how much at debug level.
    """
    released = release()
    _log.debug(
        "released {bytes} bytes of mapped pages",
        bytes=released,
        lager="pages-released",
        lager_data={"bytes": released},
    )


def logRefusal(error: usage.UsageError) -> None:
    """
    A refused setting as upstream logs it: its own event when upstream has
    one, then C{configure-failed} with the message.
    """
    cause = error.__cause__
    event = getattr(cause, "lager", "configure-failed")
    message = str(error)
    if event == "authorized-key-required":
        _log.error("{message}", message=message, lager=event, lager_data={})
    elif event != "configure-failed":
        _log.error("{message}", message=message, lager=event, lager_data={"error": message})
    _log.error(
        "{message}", message=message, lager="configure-failed", lager_data={"error": message}
    )


def _lineWriter(stream: TextIO) -> Callable[[str], None]:
    def write(line: str) -> None:
        stream.write(line)
        stream.flush()

    return write


def startLogging(command: Command, stdout: TextIO) -> LagerObserver:
    """
    Lager lines on C{stdout} at the level and in the time format C{command}
    asks for, for every event from here on.
    """
    observer = LagerObserver(_lineWriter(stdout), SOURCE, timeFormat="unix-epoch")
    observer.setLevel(str(command.given.get("logLevel", "info")))
    if command.given.get("timeFormat") in ("rfc3339", "1"):
        observer.timeFormat = "rfc3339"
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return observer


def logExecFailure(error: OSError) -> None:
    """
    The re-exec that was to move the keys off the command line failed.
    """
    _log.error("{error}", error=str(error), lager="failed-exec", lager_data={"error": str(error)})


def serve(
    command: Command,
    program: str,
    environ: MutableMapping[str, str],
    stdout: TextIO,
    stderr: TextIO,
    reactor: Any = None,
) -> int:
    """
    Read the options, listen and run until stopped; the exit code. Without
    a C{reactor}, the global one.
    """
    observer = startLogging(command, stdout)
    try:
        options = readOptions(command, environ)
    except usage.UsageError as e:
        if isinstance(e.__cause__, ValueError):
            logRefusal(e)
            return 1
        stderr.write(f"{e}\n{usageText(program, command.flags)}")
        return 2
    settings = options["settings"]
    if reactor is None:
        from twisted.internet import reactor
    endpoint, factory, hangUp = makeDaemon(settings, reactor)
    listeners = [(endpoint, factory)]
    if settings.debugAddress is not None:
        from diegossh.addresses import serverEndpoint
        from diegossh.debugserver import debugSite

        site = debugSite(observer, debugPages(listeners[0][1]))  # /metrics: -enableMetrics
        listeners.insert(0, (serverEndpoint(reactor, settings.debugAddress), site))
    exitCode = [0]

    def failed(reason: Failure) -> None:
        exitCode[0] = 1
        reactor.stop()

    # the start-up's pages once listening, then a login's once idle again
    idle = IdleRelease(hangUp.connections, reactor, releasePages)

    def afterStart() -> None:
        releasePages()
        idle.startService()

    service = DropInService(listeners, failed, afterStart)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.addSystemEventTrigger("before", "shutdown", hangUp.stopService)  # SIGHUP, as sshd
    reactor.addSystemEventTrigger("before", "shutdown", idle.stopService)
    reactor.run()
    return exitCode[0]
