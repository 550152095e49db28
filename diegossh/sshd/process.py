# -*- test-case-name: tests.test_sshd_session -*-
"""
Starting a session's child process the way an SSH daemon must.

Twisted's stock process support reads pipes and ptys 8 KiB at a time (each
read becomes its own SSH packet) and, with pipes, leaves the child in the
daemon's process group, so a C{signal} request or a vanished client could not
reach the child's own children. Here the child leads a new session (so
C{killpg} reaches everything it started), its pipes hold 1 MiB, and output
is read 256 KiB at a time.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import process
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST

READ_SIZE = 256 * 1024
# Pipes to and from the child: 1 MiB (Linux's default limit for a user) instead
# of 64 KiB, so the child and the daemon each move more per wake-up of the other.
PIPE_SIZE = 1024 * 1024


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


class PipeProcess(process.Process):
    """
    A child on pipes that leads its own session.
    """

    processReaderFactory = _WideReader

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for pipe in self.pipes.values():
            widenPipe(pipe.fileno())

    def _trySpawnInsteadOfFork(self, *args: Any, **kwargs: Any) -> bool:
        # posix_spawn cannot call setsid() in the child as Twisted invokes it;
        # fork does, in _setupChild.
        return False

    def _setupChild(self, *args: Any, **kwargs: Any) -> None:
        os.setsid()
        super()._setupChild(*args, **kwargs)


class PTYSessionProcess(process.PTYProcess):
    """
    A child on a pty (Twisted already makes it a session leader), read widely.
    """

    def doRead(self) -> Any:
        proto: Any = self.proto
        return _readInto(self.fd, lambda data: proto.childDataReceived(1, data))


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
