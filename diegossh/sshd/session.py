# -*- test-case-name: tests.test_sshd_session -*-
"""
The daemon's C{session} channel: exec, shell, subsystems, pty, env, signals,
window changes, exit status, all as an unprivileged user.

Conch's Unix session needs root, refuses a shell without a pty, gives the child
only PATH and sends EOF while output still waits for window; none of that
holds here. Output reaches the client in order and complete: EOF and
exit-status follow the last byte, and a slow client pauses the process
instead of growing our memory.
"""

from __future__ import annotations

import os
import shlex
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.conch.ssh import common
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR
from twisted.internet import error as netError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.ssh.channel import BufferedChannel
from diegossh.sshd import process
from diegossh.sshd.environment import SessionEnvironment
from diegossh.sshd.programsession import ProgramTransport
from diegossh.sshd.pty import WindowSize, applyModes, parseModes

SESSION_WINDOW = 2 * 1024 * 1024
SESSION_MAX_PACKET = 64 * 1024

# Names a client may send in a signal request (RFC 4254 6.10), without SIG.
SIGNALS = {
    name: getattr(signal, "SIG" + name)
    for name in (
        "ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT",
        "SEGV", "TERM", "USR1", "USR2", "CONT", "STOP", "TSTP", "WINCH",
    )
}  # fmt: skip
_SIGNAL_NAMES = {number: name for name, number in SIGNALS.items()}


@dataclass(frozen=True)
class SessionConfig:
    """
    What every session of one daemon shares.
    """

    baseEnv: dict[str, str]
    home: str
    shell: str
    buildProgram: Callable[[list[str], dict[str, str]], Any]


def defaultShell() -> str:
    """
    bash where the container has it (as upstream), else sh.
    """
    return "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


class _ChildProtocol(ProcessProtocol):
    def __init__(self, session: SessionChannel) -> None:
        self.session = session

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self.session.writeExtended(EXTENDED_DATA_STDERR, data)
        else:
            self.session.write(data)

    def childConnectionLost(self, childFD: int) -> None:
        if childFD in (1, 2):
            self.session.outputClosed(childFD)

    def processEnded(self, reason: Failure) -> None:
        self.session.processEnded(reason)


