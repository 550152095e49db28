# -*- test-case-name: tests.test_sshd_process -*-
"""
Starting and ending a session's child process the way an SSH daemon must.

Twisted's stock process support reads pipes and ptys 8 KiB at a time (each
read becomes its own SSH packet) and, with pipes, leaves the child in the
daemon's process group, so a C{signal} request or a vanished client could not
reach the child's own children. Here the child leads a new session (so
C{killpg} reaches everything it started), its pipes hold 1 MiB, and output
is read 256 KiB at a time.

Ending is where Twisted gives least help:

  - C{pid} becomes L{None} once the leader is reaped, though its children may
    still hold the session's pipes; the group keeps the leader's number, so
    it is remembered as C{pgid} from the fork on.
  - Between C{fork} and the child's C{setsid} there is no such group yet;
    L{SessionLeader.signalGroup} then signals the leader itself (its number
    cannot have been reused: it is not reaped).
  - A paused reader never sees EOF, and Twisted closes a pipe or pty only
    once it has seen EOF (or, for stdin, once pending data is written), so a
    session that ends while its output is backed up would keep its
    descriptors forever. L{SessionLeader.closeDescriptors} closes them now.
  - A child that cannot start (no such shell, no such home directory) would
    print a Python traceback to the client; here it prints one line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from collections.abc import Callable
from typing import Any, NoReturn

from twisted.internet import process
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.python.failure import Failure

from diegossh._twisted import ProcessInternals

READ_SIZE = 256 * 1024
# Pipes to and from the child: 1 MiB (Linux's default limit for a user) instead
# of 64 KiB, so the child and the daemon each move more per wake-up of the other.
PIPE_SIZE = 1024 * 1024
# Exit statuses of a child that could not run its program, as shells use them.
NOT_FOUND = 127
CANNOT_RUN = 126


def widenPipe(fd: int, size: int = PIPE_SIZE) -> None:
    """
    Ask for a larger pipe buffer where Linux allows it; keep the old size if not
    (past the user's pipe quota, F_SETPIPE_SZ fails with EPERM).
    """
    setSize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setSize is None:
        return
    try:
        fcntl.fcntl(fd, setSize, size)
    except OSError:
        pass


def startFailure(executable: str, error: BaseException) -> tuple[str, int]:
    """
    The one line a client sees when C{executable} cannot be started, and the
    exit status the session reports for it.
    """
    if isinstance(error, OSError) and error.errno is not None:
        reason = os.strerror(error.errno)
        status = NOT_FOUND if error.errno == errno.ENOENT else CANNOT_RUN
    else:
        reason = str(error) or type(error).__name__
        status = CANNOT_RUN
    return f"diego-sshd: cannot run {executable}: {reason}\n", status


def _say(line: str) -> None:
    # In the forked child, before exec: best effort, never raise.
    try:
        os.write(2, line.encode("utf-8", "surrogateescape"))
    except Exception:  # noqa: S110
        pass


def _readInto(fd: int, deliver: Any) -> Any:
    try:
        data = os.read(fd, READ_SIZE)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EINTR):
            return None
        return CONNECTION_LOST
    if not data:
        return CONNECTION_DONE
    deliver(data)
    return None


class _WideReader(process.ProcessReader):
    def doRead(self) -> Any:
        return _readInto(self.fd, self.dataReceived)


class SessionLeader(ProcessInternals):
    """
    What both kinds of child share: a process group of their own, signalled
    as a whole, and a start that fails with one line instead of a traceback.
    Mixed in before Twisted's process classes; their private steps are
    reached through L{ProcessInternals}.
    """

    pid: Any
    # The child's process group (its pid, from the fork on; kept after reaping).
    pgid: int | None = None

    def forkChild(self, *args: Any, **kwargs: Any) -> None:
        super().forkChild(*args, **kwargs)
        self.pgid = self.pid

    def setUpChild(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().setUpChild(*args, **kwargs)
        except BaseException as e:
            _exitChild(*startFailure("the session", e))

    def execChild(
        self,
        path: str | None,
        uid: Any,
        gid: Any,
        executable: str,
        args: list[str],
        environment: dict[str, str],
    ) -> NoReturn:
        # The daemon runs as its one user: uid and gid are never given.
        # As sshd: a missing home directory is reported, and the program runs in /.
        if path:
            try:
                os.chdir(path)
            except OSError as e:
                _say(f"diego-sshd: could not chdir to home directory {path}: {e.strerror}\n")
                try:
                    os.chdir("/")
                except OSError:
                    pass
        try:
            os.execvpe(executable, args, environment)  # noqa: S606
        except BaseException as e:
            _exitChild(*startFailure(executable, e))

    def signalGroup(self, number: int) -> bool:
        """
        Send signal C{number} to the child's whole process group; C{True} if
        some process received it.
        """
        if self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, number)
            return True
        except ProcessLookupError:
            pass
        except OSError:
            return False
        # No such group: the child has not called setsid() yet (or everything
        # is gone). Its pid is still ours while Twisted has not reaped it.
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, number)
            return True
        except OSError:
            return False

    def hangUp(self) -> bool:
        """
        SIGHUP to the whole group, as a terminal hang-up sends it.
        """
        return self.signalGroup(signal.SIGHUP)

    def killGroup(self) -> bool:
        """
        SIGKILL to whatever is left of the group.
        """
        return self.signalGroup(signal.SIGKILL)

    def closeDescriptors(self) -> None:
        """
        Close every descriptor we hold to the child now, whatever is pending.
        """
        raise NotImplementedError

    def terminalFD(self) -> int | None:
        """
        The pty's master while it is open (to resize it), else L{None}.
        """
        return None


def _exitChild(line: str, status: int) -> NoReturn:
    _say(line)
    os._exit(status)


def _closeNow(descriptor: Any) -> None:
    descriptor.connectionLost(Failure(CONNECTION_DONE))


class PipeProcess(SessionLeader, process.Process):
    """
    A child on pipes that leads its own session.
    """

    processReaderFactory = _WideReader

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for pipe in self.pipes.values():
            widenPipe(pipe.fileno())

    def trySpawn(self, *args: Any, **kwargs: Any) -> bool:
        # posix_spawn cannot call setsid() in the child as Twisted invokes it;
        # fork does, in setUpChild.
        return False

    def setUpChild(self, *args: Any, **kwargs: Any) -> None:
        os.setsid()
        super().setUpChild(*args, **kwargs)

    def closeOutput(self, childFD: int) -> None:
        """
        Stop reading the child's C{childFD} and close our end now: its next
        write there fails with EPIPE (or SIGPIPE kills it).
        """
        pipe = self.pipes.get(childFD)
        if pipe is not None and not pipe.disconnecting:
            _closeNow(pipe)

    def closeDescriptors(self) -> None:
        for childFD, pipe in sorted(self.pipes.items()):
            # A reader already told to lose its connection closes itself on
            # the next turn of the reactor; closing it here too would close
            # its descriptor twice.
            if isinstance(pipe, process.ProcessReader) and pipe.disconnecting:
                continue
            if childFD in self.pipes:
                _closeNow(pipe)


class PTYSessionProcess(SessionLeader, process.PTYProcess):
    """
    A child on a pty (Twisted already makes it a session leader), read widely.
    """

    def forkChild(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().forkChild(*args, **kwargs)
        except BaseException:
            # Twisted closes a pty it opened itself, not one it was given.
            for fd in (kwargs["masterfd"], kwargs["slavefd"]):
                try:
                    os.close(fd)
                except OSError:
                    pass
            raise

    def doRead(self) -> Any:
        proto: Any = self.proto
        return _readInto(self.fd, lambda data: proto.childDataReceived(1, data))

    def terminalFD(self) -> int | None:
        # Once closed, the number may already belong to another descriptor.
        return None if self.disconnected else int(self.fd)

    def closeDescriptors(self) -> None:
        # Closing the master hangs up the terminal: the kernel sends SIGHUP to
        # the session's foreground process group.
        if not self.disconnected:
            _closeNow(self)


def spawn(
    reactor: Any,
    protocol: Any,
    executable: str,
    argv: list[str],
    env: dict[str, str],
    cwd: str | None,
    usePTY: bool,
    preparePTY: Callable[[int], None] | None = None,
) -> Any:
    """
    Start C{executable} with C{argv}, C{env} and C{cwd}.

    With a pty, C{preparePTY} gets the pty's fd before the child starts, so the
    child's first C{stty size} already sees the client's terminal.
    """
    if usePTY:
        master, slave = os.openpty()
        try:
            if preparePTY is not None:
                preparePTY(slave)
            name = os.ttyname(slave)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        return PTYSessionProcess(
            reactor, executable, argv, env, cwd, protocol, usePTY=(master, slave, name)
        )
    return PipeProcess(reactor, executable, argv, env, cwd, protocol)
