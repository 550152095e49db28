# -*- test-case-name: tests.test_scp_source -*-
"""
C{scp -f}: send files and directories to the client, as OpenSSH's C{source()}
and C{rsource()}.

Sources are expanded (C{~}, globs) the way the user's shell would have done
before exec'ing scp. Directories are walked with an explicit stack of open
directory iterators, so neither deep trees nor large directories cost more
than one entry per level.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from diegossh.sshd.scp._options import SCPOptions
from diegossh.sshd.scp._paths import RemotePaths
from diegossh.sshd.scp._program import SCPProgram
from diegossh.sshd.scp._records import (
    END_DIRECTORY,
    formatEntry,
    formatTimes,
)
from diegossh.sshd.scp._sender import Cooperate, FileSender


@dataclass
class _Walking:
    """A directory whose D record the client accepted, and its unsent entries."""

    display: str
    real: str
    identity: tuple[int, int]
    entries: Iterator[os.DirEntry[str]]

    def close(self) -> None:
        close = getattr(self.entries, "close", None)
        if close is not None:
            close()


class SourceProtocol(SCPProgram):
    """Serve C{scp -f SOURCE...}."""

    def __init__(self, options: SCPOptions, paths: RemotePaths, cooperate: Cooperate) -> None:
        super().__init__()
        self.options = options
        self.paths = paths
        self.cooperate = cooperate
        self._walking: list[_Walking] = []
        self._sender: FileSender | None = None

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        if self._sender is not None:
            self._sender.stopProducing()
        super().connectionLost(reason)

    async def run(self) -> None:
        await self.response()
        try:
            for argument in self.options.paths:
                for display, real in self.paths.sources(argument):
                    await self._sendTree(display, real)
        finally:
            while self._walking:
                self._walking.pop().close()

    async def _sendTree(self, display: str, real: str) -> None:
        """Send one source; for a directory with C{-r}, all that is in it."""
        await self._sendPath(display, real)
        while self._walking:
            current = self._walking[-1]
            try:
                entry = next(current.entries, None)
            except OSError as e:
                self.warn(f"{current.display}: {e.strerror}")
                entry = None
            if entry is None:
                self._walking.pop().close()
                self.session.write(END_DIRECTORY)
                await self.response()
                continue
            await self._sendPath(
                f"{current.display}/{entry.name}", os.path.join(current.real, entry.name)
            )

    async def _sendPath(self, display: str, real: str) -> None:
        """Send a file, or enter a directory (pushing it on C{_walking})."""
        while len(display) > 1 and display.endswith("/"):
            display, real = display[:-1], real.rstrip("/") or "/"
        try:
            # O_NONBLOCK: opening a FIFO must not hang the session.
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            self.warn(f"{display}: {e.strerror}")
            return
        except ValueError:
            # A NUL in the name (the client's bytes): no file has that name.
            self.warn(f"{display}: {os.strerror(errno.ENOENT)}")
            return
        try:
            status = os.fstat(fd)
            if "\n" in display:
                self.warn(f"{display!r}: name contains a newline, skipped")
            elif stat.S_ISDIR(status.st_mode) and self.options.recursive:
                await self._enterDirectory(display, real, status)
            elif not stat.S_ISREG(status.st_mode):
                self.warn(f"{display}: not a regular file")
            else:
                os.set_blocking(fd, True)
                await self._sendFile(display, fd, status)
        finally:
            os.close(fd)

    async def _sendFile(self, display: str, fd: int, status: os.stat_result) -> None:
        name = os.path.basename(display)
        if self.options.preserve:
            self.session.write(formatTimes(status.st_mtime, status.st_atime))
            if not await self.response():
                return
        self.session.write(formatEntry(False, status.st_mode, status.st_size, name))
        if not await self.response():
            return
        self._sender = FileSender(self.cooperate)
        try:
            problem = await self._sender.send(fd, status.st_size, self.session)
        finally:
            self._sender = None
        if problem is None:
            self.sendOK()
        else:
            self.warn(f"{display}: {problem}")
        await self.response()

    async def _enterDirectory(self, display: str, real: str, status: os.stat_result) -> None:
        identity = (status.st_dev, status.st_ino)
        if any(w.identity == identity for w in self._walking):
            self.warn(f"{display}: directory loop, skipped")
            return
        try:
            entries = os.scandir(real)
        except OSError as e:
            self.warn(f"{display}: {e.strerror}")
            return
        # On the stack at once, so that it is closed whatever happens next.
        self._walking.append(_Walking(display, real, identity, entries))
        name = os.path.basename(display) or "/"
        accepted = True
        if self.options.preserve:
            self.session.write(formatTimes(status.st_mtime, status.st_atime))
            accepted = await self.response()
        if accepted:
            self.session.write(formatEntry(True, status.st_mode, 0, name))
            accepted = await self.response()
        if not accepted:
            self._walking.pop().close()
