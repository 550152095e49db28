# -*- test-case-name: tests.test_scp_sink -*-
"""
C{scp -t}: receive files and directories from the client, as OpenSSH's C{sink()}.

File data goes to disk synchronously, one received chunk at a time, so memory
stays bounded whatever size the client announces. Where OpenSSH recurses into
C{sink()} for each C{D} record, this keeps a stack of the entered directories.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from diegossh.sshd.scp._input import EndOfInput
from diegossh.sshd.scp._options import SCPOptions
from diegossh.sshd.scp._paths import RemotePaths
from diegossh.sshd.scp._program import Fatal, PeerFatal, SCPProgram
from diegossh.sshd.scp._records import (
    MAX_RECORD,
    EndDirectory,
    Entry,
    PeerMessage,
    ProtocolError,
    Times,
    parseRecord,
)

CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class _Target:
    """Where the next record lands: a directory to put it in, or its own name."""

    display: str
    real: str
    isDirectory: bool

    def pathFor(self, name: str) -> tuple[str, str]:
        if not self.isDirectory:
            return self.display, self.real
        separator = "" if self.display == "/" else "/"
        return self.display + separator + name, os.path.join(self.real, name)


@dataclass(frozen=True)
class _Entered:
    """A directory between its C{D} and C{E} records, and what to do on C{E}."""

    real: str
    times: Times | None
    mode: int
    setMode: bool
    outer: _Target


class SinkProtocol(SCPProgram):
    """Serve C{scp -t TARGET}."""

    def __init__(self, options: SCPOptions, paths: RemotePaths, umask: int) -> None:
        super().__init__()
        self.options = options
        self.paths = paths
        # Without -p, OpenSSH strips the umask and the set-id bits from modes.
        self.mask = 0 if options.preserve else umask | 0o7000

    async def run(self) -> None:
        if len(self.options.paths) != 1:
            raise Fatal("ambiguous target")
        display = self.paths.expand(self.options.paths[0])
        real = self.paths.resolve(display)
        isDirectory = os.path.isdir(real)
        if self.options.targetIsDirectory and not isDirectory:
            reason = os.strerror(errno.ENOTDIR if os.path.lexists(real) else errno.ENOENT)
            raise Fatal(f"{display}: {reason}")
        self.sendOK()
        target = _Target(display, real, isDirectory)
        entered: list[_Entered] = []
        times: Times | None = None
        try:
            while True:
                try:
                    line = await self.input.readLine(MAX_RECORD)
                except EndOfInput as e:
                    if e.partial or entered:
                        raise Fatal("protocol error: lost connection") from None
                    return
                record = parseRecord(line)
                if isinstance(record, PeerMessage):
                    self.errors += 1
                    if record.fatal:
                        raise PeerFatal()
                elif isinstance(record, EndDirectory):
                    self.sendOK()
                    if not entered:
                        return
                    target = self._leave(entered.pop())
                elif isinstance(record, Times):
                    times = record
                    self.sendOK()
                elif record.isDirectory:
                    inner = self._enter(target, record, times)
                    times = None
                    if inner is not None:
                        entered.append(inner)
                        target = _Target(*target.pathFor(os.fsdecode(record.name)), True)
                        self.sendOK()
                else:
                    await self._receiveFile(target, record, times)
                    times = None
        finally:
            while entered:
                self._leave(entered.pop())

    def _enter(self, target: _Target, entry: Entry, times: Times | None) -> _Entered | None:
        """Make or reuse the directory a C{D} record names; L{None} if refused."""
        if not self.options.recursive:
            raise ProtocolError("protocol error: received directory without -r")
        display, real = target.pathFor(os.fsdecode(entry.name))
        mode = entry.mode & ~self.mask
        try:
            existing = os.stat(real)
        except OSError:
            existing = None
        try:
            if existing is not None:
                if not stat.S_ISDIR(existing.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
                if self.options.preserve:
                    os.chmod(real, mode)
            else:
                # Writable for us until E, even when copying a read-only tree.
                os.mkdir(real, mode | stat.S_IRWXU)
        except OSError as e:
            self.warn(f"{display}: {e.strerror}")
            return None
        setMode = self.options.preserve or existing is None
        return _Entered(real, times, mode, setMode, target)

    def _leave(self, entered: _Entered) -> _Target:
        """Give a finished directory its times and mode; best effort, as OpenSSH."""
        try:
            if entered.times is not None:
                os.utime(entered.real, ns=entered.times.asNanoseconds())
        except (OSError, OverflowError, ValueError):
            pass
        try:
            if entered.setMode:
                os.chmod(entered.real, entered.mode)
        except OSError:
            pass
        return entered.outer

    async def _receiveFile(self, target: _Target, entry: Entry, times: Times | None) -> None:
        """Receive one C{C} record's data into its file and acknowledge it."""
        display, real = target.pathFor(os.fsdecode(entry.name))
        mode = entry.mode & ~self.mask
        try:
            existing: os.stat_result | None = os.stat(real)
        except OSError:
            existing = None
        # O_NONBLOCK: a FIFO without a reader must fail, not hang the session.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(real, flags, mode | stat.S_IWUSR)
            os.set_blocking(fd, True)
        except OSError as e:
            self.warn(f"{display}: {e.strerror}")
            return
        self.sendOK()
        problem: str | None = None
        writeFailed = False
        try:
            remaining = entry.size
            while remaining:
                try:
                    chunk = await self.input.readSome(min(remaining, CHUNK_SIZE))
                except EndOfInput:
                    raise Fatal("dropped connection") from None
                remaining -= len(chunk)
                if not writeFailed:
                    try:
                        _writeAll(fd, chunk)
                    except OSError as e:
                        problem, writeFailed = f"{display}: {e.strerror}", True
            if not writeFailed and (existing is None or stat.S_ISREG(existing.st_mode)):
                try:
                    os.ftruncate(fd, entry.size)
                except OSError as e:
                    problem = problem or f"{display}: truncate: {e.strerror}"
            if self.options.preserve or (existing is None and not mode & stat.S_IWUSR):
                try:
                    os.fchmod(fd, mode)
                except OSError as e:
                    problem = problem or f"{display}: set mode: {e.strerror}"
        finally:
            try:
                os.close(fd)
            except OSError as e:
                problem = problem or f"{display}: close: {e.strerror}"
        await self.response()
        if times is not None and not writeFailed:
            try:
                os.utime(real, ns=times.asNanoseconds())
            except (OverflowError, ValueError):
                pass
            except OSError as e:
                problem = problem or f"{display}: set times: {e.strerror}"
        if problem is None:
            self.sendOK()
        else:
            self.warn(problem)


def _writeAll(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
