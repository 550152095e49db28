# -*- test-case-name: tests.test_sftp_server -*-
"""
Turn each request packet into a L{Job}: its fields are parsed here, on the
reactor, so a malformed packet is answered at once; the blocking part is a
closure for a worker thread, tagged with the lanes it must be ordered on.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial

from diegossh.sshd.sftp._attrs import decodeAttrs
from diegossh.sshd.sftp._constants import (
    FXP_CLOSE,
    FXP_FSETSTAT,
    FXP_FSTAT,
    FXP_LSTAT,
    FXP_MKDIR,
    FXP_OPEN,
    FXP_OPENDIR,
    FXP_READ,
    FXP_READDIR,
    FXP_READLINK,
    FXP_REALPATH,
    FXP_REMOVE,
    FXP_RENAME,
    FXP_RMDIR,
    FXP_SETSTAT,
    FXP_STAT,
    FXP_SYMLINK,
    FXP_WRITE,
    MAX_READ,
)
from diegossh.sshd.sftp._filesystem import UserFileSystem
from diegossh.sshd.sftp._wire import Malformed, Reader, Reply

PATHS = "paths"
"""The lane of every request that names a path rather than a handle."""


@dataclass(frozen=True)
class Job:
    lanes: tuple[Hashable, ...]
    work: Callable[[], Reply]
    cost: int = 0
    """Bytes this job holds while in flight, for backpressure."""


Parser = Callable[[UserFileSystem, Reader], Job]


def handleLane(handle: bytes) -> Hashable:
    """The lane of every request on one handle."""
    return ("handle", handle)


def _onPath(method: Callable[[UserFileSystem, bytes], Reply]) -> Parser:
    def parse(fs: UserFileSystem, r: Reader) -> Job:
        return Job((PATHS,), partial(method, fs, r.path()))

    return parse


def _onTwoPaths(method: Callable[[UserFileSystem, bytes, bytes], Reply]) -> Parser:
    def parse(fs: UserFileSystem, r: Reader) -> Job:
        return Job((PATHS,), partial(method, fs, r.path(), r.path()))

    return parse


def _onPathAttrs(method: Callable[..., Reply]) -> Parser:
    def parse(fs: UserFileSystem, r: Reader) -> Job:
        return Job((PATHS,), partial(method, fs, r.path(), decodeAttrs(r)))

    return parse


def _onHandle(method: Callable[[UserFileSystem, bytes], Reply]) -> Parser:
    def parse(fs: UserFileSystem, r: Reader) -> Job:
        handle = r.string()
        return Job((handleLane(handle),), partial(method, fs, handle))

    return parse


def _open(fs: UserFileSystem, r: Reader) -> Job:
    return Job((PATHS,), partial(fs.open, r.path(), r.u32(), decodeAttrs(r)))


def _read(fs: UserFileSystem, r: Reader) -> Job:
    handle, offset, length = r.string(), r.u64(), r.u32()
    return Job(
        (handleLane(handle),), partial(fs.read, handle, offset, length), min(length, MAX_READ)
    )


def _write(fs: UserFileSystem, r: Reader) -> Job:
    handle, offset, data = r.string(), r.u64(), r.view()
    return Job((handleLane(handle),), partial(fs.write, handle, offset, data), len(data))


def _fsetstat(fs: UserFileSystem, r: Reader) -> Job:
    handle = r.string()
    return Job((handleLane(handle),), partial(fs.fsetstat, handle, decodeAttrs(r)))


def _copyData(fs: UserFileSystem, r: Reader) -> Job:
    source, readOffset, length = r.string(), r.u64(), r.u64()
    target, writeOffset = r.string(), r.u64()
    work = partial(fs.copyData, source, readOffset, length, target, writeOffset)
    return Job((handleLane(source), handleLane(target)), work)


def _ids(blob: bytes) -> list[int]:
    if len(blob) % 4:
        raise Malformed("id list is not a whole number of uint32")
    return [value for (value,) in struct.iter_unpack(">I", blob)]


def _usersGroups(fs: UserFileSystem, r: Reader) -> Job:
    uids, gids = _ids(r.string()), _ids(r.string())
    return Job((), partial(fs.usersGroupsById, uids, gids))


def _limits(fs: UserFileSystem, r: Reader) -> Job:
    return Job((), fs.limits)


def _homeDirectory(fs: UserFileSystem, r: Reader) -> Job:
    return Job((), partial(fs.homeDirectory, r.path()))


U = UserFileSystem

REQUESTS: dict[int, Parser] = {
    FXP_OPEN: _open,
    FXP_CLOSE: _onHandle(U.close),
    FXP_READ: _read,
    FXP_WRITE: _write,
    FXP_LSTAT: _onPath(U.lstat),
    FXP_FSTAT: _onHandle(U.fstat),
    FXP_SETSTAT: _onPathAttrs(U.setstat),
    FXP_FSETSTAT: _fsetstat,
    FXP_OPENDIR: _onPath(U.opendir),
    FXP_READDIR: _onHandle(U.readdir),
    FXP_REMOVE: _onPath(U.remove),
    FXP_MKDIR: _onPathAttrs(U.mkdir),
    FXP_RMDIR: _onPath(U.rmdir),
    FXP_REALPATH: _onPath(U.realpath),
    FXP_STAT: _onPath(U.stat),
    FXP_RENAME: _onTwoPaths(U.rename),
    FXP_READLINK: _onPath(U.readlink),
    FXP_SYMLINK: _onTwoPaths(U.symlink),
}

EXTENDED: dict[bytes, Parser] = {
    b"posix-rename@openssh.com": _onTwoPaths(U.posixRename),
    b"statvfs@openssh.com": _onPath(U.statvfs),
    b"fstatvfs@openssh.com": _onHandle(U.fstatvfs),
    b"hardlink@openssh.com": _onTwoPaths(U.hardlink),
    b"fsync@openssh.com": _onHandle(U.fsync),
    b"lsetstat@openssh.com": _onPathAttrs(U.lsetstat),
    b"limits@openssh.com": _limits,
    b"expand-path@openssh.com": _onPath(U.expandPath),
    b"copy-data": _copyData,
    b"home-directory": _homeDirectory,
    b"users-groups-by-id@openssh.com": _usersGroups,
}
