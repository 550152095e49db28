# -*- test-case-name: tests.test_sshd_session -*-
"""
The daemon's C{session} channel: exec, shell, subsystems, pty, env, signals,
window changes, exit status, all as an unprivileged user.

Conch's Unix session needs root, refuses a shell without a pty, gives the child
only PATH and sends EOF while output still waits for window; none of that
holds here. Output reaches the client in order and complete: EOF and
exit-status follow the last byte, and a slow client pauses the process
instead of growing our memory.

A session that ends before its program does (the client closed the channel,
or the connection went away) hangs the program up: SIGHUP to its process
group, every descriptor to it closed at once, and SIGKILL to what is left of
the group after L{KILL_GRACE} seconds. That holds in whatever order the end
arrives relative to the fork, the child's C{setsid}, its output and its exit.

Every request's payload is parsed strictly (L{_fields}): a truncated,
overlong or otherwise malformed payload is a refused request, never an
exception.
"""

from __future__ import annotations

import os
import shlex
import signal
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.conch.ssh import common
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR
from twisted.internet import error as netError
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from diegossh.logtext import SafeLogger
from diegossh.ssh.channel import BufferedChannel, routeConchLog
from diegossh.sshd import process
from diegossh.sshd.environment import SessionEnvironment
from diegossh.sshd.programsession import ProgramTransport
from diegossh.sshd.pty import WindowSize, applyModes, parseModes

SESSION_WINDOW = 2 * 1024 * 1024
SESSION_MAX_PACKET = 64 * 1024
# Seconds between the SIGHUP of a session's program and the SIGKILL of
# whatever is left of its process group.
KILL_GRACE = 2.0

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


class _Malformed(Exception):
    pass


def _fields(data: bytes, spec: str) -> list[Any]:
    """
    Parse a request payload made of exactly the fields C{spec} names: C{s} a
    string, C{L} a uint32, C{b} a boolean. Anything short, long or otherwise
    off raises L{_Malformed}.
    """
    values: list[Any] = []
    at = 0
    end = len(data)
    for code in spec:
        if code == "b":
            if at + 1 > end:
                raise _Malformed()
            values.append(data[at] != 0)
            at += 1
            continue
        if at + 4 > end:
            raise _Malformed()
        (number,) = struct.unpack(">L", data[at : at + 4])
        at += 4
        if code == "L":
            values.append(number)
        elif code == "s":
            if at + number > end:
                raise _Malformed()
            values.append(data[at : at + number])
            at += number
        else:
            raise ValueError(f"unknown field code {code!r}")
    if at != end:
        raise _Malformed()
    return values


