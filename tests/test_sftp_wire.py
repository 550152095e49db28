"""
The SFTP codec on its own: framing, field parsing, attributes, the version
advertisement and the errno classification.
"""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest

from diegossh.sshd.sftp import _constants as C
from diegossh.sshd.sftp._attrs import Attrs, attrsFromStat, decodeAttrs, longName
from diegossh.sshd.sftp._errors import fromOSError
from diegossh.sshd.sftp._server import versionPacket
from diegossh.sshd.sftp._wire import FrameBuffer, Malformed, PacketTooLarge, Reader, frame
from tests.sftp_support import attrs, s, u32, u64


def test_frames_split_and_joined() -> None:
    frames = FrameBuffer()
    stream = u32(3) + b"abc" + u32(0) + u32(5) + b"hel"
    frames.feed(stream[:2])
    assert frames.next() is None
    frames.feed(stream[2:])
    assert frames.next() == b"abc"
    assert frames.next() == b""
    assert not frames.hasPacket()
    assert frames.next() is None
    frames.feed(b"lo")
    assert frames.hasPacket()
    assert frames.next() == b"hello"
    assert len(frames) == 0


def test_absurd_length_is_refused_before_buffering() -> None:
    frames = FrameBuffer()
    frames.feed(u32(C.MAX_INCOMING_PACKET + 1))
    with pytest.raises(PacketTooLarge):
        frames.next()
    frames = FrameBuffer()
    frames.feed(u32(C.MAX_INCOMING_PACKET) + b"x")
    assert frames.next() is None


def test_reader_bounds_every_field() -> None:
    reader = Reader(u32(7) + u64(9) + s(b"ab") + b"\x01")
    assert (reader.u32(), reader.u64(), reader.string(), reader.u8()) == (7, 9, b"ab", 1)
    assert reader.remaining() == 0
    for short in (b"", b"\x00\x00\x00", u32(10) + b"short"):
        with pytest.raises(Malformed):
            Reader(short).string()
    with pytest.raises(Malformed):
        Reader(u32(0xFFFFFFFF)).string()
    with pytest.raises(Malformed):
        Reader(s(b"a\0b")).path()
    assert Reader(s(b"\xff\xfe")).path() == b"\xff\xfe"


def test_attrs_round_trip_and_extended_skipped() -> None:
    value = Attrs(size=5, uid=1, gid=2, permissions=0o100644, atime=10, mtime=20)
    assert decodeAttrs(Reader(value.encode())) == value
    assert decodeAttrs(Reader(attrs(perm=0o755))) == Attrs(permissions=0o755)
    extended = u32(C.ATTR_EXTENDED | C.ATTR_SIZE) + u64(3) + u32(1) + s(b"k") + s(b"v")
    reader = Reader(extended + b"!")
    assert decodeAttrs(reader) == Attrs(size=3)
    assert reader.u8() == ord("!")
    with pytest.raises(Malformed):
        decodeAttrs(Reader(u32(C.ATTR_EXTENDED) + u32(1000)))


def test_attrs_from_stat(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"12345")
    os.utime(path, (1000, 2000))
    got = attrsFromStat(os.stat(path))
    assert (got.size, got.atime, got.mtime) == (5, 1000, 2000)
    assert stat.S_ISREG(got.permissions or 0)


def test_long_name_looks_like_openssh(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 42)
    os.chmod(path, 0o640)
    os.utime(path, (0, 0))
    line = longName(b"f\xff", os.stat(path), "alice", "staff", time.time())
    assert line.startswith(b"-rw-r-----    1 alice    staff          42 ")
    assert line.endswith(b"  1970 f\xff")
    recent = longName(b"f", os.stat(tmp_path), "a", "b", os.stat(tmp_path).st_mtime + 60)
    assert recent.startswith(b"drwx") and b":" in recent


def test_version_advertises_openssh_extensions_in_order() -> None:
    packet = versionPacket()
    reader = Reader(packet[4:])
    assert reader.u8() == C.FXP_VERSION
    assert reader.u32() == 3
    found = []
    while reader.remaining():
        found.append((reader.string(), reader.string()))
    assert found == [
        (b"posix-rename@openssh.com", b"1"),
        (b"statvfs@openssh.com", b"2"),
        (b"fstatvfs@openssh.com", b"2"),
        (b"hardlink@openssh.com", b"1"),
        (b"fsync@openssh.com", b"1"),
        (b"lsetstat@openssh.com", b"1"),
        (b"limits@openssh.com", b"1"),
        (b"expand-path@openssh.com", b"1"),
        (b"copy-data", b"1"),
        (b"home-directory", b"1"),
        (b"users-groups-by-id@openssh.com", b"1"),
    ]


def test_frame_prefixes_length_type_and_id() -> None:
    assert b"".join(frame(C.FXP_DATA, 7, [u32(1), b"z"])) == (
        u32(10) + bytes([C.FXP_DATA]) + u32(7) + u32(1) + b"z"
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (errno.ENOENT, C.FX_NO_SUCH_FILE),
        (errno.ENOTDIR, C.FX_NO_SUCH_FILE),
        (errno.ELOOP, C.FX_NO_SUCH_FILE),
        (errno.EACCES, C.FX_PERMISSION_DENIED),
        (errno.EPERM, C.FX_PERMISSION_DENIED),
        (errno.EINVAL, C.FX_BAD_MESSAGE),
        (errno.ENOSYS, C.FX_OP_UNSUPPORTED),
        (errno.ENOSPC, C.FX_FAILURE),
        (errno.EEXIST, C.FX_FAILURE),
    ],
)
def test_errno_classes_follow_openssh(code: int, status: int) -> None:
    mapped = fromOSError(OSError(code, os.strerror(code)))
    assert (mapped.status, mapped.message) == (status, os.strerror(code))