@implementer(IPushProducer)
class SessionChannel(BufferedChannel):
    """
    One C{session} channel. It is also the producer feeding the child's stdin,
    so a child that reads slowly holds back the client's window.
    """

    name = b"session"
    _log = Logger()

    def __init__(self, config: SessionConfig, reactor: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("localWindow", SESSION_WINDOW)
        kwargs.setdefault("localMaxPacket", SESSION_MAX_PACKET)
        super().__init__(*args, **kwargs)
        self.config = config
        self.reactor = reactor
        self.env = SessionEnvironment(dict(config.baseEnv))
        self.term: str | None = None
        self.ptyModes: list[tuple[int, int]] = []
        self.windowSize: WindowSize | None = None
        self.child: Any = None
        self.program: ProgramTransport | None = None
        self.started = False
        self._openOutputs = {1, 2}
        self._exitReason: Failure | None = None
        self._stdinPaused = False
        self._stdinOwed = 0
        self._finished = False

    # -- requests (Conch calls request_<name>; a true return is success)

    def request_pty_req(self, data: bytes) -> int:
        if self.started or self.term is not None:
            return 0
        term, rest = common.getNS(data)
        cols, rows, xpixel, ypixel = struct.unpack(">4L", rest[:16])
        modes, _ = common.getNS(rest[16:])
        self.term = term.decode("utf-8", "replace") or "dumb"
        self.windowSize = WindowSize.fromWire(cols, rows, xpixel, ypixel)
        self.ptyModes = parseModes(modes)
        return 1

    def request_window_change(self, data: bytes) -> int:
        cols, rows, xpixel, ypixel = struct.unpack(">4L", data[:16])
        if self.term is None:
            return 0
        self.windowSize = WindowSize.fromWire(cols, rows, xpixel, ypixel)
        if self.child is not None and self.child.pid is not None:
            try:
                self.windowSize.apply(self.child.fd)
            except OSError:
                return 0
        return 1

    def request_env(self, data: bytes) -> int:
        name, rest = common.getNS(data)
        value, _ = common.getNS(rest)
        if self.started:
            return 0
        try:
            ok = self.env.request(name.decode(), value.decode())
        except UnicodeDecodeError:
            return 0
        return 1 if ok else 0

    def request_exec(self, data: bytes) -> int:
        command, _ = common.getNS(data)
        if self.started:
            return 0
        try:
            text = command.decode("utf-8")
        except UnicodeDecodeError:
            text = command.decode("utf-8", "surrogateescape")
        if self._startProgram(self._programArgv(text)):
            return 1
        return self._startProcess([self.config.shell, "-c", text])

    def request_shell(self, data: bytes) -> int:
        if self.started:
            return 0
        shell = self.config.shell
        # A login shell, as sshd starts one: argv[0] begins with '-'.
        return self._startProcess([shell, "-" + os.path.basename(shell)], executable=shell)

    def request_subsystem(self, data: bytes) -> int:
        name, _ = common.getNS(data)
        if self.started:
            return 0
        return 1 if self._startProgram([name.decode("utf-8", "replace")]) else 0

    def request_signal(self, data: bytes) -> int:
        name, _ = common.getNS(data)
        number = SIGNALS.get(name.decode("ascii", "replace"))
        if number is None or self.child is None or self.child.pid is None:
            return 0
        try:
            os.killpg(self.child.pid, number)
        except OSError:
            return 0
        return 1

    def request_x11_req(self, data: bytes) -> int:
        return 0

    def request_auth_agent_req_openssh_com(self, data: bytes) -> int:
        return 0

    def requestReceived(self, requestType: bytes, data: bytes) -> int:
        if requestType == b"auth-agent-req@openssh.com":
            return self.request_auth_agent_req_openssh_com(data)
        return int(super().requestReceived(requestType, data))

    # -- starting

    @staticmethod
    def _programArgv(command: str) -> list[str] | None:
        try:
            argv = shlex.split(command)
        except ValueError:
            return None
        return argv if argv and argv[0] == "scp" else None

    def _startProgram(self, argv: list[str] | None) -> bool:
        if argv is None:
            return False
        program = self.config.buildProgram(argv, self.env.build(self.term))
        if program is None:
            return False
        self.started = True
        self.program = ProgramTransport(self, program)
        program.makeConnection(self.program)
        return True

    def _startProcess(self, argv: list[str], executable: str | None = None) -> int:
        """
        Start the child; C{executable} differs from C{argv[0]} for a login shell.
        """
        self.started = True
        usePTY = self.term is not None
        try:
            child = process.spawn(
                self.reactor,
                _ChildProtocol(self),
                executable or argv[0],
                argv,
                self.env.build(self.term),
                self.config.home,
                usePTY,
                self._preparePTY,
            )
        except OSError as e:
            self._log.info("could not start {argv}: {error}", argv=argv[0], error=e)
            return 0
        self.child = child
        if usePTY:
            self._openOutputs = {1}
        self.registerProducer(child, True)
        child.registerProducer(self, True)
        return 1

    def _preparePTY(self, fd: int) -> None:
        try:
            if self.windowSize is not None:
                self.windowSize.apply(fd)
            applyModes(fd, self.ptyModes)
        except OSError as e:
            self._log.info("could not apply terminal settings: {error}", error=e)

    # -- stdin: the client's data, with backpressure from the child

    def dataReceived(self, data: bytes) -> None:
        if self.program is not None:
            self.program.dataReceived(data)
            return
        if self.child is None:
            self.consumed(len(data))
            return
        self.child.write(data)
        if self._stdinPaused:
            self._stdinOwed += len(data)
        else:
            self.consumed(len(data))

    def pauseProducing(self) -> None:
        self._stdinPaused = True

    def resumeProducing(self) -> None:
        self._stdinPaused = False
        owed, self._stdinOwed = self._stdinOwed, 0
        if owed:
            self.consumed(owed)

    def stopProducing(self) -> None:
        self._stdinPaused = True

    def eofReceived(self) -> None:
        if self.program is not None:
            self.program.eofReceived()
        elif self.child is not None and self.term is None:
            # A registered producer that is paused when the pipe drains would
            # make Twisted resume it instead of closing: the child would never
            # see EOF. Nothing more comes from the client anyway.
            self.child.unregisterProducer()
            owed, self._stdinOwed = self._stdinOwed, 0
            self.consumed(owed)
            self.child.closeStdin()

    # -- ending

    def outputClosed(self, childFD: int) -> None:
        self._openOutputs.discard(childFD)
        self._maybeFinish()

    def processEnded(self, reason: Failure) -> None:
        self._exitReason = reason
        self._openOutputs.clear()
        self.unregisterProducer()
        self._maybeFinish()

    def _maybeFinish(self) -> None:
        if self._exitReason is None or self._openOutputs:
            return
        value = self._exitReason.value
        signalNumber = getattr(value, "signal", None)
        status = getattr(value, "status", None)
        if signalNumber is not None:
            core = bool(status is not None and os.WCOREDUMP(status))
            self._finish(lambda: self._sendExitSignal(signalNumber, core))
        else:
            code = getattr(value, "exitCode", None)
            if code is None:
                code = 0 if isinstance(value, netError.ProcessDone) else 1
            self._finish(lambda: self._sendExitStatus(code))

    def finishWithStatus(self, status: int) -> None:
        """
        A Python-served program ended with C{status}.
        """
        self._finish(lambda: self._sendExitStatus(status))

    def _finish(self, sendStatus: Callable[[], None]) -> None:
        if self._finished:
            return
        self._finished = True

        def drained() -> None:
            if self.localClosed:
                return
            sendStatus()
            self.loseConnection()

        self.whenDrained(drained)

    def _sendExitStatus(self, code: int) -> None:
        self.conn.sendRequest(self, b"exit-status", struct.pack(">L", code & 0xFFFFFFFF))

    def _sendExitSignal(self, number: int, core: bool) -> None:
        name = _SIGNAL_NAMES.get(number)
        if name is None:
            try:
                name = signal.Signals(number).name.removeprefix("SIG")
            except ValueError:
                name = str(number)
        payload = (
            common.NS(name.encode()) + (b"\1" if core else b"\0") + common.NS(b"") + common.NS(b"")
        )
        self.conn.sendRequest(self, b"exit-signal", payload)

    def closed(self) -> None:
        """
        Both sides closed, or the connection vanished: a child still running
        gets SIGHUP, as a terminal hang-up would send it.
        """
        if self.child is not None and self._exitReason is None and self.child.pid:
            try:
                os.killpg(self.child.pid, signal.SIGHUP)
            except OSError:
                pass
        if self.program is not None:
            self.program.closed(Failure(netError.ConnectionDone("channel closed")))