class _ChildProtocol(ProcessProtocol):
    def __init__(self, session: SessionChannel) -> None:
        self.session = session

    def connectionMade(self) -> None:
        # Called inside the process's constructor, right after the fork: the
        # session knows its child before anything else can happen to either.
        self.session.childStarted(self.transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.session.childDataReceived(childFD, data)

    def childConnectionLost(self, childFD: int) -> None:
        if childFD in (1, 2):
            self.session.outputClosed(childFD)

    def processExited(self, reason: Failure) -> None:
        self.session.childExited()

    def processEnded(self, reason: Failure) -> None:
        self.session.processEnded(reason)


@routeConchLog
class SessionChannel(BufferedChannel):
    """
    One C{session} channel. It is also the producer feeding the child's stdin,
    so a child that reads slowly holds back the client's window.
    """

    name = b"session"
    log = SafeLogger()

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
        self._finished = False
        # The client still reads the program's output (no eow@openssh.com yet).
        self._outputWanted = True
        # The child's leader was reaped / Twisted reported the whole end.
        self._leaderExited = False
        self._childEnded = False
        # The channel is closed (by either side, or with the connection).
        self._ended = False
        self._killTimer: Any = None

    # -- requests (a true return is success; a malformed payload is refused)

    def requestReceived(self, requestType: bytes, data: bytes) -> int:
        handler = self._handlerFor(requestType)
        if handler is None:
            self.log.info("unhandled request {requestType!r}", requestType=requestType)
            return 0
        try:
            return 1 if handler(data) else 0
        except Exception as e:
            # Never a traceback for what a client sent: refuse, log one line.
            self.log.warn(
                "request {requestType!r} refused: {error!r}", requestType=requestType, error=e
            )
            return 0

    def _handlerFor(self, requestType: bytes) -> Callable[[bytes], int] | None:
        special = {
            b"auth-agent-req@openssh.com": self.request_auth_agent_req_openssh_com,
            b"eow@openssh.com": self.request_eow_openssh_com,
        }
        if requestType in special:
            return special[requestType]
        try:
            name = requestType.decode("ascii").replace("-", "_")
        except UnicodeDecodeError:
            return None
        if not name.isidentifier():
            return None
        handler: Callable[[bytes], int] | None = getattr(self, "request_" + name, None)
        return handler

    def request_pty_req(self, data: bytes) -> int:
        try:
            term, cols, rows, xpixel, ypixel, modes = _fields(data, "sLLLLs")
        except _Malformed:
            return 0
        if self.started or self.term is not None or b"\0" in term:
            return 0
        self.term = term.decode("utf-8", "replace") or "dumb"
        self.windowSize = WindowSize.fromWire(cols, rows, xpixel, ypixel)
        self.ptyModes = parseModes(modes)
        return 1

    def request_window_change(self, data: bytes) -> int:
        try:
            cols, rows, xpixel, ypixel = _fields(data, "LLLL")
        except _Malformed:
            return 0
        if self.term is None:
            return 0
        self.windowSize = WindowSize.fromWire(cols, rows, xpixel, ypixel)
        fd = self.child.terminalFD() if self.child is not None else None
        if fd is not None:
            try:
                self.windowSize.apply(fd)
            except OSError:
                return 0
        return 1

    def request_env(self, data: bytes) -> int:
        try:
            name, value = _fields(data, "ss")
        except _Malformed:
            return 0
        if self.started:
            return 0
        try:
            ok = self.env.request(name.decode(), value.decode())
        except UnicodeDecodeError:
            return 0
        return 1 if ok else 0

    def request_exec(self, data: bytes) -> int:
        try:
            (command,) = _fields(data, "s")
        except _Malformed:
            return 0
        if self.started or b"\0" in command:
            return 0
        try:
            text = command.decode("utf-8")
        except UnicodeDecodeError:
            text = command.decode("utf-8", "surrogateescape")
        if self._startProgram(self._programArgv(text)):
            return 1
        return self._startProcess([self.config.shell, "-c", text])

    def request_shell(self, data: bytes) -> int:
        if data or self.started:
            return 0
        shell = self.config.shell
        # A login shell, as sshd starts one: argv[0] begins with '-'.
        return self._startProcess(["-" + os.path.basename(shell)], executable=shell)

    def request_subsystem(self, data: bytes) -> int:
        try:
            (name,) = _fields(data, "s")
        except _Malformed:
            return 0
        if self.started or b"\0" in name:
            return 0
        return 1 if self._startProgram([name.decode("utf-8", "replace")]) else 0

    def request_signal(self, data: bytes) -> int:
        try:
            (name,) = _fields(data, "s")
        except _Malformed:
            return 0
        number = SIGNALS.get(name.decode("ascii", "replace"))
        if number is None or self.child is None or self._childEnded:
            return 0
        return 1 if self.child.signalGroup(number) else 0

    def request_eow_openssh_com(self, data: bytes) -> int:
        """
        OpenSSH's "end of write": the client's stdout is gone (C{ssh host yes
        | head -n 1}). As sshd, stop taking the program's output: its stdout
        pipe is closed (its next write fails with EPIPE, or SIGPIPE ends it)
        and what is queued for the client is dropped. Stderr still reaches the
        client, whose own stderr still works. On a pty, whose output is both,
        the pty is no longer read: the program blocks once the terminal's
        buffer is full, until the session ends (as under sshd).
        """
        if data:
            return 0
        if self._outputWanted:
            self._outputWanted = False
            self._stopOutput()
        return 1

    def request_x11_req(self, data: bytes) -> int:
        return 0

    def request_auth_agent_req_openssh_com(self, data: bytes) -> int:
        return 0

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
        try:
            program = self.config.buildProgram(argv, self.env.build(self.term))
        except Exception as e:
            self._cannotStart(argv[0], e)
            return True
        if program is None:
            return False
        self.started = True
        self.program = ProgramTransport(self, program)
        try:
            program.makeConnection(self.program)
        except Exception as e:
            self.program = None
            self._cannotStart(argv[0], e)
            return True
        if not self._outputWanted:
            self.program.discardOutput()
        return True

    def _startProcess(self, argv: list[str], executable: str | None = None) -> int:
        """
        Start the child; C{executable} differs from C{argv[0]} for a login shell.
        """
        if self._ended:
            return 0
        self.started = True
        usePTY = self.term is not None
        executable = executable or argv[0]
        try:
            child = process.spawn(
                self.reactor,
                _ChildProtocol(self),
                executable,
                argv,
                self.env.build(self.term),
                self.config.home,
                usePTY,
                self._preparePTY,
            )
        except Exception as e:
            if self.child is not None:
                # Forked, then failed in the parent: the child is not left behind.
                self.child.hangUp()
                self._killTimer = self.reactor.callLater(KILL_GRACE, self._killLeftovers)
                self._childEnded = True
            self._cannotStart(executable, e)
            return 1
        self.child = child
        if usePTY:
            self._openOutputs = {1}
        self.registerProducer(child, True)
        child.registerProducer(self, True)
        if not self._outputWanted:
            self._stopOutput()
        return 1

    def _cannotStart(self, executable: str, error: BaseException) -> None:
        """
        The program could not start: the client gets one line on stderr and
        an exit status, after the reply to its request.
        """
        line, status = process.startFailure(executable, error)
        self.log.info("session could not start: {line}", line=line.rstrip())
        self.started = True

        def report() -> None:
            self.writeExtended(EXTENDED_DATA_STDERR, line.encode("utf-8", "surrogateescape"))
            self.finishWithStatus(status)

        self.reactor.callLater(0, report)

    def _preparePTY(self, fd: int) -> None:
        try:
            if self.windowSize is not None:
                self.windowSize.apply(fd)
            applyModes(fd, self.ptyModes)
        except (OSError, termios.error) as e:
            self.log.info("could not apply terminal settings: {error}", error=e)

    # -- the child's side

    def childStarted(self, child: Any) -> None:
        self.child = child

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if self._ended or (not self._outputWanted and (childFD == 1 or self.term is not None)):
            return
        if childFD == 2:
            self.writeExtended(EXTENDED_DATA_STDERR, data)
        else:
            self.write(data)

    def _stopOutput(self) -> None:
        if self.program is not None:
            self.program.discardOutput()
        self._discardQueued(stderrToo=self.term is not None)
        child = self.child
        if child is None or self._childEnded:
            return
        if self.term is None:
            child.closeOutput(1)
            return
        # One pty carries both streams: stop reading it, and keep it unread
        # (the channel would resume a producer it still knew).
        self.unregisterProducer()
        child.pauseProducing()
        if self._leaderExited:
            child.closeDescriptors()

    def _discardQueued(self, stderrToo: bool) -> None:
        """
        Drop the output queued for the client (stdout, or everything).
        """
        self.discardQueued({None, EXTENDED_DATA_STDERR} if stderrToo else {None})

    # -- stdin: the client's data, with backpressure from the child

    def dataReceived(self, data: bytes) -> None:
        # The program or child pauses the channel while it cannot take more
        # (the channel is its producer); before either starts, stdin is
        # dropped and granted back.
        if self.program is not None:
            self.program.dataReceived(data)
        elif self.child is not None:
            self.child.write(data)
        self.delivered(len(data))

    def eofReceived(self) -> None:
        if self.program is not None:
            self.program.eofReceived()
        elif self.child is not None and self.term is None:
            # A registered producer that is paused when the pipe drains would
            # make Twisted resume it instead of closing: the child would never
            # see EOF. Nothing more comes from the client anyway.
            self.child.unregisterProducer()
            self.child.closeStdin()

    # -- ending

    def outputClosed(self, childFD: int) -> None:
        self._openOutputs.discard(childFD)
        self._maybeFinish()

    def childExited(self) -> None:
        """
        The child's leader was reaped (its descendants may still hold the
        output). A pty nobody reads any more would never report its end.
        """
        self._leaderExited = True
        if not self._outputWanted and self.term is not None and not self._ended:
            self.child.closeDescriptors()

    def processEnded(self, reason: Failure) -> None:
        self._childEnded = True
        self._exitReason = reason
        self._openOutputs.clear()
        self.unregisterProducer()
        self._maybeFinish()

    def _maybeFinish(self) -> None:
        if self._exitReason is None or self._openOutputs or self._ended:
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
        if self._finished or self._ended:
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

    def closeReceived(self) -> None:
        """
        The client closed the channel: it reads nothing more, so whatever is
        queued is dropped and our close goes out now (not after the queue
        drains into a window that will never open again).
        """
        self.abortConnection()

    def closed(self) -> None:
        """
        Both sides closed, or the connection vanished. A program that has not
        ended is hung up: SIGHUP to its process group, every descriptor to it
        closed now (a paused reader would never see EOF), and after
        L{KILL_GRACE} seconds SIGKILL to whatever is left of the group.
        """
        self._ended = True
        self.abortConnection()
        self.unregisterProducer()
        child = self.child
        if child is not None and not self._childEnded:
            signalled = child.hangUp()
            child.closeDescriptors()
            if signalled:
                self._killTimer = self.reactor.callLater(KILL_GRACE, self._killLeftovers)
        if self.program is not None:
            self.program.closed(Failure(netError.ConnectionDone("channel closed")))

    def _killLeftovers(self) -> None:
        self._killTimer = None
        self.child.killGroup()
