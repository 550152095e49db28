# -*- test-case-name: tests.test_sftp_server -*-
"""
The blocking half of the server: each method performs one SFTP request on
the local filesystem and returns its reply. These run in worker threads,
never on the reactor; they raise OSError or SFTPError for the caller to map.

Paths are bytes end to end (a file name need not be UTF-8). Relative paths
resolve against the user's home, as OpenSSH's sftp-server (started in the
home directory) resolves them; the process's own cwd is never touched.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import resource
import stat as statmod
import time
from collections.abc import Callable
from typing import Any

from diegossh.sshd.sftp._attrs import EMPTY, Attrs, attrsFromStat, longName
from diegossh.sshd.sftp._constants import (
    COPY_CHUNK,
    FX_BAD_MESSAGE,
    FX_EOF,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OK,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_ATTRS,
    FXP_DATA,
    FXP_EXTENDED_REPLY,
    FXP_HANDLE,
    FXP_NAME,
    MAX_HANDLES,
    MAX_PACKET,
    MAX_READ,
    MAX_WRITE,
    READDIR_BATCH,
    STATVFS_ST_NOSUID,
    STATVFS_ST_RDONLY,
)
from diegossh.sshd.sftp._errors import SFTPError, osError
from diegossh.sshd.sftp._handles import DirHandle, FileHandle, HandleTable
from diegossh.sshd.sftp._wire import Reply, status, string, u32, u64


def _ok() -> Reply:
    return status(FX_OK, "Success")


def _names(entries: list[tuple[bytes, bytes, Attrs]]) -> Reply:
    body = [u32(len(entries))]
    for name, long, attrs in entries:
        body += [string(name), string(long), attrs.encode()]
    return FXP_NAME, body


def _openFlags(pflags: int) -> int:
    if pflags & FXF_READ and pflags & FXF_WRITE:
        flags = os.O_RDWR
    elif pflags & FXF_WRITE:
        flags = os.O_WRONLY
    else:
        flags = os.O_RDONLY
    for bit, flag in (
        (FXF_APPEND, os.O_APPEND),
        (FXF_CREAT, os.O_CREAT),
        (FXF_TRUNC, os.O_TRUNC),
        (FXF_EXCL, os.O_EXCL),
    ):
        if pflags & bit:
            flags |= flag
    return flags


def _statvfs(st: os.statvfs_result) -> Reply:
    flag = (STATVFS_ST_RDONLY if st.f_flag & os.ST_RDONLY else 0) | (
        STATVFS_ST_NOSUID if st.f_flag & os.ST_NOSUID else 0
    )
    fields = (
        st.f_bsize,
        st.f_frsize,
        st.f_blocks,
        st.f_bfree,
        st.f_bavail,
        st.f_files,
        st.f_ffree,
        st.f_favail,
        st.f_fsid,
        flag,
        st.f_namemax,
    )
    return FXP_EXTENDED_REPLY, [u64(value) for value in fields]


def _writeAll(fd: int, data: memoryview, offset: int | None) -> None:
    """Write every byte; a short write is retried, not reported as success."""
    while data:
        written = os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
        if written <= 0:
            raise osError(errno.EIO)
        data = data[written:]
        if offset is not None:
            offset += written


class UserFileSystem:
    """One session's view of the filesystem: its home and its open handles."""

    def __init__(self, home: bytes, handles: HandleTable | None = None) -> None:
        self.home = home
        self.handles = handles if handles is not None else HandleTable()
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}

    # -- paths

    def absolute(self, path: bytes) -> bytes:
        if path.startswith(b"/"):
            return path
        if not path:
            return self.home
        return os.path.join(self.home, path)

    def _canonical(self, path: bytes) -> bytes:
        """Like OpenSSH's sftp_realpath: symlinks resolved; only the last part may be missing."""
        resolved = os.path.realpath(path)
        if not os.path.lexists(resolved) and not os.path.isdir(os.path.dirname(resolved)):
            raise osError(errno.ENOENT)
        return resolved

    def _userName(self, uid: int) -> str:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError):
                self._users[uid] = str(uid)
        return self._users[uid]

    def _groupName(self, gid: int) -> str:
        if gid not in self._groups:
            try:
                self._groups[gid] = grp.getgrgid(gid).gr_name
            except (KeyError, OverflowError):
                self._groups[gid] = str(gid)
        return self._groups[gid]

    # -- files

    def open(self, path: bytes, pflags: int, attrs: Attrs) -> Reply:
        mode = attrs.permissions & 0o7777 if attrs.permissions is not None else 0o666
        # O_NONBLOCK so that opening a FIFO cannot park a worker forever.
        fd = os.open(self.absolute(path), _openFlags(pflags) | os.O_NONBLOCK | os.O_NOCTTY, mode)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except OSError:
            os.close(fd)
            raise
        key = self.handles.add(FileHandle(path, fd, bool(pflags & FXF_APPEND)))
        return FXP_HANDLE, [string(key)]

    def close(self, key: bytes) -> Reply:
        handle = self.handles.pop(key)
        if handle is None:
            raise SFTPError(FX_NO_SUCH_FILE, "Invalid handle")
        handle.close()
        return _ok()

    def read(self, key: bytes, offset: int, length: int) -> Reply:
        handle = self.handles.file(key)
        length = min(length, MAX_READ)
        if length == 0:
            return FXP_DATA, [u32(0)]
        data = os.pread(handle.fd, length, offset)
        if not data:
            return status(FX_EOF, "End of file")
        return FXP_DATA, [u32(len(data)), data]

    def write(self, key: bytes, offset: int, data: memoryview) -> Reply:
        handle = self.handles.file(key)
        _writeAll(handle.fd, data, None if handle.append else offset)
        return _ok()

    def fstat(self, key: bytes) -> Reply:
        return FXP_ATTRS, [attrsFromStat(os.fstat(self.handles.file(key).fd)).encode()]

    def fsetstat(self, key: bytes, attrs: Attrs) -> Reply:
        fd = self.handles.file(key).fd
        return self._setAttrs(attrs, os.ftruncate, fd, follow=True)

    def fsync(self, key: bytes) -> Reply:
        os.fsync(self.handles.file(key).fd)
        return _ok()

    def fstatvfs(self, key: bytes) -> Reply:
        return _statvfs(os.fstatvfs(self.handles.file(key).fd))

    def copyData(
        self, readKey: bytes, readOffset: int, length: int, writeKey: bytes, writeOffset: int
    ) -> Reply:
        source = self.handles.file(readKey)
        target = self.handles.file(writeKey)
        a, b = os.fstat(source.fd), os.fstat(target.fd)
        if readKey == writeKey or (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            raise SFTPError(FX_FAILURE, "Refusing to copy a file onto itself")
        remaining = length if length else None
        while remaining is None or remaining > 0:
            chunk = os.pread(
                source.fd,
                COPY_CHUNK if remaining is None else min(COPY_CHUNK, remaining),
                readOffset,
            )
            if not chunk:
                if remaining is None:
                    break
                return status(FX_EOF, "End of file")
            _writeAll(target.fd, memoryview(chunk), None if target.append else writeOffset)
            readOffset += len(chunk)
            writeOffset += len(chunk)
            if remaining is not None:
                remaining -= len(chunk)
        return _ok()

    # -- directories

    def opendir(self, path: bytes) -> Reply:
        full = self.absolute(path)
        key = self.handles.add(DirHandle(full, os.scandir(full)))
        return FXP_HANDLE, [string(key)]

    def readdir(self, key: bytes) -> Reply:
        handle = self.handles.directory(key)
        now = time.time()
        found: list[tuple[bytes, bytes, Attrs]] = []
        while len(found) < READDIR_BATCH:
            if handle.dots:
                name = handle.dots.pop(0)
                path = os.path.join(handle.path, name)
            else:
                entry = next(handle.entries, None)
                if entry is None:
                    break
                name, path = entry.name, entry.path
            try:
                st = os.lstat(path)
            except OSError:
                continue
            long = longName(name, st, self._userName(st.st_uid), self._groupName(st.st_gid), now)
            found.append((name, long, attrsFromStat(st)))
        if not found:
            return status(FX_EOF, "End of file")
        return _names(found)

    def mkdir(self, path: bytes, attrs: Attrs) -> Reply:
        mode = attrs.permissions & 0o7777 if attrs.permissions is not None else 0o777
        os.mkdir(self.absolute(path), mode)
        return _ok()

    def rmdir(self, path: bytes) -> Reply:
        os.rmdir(self.absolute(path))
        return _ok()

    # -- paths

    def stat(self, path: bytes) -> Reply:
        return FXP_ATTRS, [attrsFromStat(os.stat(self.absolute(path))).encode()]

    def lstat(self, path: bytes) -> Reply:
        return FXP_ATTRS, [attrsFromStat(os.lstat(self.absolute(path))).encode()]

    def setstat(self, path: bytes, attrs: Attrs) -> Reply:
        return self._setAttrs(attrs, os.truncate, self.absolute(path), follow=True)

    def lsetstat(self, path: bytes, attrs: Attrs) -> Reply:
        if attrs.size is not None:
            raise SFTPError(FX_BAD_MESSAGE, "Cannot set the size of a link")
        return self._setAttrs(attrs, os.truncate, self.absolute(path), follow=False)

    def _setAttrs(
        self, attrs: Attrs, truncate: Callable[[Any, int], None], target: Any, follow: bool
    ) -> Reply:
        """Apply each attribute in OpenSSH's order; like it, report the last failure."""
        failure: OSError | None = None
        steps: list[Callable[[], None]] = []
        if attrs.size is not None:
            size = attrs.size
            steps.append(lambda: truncate(target, size))
        if attrs.permissions is not None:
            perm = attrs.permissions & 0o7777
            steps.append(lambda: self._chmod(target, perm, follow))
        if attrs.atime is not None and attrs.mtime is not None:
            times = (attrs.atime, attrs.mtime)
            steps.append(lambda: os.utime(target, times, follow_symlinks=follow))
        if attrs.uid is not None and attrs.gid is not None:
            ids = (attrs.uid, attrs.gid)
            steps.append(lambda: os.chown(target, *ids, follow_symlinks=follow))
        for step in steps:
            try:
                step()
            except OSError as error:
                failure = error
        if failure is not None:
            raise failure
        return _ok()

    @staticmethod
    def _chmod(target: int | bytes, mode: int, follow: bool) -> None:
        # Linux cannot chmod a symlink itself (fchmodat says EOPNOTSUPP, as
        # OpenSSH reports); for anything else lchmod is plain chmod.
        if not follow and isinstance(target, bytes):
            if statmod.S_ISLNK(os.lstat(target).st_mode):
                raise osError(errno.EOPNOTSUPP)
        os.chmod(target, mode)

    def remove(self, path: bytes) -> Reply:
        os.unlink(self.absolute(path))
        return _ok()

    def rename(self, old: bytes, new: bytes) -> Reply:
        """SSH_FXP_RENAME: like OpenSSH, never replace an existing target."""
        old, new = self.absolute(old), self.absolute(new)
        if statmod.S_ISREG(os.lstat(old).st_mode):
            try:
                os.link(old, new, follow_symlinks=False)
            except OSError as error:
                if error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EPERM):
                    raise
            else:
                try:
                    os.unlink(old)
                except OSError:
                    os.unlink(new)
                    raise
                return _ok()
        if os.path.lexists(new):
            raise osError(errno.EEXIST)
        os.rename(old, new)
        return _ok()

    def posixRename(self, old: bytes, new: bytes) -> Reply:
        os.rename(self.absolute(old), self.absolute(new))
        return _ok()

    def hardlink(self, old: bytes, new: bytes) -> Reply:
        os.link(self.absolute(old), self.absolute(new), follow_symlinks=False)
        return _ok()

    def symlink(self, target: bytes, link: bytes) -> Reply:
        # OpenSSH's argument order (PROTOCOL 4.1): target first. The target is
        # stored as given; only the link's own location resolves against home.
        os.symlink(target, self.absolute(link))
        return _ok()

    def readlink(self, path: bytes) -> Reply:
        target = os.readlink(self.absolute(path))
        return _names([(target, target, EMPTY)])

    def realpath(self, path: bytes) -> Reply:
        resolved = self._canonical(self.absolute(path or b"."))
        return _names([(resolved, resolved, EMPTY)])

    def expandPath(self, path: bytes) -> Reply:
        if path == b"~" or path.startswith(b"~/"):
            path = self.home + path[1:]
        elif path.startswith(b"~"):
            user, _, rest = path[1:].partition(b"/")
            try:
                home = os.fsencode(pwd.getpwnam(os.fsdecode(user)).pw_dir)
            except (KeyError, ValueError) as error:
                raise SFTPError(FX_NO_SUCH_FILE, "no such user") from error
            path = os.path.join(home, rest) if rest else home
        return self.realpath(path)

    def homeDirectory(self, user: bytes) -> Reply:
        if not user:
            home = self.home
        else:
            try:
                home = os.fsencode(pwd.getpwnam(os.fsdecode(user)).pw_dir)
            except (KeyError, ValueError) as error:
                raise SFTPError(FX_FAILURE, "no such user") from error
        return _names([(home, home, EMPTY)])

    def statvfs(self, path: bytes) -> Reply:
        return _statvfs(os.statvfs(self.absolute(path)))

    def limits(self) -> Reply:
        handles = MAX_HANDLES
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft > 5:
            handles = min(handles, soft - 5)
        return FXP_EXTENDED_REPLY, [u64(MAX_PACKET), u64(MAX_READ), u64(MAX_WRITE), u64(handles)]

    def usersGroupsById(self, uids: list[int], gids: list[int]) -> Reply:
        def names(ids: list[int], lookup: Callable[[int], str]) -> bytes:
            out = []
            for ident in ids:
                try:
                    name = lookup(ident)
                except (KeyError, OverflowError):
                    name = ""
                out.append(string(name.encode("utf-8", "replace")))
            return b"".join(out)

        users = names(uids, lambda uid: pwd.getpwuid(uid).pw_name)
        groups = names(gids, lambda gid: grp.getgrgid(gid).gr_name)
        return FXP_EXTENDED_REPLY, [string(users), string(groups)]

    def discard(self, key: bytes) -> None:
        """Close one handle left open at the end of the session."""
        handle = self.handles.pop(key)
        if handle is not None:
            handle.close()
