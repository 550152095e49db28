# -*- test-case-name: tests.test_sftp_wire -*-
"""
SFTP file attributes (ATTRS): decoding what a client sends for open, mkdir
and the setstat family, encoding what stat returns, and the C{ls -l} style
long name that C{sftp}'s C{ls -l} prints verbatim.
"""

from __future__ import annotations

import os
import stat as statmod
import time
from dataclasses import dataclass

from diegossh.sshd.sftp._constants import (
    ATTR_ACMODTIME,
    ATTR_EXTENDED,
    ATTR_PERMISSIONS,
    ATTR_SIZE,
    ATTR_UIDGID,
)
from diegossh.sshd.sftp._wire import Reader, u32, u64


@dataclass(frozen=True)
class Attrs:
    """The subset of attributes a version 3 client may send or receive."""

    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    permissions: int | None = None
    atime: int | None = None
    mtime: int | None = None

    def encode(self) -> bytes:
        flags = 0
        body = b""
        if self.size is not None:
            flags |= ATTR_SIZE
            body += u64(self.size)
        if self.uid is not None and self.gid is not None:
            flags |= ATTR_UIDGID
            body += u32(self.uid) + u32(self.gid)
        if self.permissions is not None:
            flags |= ATTR_PERMISSIONS
            body += u32(self.permissions)
        if self.atime is not None and self.mtime is not None:
            flags |= ATTR_ACMODTIME
            body += u32(self.atime) + u32(self.mtime)
        return u32(flags) + body


EMPTY = Attrs()


def decodeAttrs(reader: Reader) -> Attrs:
    """Read an ATTRS block; vendor extensions are parsed and dropped."""
    flags = reader.u32()
    size = reader.u64() if flags & ATTR_SIZE else None
    uid = gid = None
    if flags & ATTR_UIDGID:
        uid, gid = reader.u32(), reader.u32()
    permissions = reader.u32() if flags & ATTR_PERMISSIONS else None
    atime = mtime = None
    if flags & ATTR_ACMODTIME:
        atime, mtime = reader.u32(), reader.u32()
    if flags & ATTR_EXTENDED:
        for _ in range(reader.u32()):
            reader.view()
            reader.view()
    return Attrs(size, uid, gid, permissions, atime, mtime)


def attrsFromStat(st: os.stat_result) -> Attrs:
    return Attrs(
        size=st.st_size,
        uid=st.st_uid,
        gid=st.st_gid,
        permissions=st.st_mode,
        atime=int(st.st_atime),
        mtime=int(st.st_mtime),
    )


def longName(name: bytes, st: os.stat_result, user: str, group: str, now: float) -> bytes:
    """
    Format an entry the way OpenSSH's sftp-server does (C{ls -l}): older
    clients show this string as is, newer ones rebuild it from the attrs.
    """
    mtime = st.st_mtime
    recent = now - 182.5 * 86400 < mtime <= now
    try:
        when = time.strftime("%b %e %H:%M" if recent else "%b %e  %Y", time.localtime(mtime))
    except (OverflowError, OSError, ValueError):
        when = ""
    head = (
        f"{statmod.filemode(st.st_mode)}  {st.st_nlink:>3} {user:<8} {group:<8} "
        f"{st.st_size:>8} {when} "
    )
    return head.encode("utf-8", "replace") + name
