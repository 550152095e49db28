"""
The SFTP server driven packet by packet on a fake session transport, with
file work run synchronously or step by step by a stand-in thread pool.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
from pathlib import Path

import pytest
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface.verify import verifyObject

from diegossh.interfaces import ISessionTransport
from diegossh.sshd.sftp import _constants as C
from diegossh.sshd.sftp import buildSFTP, homeFromEnviron
from diegossh.sshd.sftp._server import versionPacket
from tests.sftp_support import (
    FakeSessionTransport,
    Harness,
    ManualThreadPool,
    SyncReactor,
    SyncThreadPool,
    attrs,
    s,
    u32,
    u64,
)

RW_CREATE = C.FXF_READ | C.FXF_WRITE | C.FXF_CREAT


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(str(tmp_path))
    version, _ = harness.init()
    assert version == 3
    return harness


def test_build_sftp_uses_injected_pool(tmp_path: Path) -> None:
    pool = ManualThreadPool()
    server = buildSFTP({"HOME": str(tmp_path)}, reactor=SyncReactor(), threadpool=pool)  # type: ignore[arg-type]
    assert isinstance(server, Protocol)
    verifyObject(IHalfCloseableProtocol, server)
    verifyObject(IPushProducer, server)
    transport = FakeSessionTransport()
    verifyObject(ISessionTransport, transport)
    server.makeConnection(transport)
    assert transport.producer is server and transport.streaming
    body = bytes([C.FXP_INIT]) + u32(3)
    server.dataReceived(u32(len(body)) + body)
    body = bytes([C.FXP_STAT]) + u32(1) + s(".")
    server.dataReceived(u32(len(body)) + body)
    assert len(pool.queue) == 1
    pool.runAll()
    reply = transport.value()[len(versionPacket()) :]
    assert reply[4] == C.FXP_ATTRS and reply[5:9] == u32(1)


def test_home_from_environ() -> None:
    assert homeFromEnviron({"HOME": "/x/y"}) == b"/x/y"
    assert homeFromEnviron({}) == os.fsencode(pwd.getpwuid(os.getuid()).pw_dir)


def test_request_before_init_exits_1(tmp_path: Path) -> None:
    h = Harness(str(tmp_path))
    h.send(C.FXP_STAT, s("."))
    assert h.transport.exitStatus == 1
    assert h.replies() == []


def test_a_second_init_ends_the_session(h: Harness) -> None:
    """
    Its VERSION answer would carry no request id; OpenSSH's sftp-server also
    ends the session.
    """
    before = h.replies()
    h.sendPacket(bytes([C.FXP_INIT]) + u32(3))
    assert h.transport.exitStatus == 1
    assert h.replies() == before == []


def test_write_read_close_round_trip(h: Harness) -> None:
    handle = h.open("f", RW_CREATE | C.FXF_TRUNC, 0o600)
    payload = os.urandom(100_000)
    assert h.call(C.FXP_WRITE, s(handle), u64(0), s(payload)).status()[0] == C.FX_OK
    assert h.call(C.FXP_WRITE, s(handle), u64(200_000), s(b"end")).status()[0] == C.FX_OK
    assert h.call(C.FXP_READ, s(handle), u64(0), u32(100_000)).data() == payload
    assert h.call(C.FXP_READ, s(handle), u64(200_000), u32(10)).data() == b"end"
    assert h.call(C.FXP_READ, s(handle), u64(200_003), u32(10)).status() == (
        C.FX_EOF,
        "End of file",
    )
    assert h.call(C.FXP_READ, s(handle), u64(0), u32(0)).data() == b""
    assert h.call(C.FXP_FSTAT, s(handle)).attrs().size == 200_003
    assert h.call(C.FXP_CLOSE, s(handle)).status()[0] == C.FX_OK
    assert (os.stat(h.path("f")).st_mode & 0o777) == 0o600
    with open(h.path("f"), "rb") as f:
        assert f.read(100_000) == payload
    assert h.call(C.FXP_READ, s(handle), u64(0), u32(1)).status() == (
        C.FX_FAILURE,
        "Invalid handle",
    )
    assert h.call(C.FXP_CLOSE, s(handle)).status()[0] == C.FX_NO_SUCH_FILE


def test_reads_are_capped(h: Harness) -> None:
    Path(h.path("big")).write_bytes(b"z" * (C.MAX_PACKET * 2))
    handle = h.open("big", C.FXF_READ)
    assert len(h.call(C.FXP_READ, s(handle), u64(0), u32(0xFFFFFFFF)).data()) == C.MAX_READ


def test_append_ignores_offset(h: Harness) -> None:
    Path(h.path("log")).write_bytes(b"one\n")
    handle = h.open("log", C.FXF_WRITE | C.FXF_APPEND)
    h.call(C.FXP_WRITE, s(handle), u64(0), s(b"two\n"))
    h.call(C.FXP_CLOSE, s(handle))
    assert Path(h.path("log")).read_bytes() == b"one\ntwo\n"


def test_open_errors_carry_strerror(h: Harness) -> None:
    reply = h.call(C.FXP_OPEN, s("missing/f"), u32(C.FXF_READ), attrs())
    assert reply.status() == (C.FX_NO_SUCH_FILE, os.strerror(errno.ENOENT))
    Path(h.path("x")).write_bytes(b"")
    reply = h.call(C.FXP_OPEN, s("x"), u32(C.FXF_WRITE | C.FXF_CREAT | C.FXF_EXCL), attrs())
    assert reply.status() == (C.FX_FAILURE, os.strerror(errno.EEXIST))


def test_permission_denied(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests may run as root, who is never refused; the mapping is what counts.
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "open", refuse)
    reply = h.call(C.FXP_OPEN, s("/etc/shadow"), u32(C.FXF_READ), attrs())
    assert reply.status() == (C.FX_PERMISSION_DENIED, os.strerror(errno.EACCES))


def test_unexpected_exception_is_a_failure_not_a_crash(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(os, "stat", boom)
    assert h.call(C.FXP_STAT, s("x")).status() == (C.FX_FAILURE, "Failure")
    assert h.transport.exitStatus is None


def test_relative_paths_resolve_against_home(h: Harness) -> None:
    home = os.path.realpath(h.home).encode()
    assert h.call(C.FXP_REALPATH, s("")).names()[0][0] == home
    assert h.call(C.FXP_REALPATH, s(".")).names()[0][0] == home
    assert h.call(C.FXP_REALPATH, s("a/../b")).names()[0][0] == home + b"/b"
    assert h.call(C.FXP_REALPATH, s("/")).names()[0][0] == b"/"
    assert h.call(C.FXP_REALPATH, s("no/such/x")).status()[0] == C.FX_NO_SUCH_FILE
    assert h.call(C.FXP_MKDIR, s("d"), attrs(perm=0o750)).status()[0] == C.FX_OK
    assert (os.stat(h.path("d")).st_mode & 0o777) == 0o750


def test_expand_path_and_home_directory(h: Harness) -> None:
    home = os.path.realpath(h.home).encode()
    os.mkdir(h.path("sub"))
    assert h.callExtended("expand-path@openssh.com", s("~")).names()[0][0] == home
    assert h.callExtended("expand-path@openssh.com", s("~/sub")).names()[0][0] == home + b"/sub"
    assert h.callExtended("expand-path@openssh.com", s("sub")).names()[0][0] == home + b"/sub"
    root = pwd.getpwuid(0)
    assert h.callExtended("expand-path@openssh.com", s("~root")).names()[0][0] == (
        os.path.realpath(root.pw_dir).encode()
    )
    assert h.callExtended("expand-path@openssh.com", s("~nosuchuser9/x")).status() == (
        C.FX_NO_SUCH_FILE,
        "no such user",
    )
    assert h.callExtended("home-directory", s("")).names()[0][0] == h.home.encode()
    assert h.callExtended("home-directory", s("root")).names()[0][0] == root.pw_dir.encode()
    assert h.callExtended("home-directory", s("nosuchuser9")).status()[0] == C.FX_FAILURE


def test_setstat_family(h: Harness) -> None:
    Path(h.path("f")).write_bytes(b"0123456789")
    reply = h.call(C.FXP_SETSTAT, s("f"), attrs(size=4, perm=0o604, times=(111, 222)))
    assert reply.status()[0] == C.FX_OK
    st = os.stat(h.path("f"))
    assert (st.st_size, st.st_mode & 0o777, st.st_atime, st.st_mtime) == (4, 0o604, 111, 222)
    ids = (os.getuid(), os.getgid())
    assert h.call(C.FXP_SETSTAT, s("f"), attrs(ids=ids)).status()[0] == C.FX_OK

    handle = h.open("f", C.FXF_WRITE)
    reply = h.call(C.FXP_FSETSTAT, s(handle), attrs(size=2, perm=0o640, times=(5, 6)))
    assert reply.status()[0] == C.FX_OK
    st = os.stat(h.path("f"))
    assert (st.st_size, st.st_mode & 0o777, st.st_mtime) == (2, 0o640, 6)
    assert h.call(C.FXP_FSETSTAT, s(b"nope"), attrs(size=1)).status()[0] == C.FX_FAILURE

    os.symlink("f", h.path("link"))
    reply = h.callExtended("lsetstat@openssh.com", s("link"), attrs(times=(7, 8)))
    assert reply.status()[0] == C.FX_OK
    assert os.lstat(h.path("link")).st_mtime == 8
    assert os.stat(h.path("f")).st_mtime == 6
    reply = h.callExtended("lsetstat@openssh.com", s("link"), attrs(perm=0o600))
    assert reply.status() == (C.FX_FAILURE, os.strerror(errno.EOPNOTSUPP))
    reply = h.callExtended("lsetstat@openssh.com", s("f"), attrs(perm=0o600))
    assert reply.status()[0] == C.FX_OK
    assert os.stat(h.path("f")).st_mode & 0o777 == 0o600
    reply = h.callExtended("lsetstat@openssh.com", s("f"), attrs(size=0))
    assert reply.status()[0] == C.FX_BAD_MESSAGE
    reply = h.call(C.FXP_SETSTAT, s("f"), attrs(size=2**64 - 1))
    assert reply.status()[0] == C.FX_FAILURE


def test_stat_lstat(h: Harness) -> None:
    Path(h.path("f")).write_bytes(b"abc")
    os.symlink("f", h.path("l"))
    assert h.call(C.FXP_STAT, s("l")).attrs().size == 3
    assert os.path.islink(h.path("l"))
    lattrs = h.call(C.FXP_LSTAT, s("l")).attrs()
    assert lattrs.size == 1 and (lattrs.permissions & 0o170000) == 0o120000
    assert h.call(C.FXP_STAT, s("zz")).status() == (C.FX_NO_SUCH_FILE, os.strerror(errno.ENOENT))


def test_directories(h: Harness) -> None:
    os.mkdir(h.path("d"))
    names = {f"n{i}".encode() for i in range(150)} | {b"\xff\xfe-not-utf8"}
    for name in names:
        with open(os.path.join(os.fsencode(h.path("d")), name), "wb"):
            pass
    handle = h.call(C.FXP_OPENDIR, s("d")).handle()
    seen: list[bytes] = []
    while True:
        reply = h.call(C.FXP_READDIR, s(handle))
        if reply.type == C.FXP_STATUS:
            assert reply.status()[0] == C.FX_EOF
            break
        batch = reply.names()
        assert len(batch) <= C.READDIR_BATCH
        for name, long, _ in batch:
            assert long.endswith(name) and long.startswith((b"-rw", b"drwx"))
        seen += [name for name, _, _ in batch]
    assert sorted(seen) == sorted(names | {b".", b".."})
    assert h.call(C.FXP_CLOSE, s(handle)).status()[0] == C.FX_OK
    assert h.call(C.FXP_OPENDIR, s("nodir")).status()[0] == C.FX_NO_SUCH_FILE
    assert h.call(C.FXP_RMDIR, s("d")).status()[0] == C.FX_FAILURE
    assert h.call(C.FXP_MKDIR, s("e"), attrs()).status()[0] == C.FX_OK
    assert h.call(C.FXP_RMDIR, s("e")).status()[0] == C.FX_OK
    assert not os.path.exists(h.path("e"))


def test_rename_remove_links(h: Harness) -> None:
    Path(h.path("a")).write_bytes(b"A")
    Path(h.path("b")).write_bytes(b"B")
    assert h.call(C.FXP_RENAME, s("a"), s("b")).status() == (
        C.FX_FAILURE,
        os.strerror(errno.EEXIST),
    )
    assert h.call(C.FXP_RENAME, s("a"), s("c")).status()[0] == C.FX_OK
    assert not os.path.exists(h.path("a")) and Path(h.path("c")).read_bytes() == b"A"
    os.mkdir(h.path("dir"))
    assert h.call(C.FXP_RENAME, s("dir"), s("dir2")).status()[0] == C.FX_OK
    assert h.callExtended("posix-rename@openssh.com", s("c"), s("b")).status()[0] == C.FX_OK
    assert Path(h.path("b")).read_bytes() == b"A"
    assert h.callExtended("hardlink@openssh.com", s("b"), s("hl")).status()[0] == C.FX_OK
    assert os.stat(h.path("hl")).st_ino == os.stat(h.path("b")).st_ino
    # OpenSSH's order: target, then the link's own path.
    assert h.call(C.FXP_SYMLINK, s("b"), s("sl")).status()[0] == C.FX_OK
    assert os.readlink(h.path("sl")) == "b"
    assert h.call(C.FXP_READLINK, s("sl")).names()[0][0] == b"b"
    assert h.call(C.FXP_READLINK, s("b")).status()[0] == C.FX_BAD_MESSAGE
    assert h.call(C.FXP_REMOVE, s("sl")).status()[0] == C.FX_OK
    assert h.call(C.FXP_REMOVE, s("sl")).status()[0] == C.FX_NO_SUCH_FILE


def test_copy_data(h: Harness) -> None:
    payload = os.urandom(C.COPY_CHUNK * 2 + 5)
    Path(h.path("src")).write_bytes(payload)
    src = h.open("src", C.FXF_READ)
    dst = h.open("dst", RW_CREATE)
    reply = h.callExtended("copy-data", s(src), u64(0), u64(0), s(dst), u64(0))
    assert reply.status()[0] == C.FX_OK
    reply = h.callExtended("copy-data", s(src), u64(1), u64(3), s(dst), u64(len(payload)))
    assert reply.status()[0] == C.FX_OK
    assert Path(h.path("dst")).read_bytes() == payload + payload[1:4]
    reply = h.callExtended("copy-data", s(src), u64(len(payload)), u64(5), s(dst), u64(0))
    assert reply.status()[0] == C.FX_EOF
    reply = h.callExtended("copy-data", s(src), u64(0), u64(0), s(src), u64(0))
    assert reply.status()[0] == C.FX_FAILURE


def test_fsync_statvfs_limits_names(h: Harness) -> None:
    handle = h.open("f", RW_CREATE)
    assert h.callExtended("fsync@openssh.com", s(handle)).status()[0] == C.FX_OK
    for reply in (
        h.callExtended("statvfs@openssh.com", s(".")),
        h.callExtended("fstatvfs@openssh.com", s(handle)),
    ):
        assert reply.type == C.FXP_EXTENDED_REPLY
        fields = [reply.reader.u64() for _ in range(11)]
        assert reply.reader.remaining() == 0
        assert fields[0] == os.statvfs(h.home).f_bsize
    reply = h.callExtended("limits@openssh.com")
    limits = [reply.reader.u64() for _ in range(4)]
    assert limits[:3] == [C.MAX_PACKET, C.MAX_READ, C.MAX_WRITE]
    assert 0 < limits[3] <= C.MAX_HANDLES
    reply = h.callExtended(
        "users-groups-by-id@openssh.com", s(u32(0) + u32(4_000_000_000)), s(u32(0))
    )
    users, groups = reply.reader.string(), reply.reader.string()
    assert users == s("root") + s("") and groups == s("root")
    reply = h.callExtended("users-groups-by-id@openssh.com", s(b"\0\0\0"), s(b""))
    assert reply.status()[0] == C.FX_BAD_MESSAGE


def test_hostile_but_framed_requests_get_a_status(h: Harness) -> None:
    assert h.call(99).status()[0] == C.FX_OP_UNSUPPORTED
    assert h.callExtended("nope@example.com").status()[0] == C.FX_OP_UNSUPPORTED
    assert h.call(C.FXP_OPEN, s("f")).status()[0] == C.FX_BAD_MESSAGE
    assert h.call(C.FXP_OPEN, s(b"a\0b"), u32(C.FXF_READ), attrs()).status()[0] == (
        C.FX_BAD_MESSAGE
    )
    assert h.call(C.FXP_READ, u32(100)).status()[0] == C.FX_BAD_MESSAGE
    assert h.call(C.FXP_EXTENDED).status()[0] == C.FX_BAD_MESSAGE
    assert h.transport.exitStatus is None


def test_odd_bytes_paths(h: Harness) -> None:
    name = b"\xff\x01 \n\x7f"
    handle = h.open(name, RW_CREATE)
    h.call(C.FXP_CLOSE, s(handle))
    assert os.path.exists(os.path.join(os.fsencode(h.home), name))
    assert h.call(C.FXP_STAT, s(b"x" * 5000)).status()[0] == C.FX_BAD_MESSAGE


@pytest.mark.parametrize(
    "garbage",
    [u32(C.MAX_INCOMING_PACKET + 1), u32(0xFFFFFFFF) + b"junk", u32(0), u32(3) + b"\x05\x00\x00"],
)
def test_unframeable_input_exits_1(h: Harness, garbage: bytes) -> None:
    h.sendRaw(garbage)
    assert h.transport.exitStatus == 1
    h.sendRaw(b"more")
    assert h.replies() == []
    assert h.transport.producer is None


def test_handle_limit(tmp_path: Path) -> None:
    h = Harness(str(tmp_path), handleLimit=2)
    h.init()
    first = h.open("a", RW_CREATE)
    h.open("b", RW_CREATE)
    reply = h.call(C.FXP_OPEN, s("c"), u32(RW_CREATE), attrs())
    assert reply.status() == (C.FX_FAILURE, "Too many open handles")
    reply = h.call(C.FXP_OPENDIR, s("."))
    assert reply.status() == (C.FX_FAILURE, "Too many open handles")
    h.call(C.FXP_CLOSE, s(first))
    assert h.call(C.FXP_OPEN, s("c"), u32(RW_CREATE), attrs()).type == C.FXP_HANDLE


def test_eof_waits_for_outstanding_work_then_exits_0(tmp_path: Path) -> None:
    pool = ManualThreadPool()
    h = Harness(str(tmp_path), pool)
    h.init()
    h.send(C.FXP_OPEN, s("f"), u32(RW_CREATE), attrs())
    pool.runAll()
    handle = h.replies()[0].handle()
    for i in range(10):
        h.send(C.FXP_WRITE, s(handle), u64(i * 4), s(b"%04d" % i))
    h.server.readConnectionLost()
    assert h.transport.exitStatus is None
    pool.runAll()
    assert [r.status()[0] for r in h.replies()] == [C.FX_OK] * 10
    assert h.transport.exitStatus == 0
    assert h.transport.producer is None
    assert Path(h.path("f")).read_bytes() == b"".join(b"%04d" % i for i in range(10))
    assert len(h.server._fs.handles) == 0


def test_connection_lost_closes_handles(tmp_path: Path) -> None:
    pool = ManualThreadPool()
    h = Harness(str(tmp_path), pool)
    h.init()
    h.send(C.FXP_OPEN, s("f"), u32(RW_CREATE), attrs())
    pool.runAll()
    handle = h.replies()[0].handle()
    fd = h.server._fs.handles.file(handle).fd
    h.send(C.FXP_WRITE, s(handle), u64(0), s(b"late"))
    h.server.connectionLost()
    pool.runAll()
    assert len(h.server._fs.handles) == 0
    with pytest.raises(OSError):
        os.fstat(fd)
    assert Path(h.path("f")).read_bytes() == b""
    assert h.replies() == []


def test_requests_wait_while_work_is_in_flight(tmp_path: Path) -> None:
    pool = ManualThreadPool()
    h = Harness(str(tmp_path), pool, maxRequests=4)
    h.init()
    handles = []
    for i in range(6):
        Path(h.path(f"f{i}")).write_bytes(b"x" * 10)
        h.send(C.FXP_OPEN, s(f"f{i}"), u32(C.FXF_READ), attrs())
        pool.runAll()
        handles.append(h.replies()[0].handle())
    ids = [h.send(C.FXP_READ, s(handle), u64(0), u32(1)) for handle in handles]
    assert len(pool.queue) == 4 and h.server._inflight == 4
    assert h.transport.producerState == "producing"
    pool.runOne()
    assert len(pool.queue) == 4
    pool.runAll()
    assert sorted(r.id for r in h.replies()) == ids


def test_bytes_in_flight_limit_starts(tmp_path: Path) -> None:
    pool = ManualThreadPool()
    h = Harness(str(tmp_path), pool, maxBytes=64 * 1024)
    h.init()
    h.send(C.FXP_OPEN, s("f"), u32(RW_CREATE), attrs())
    pool.runAll()
    handle = h.replies()[0].handle()
    for i in range(4):
        h.send(C.FXP_WRITE, s(handle), u64(i * 32768), s(b"w" * 32768))
    assert h.server._inflight == 2  # the other two wait in the input buffer
    pool.runAll()
    assert [r.status()[0] for r in h.replies()] == [C.FX_OK] * 4
    assert os.path.getsize(h.path("f")) == 4 * 32768


def test_buffered_input_pauses_the_client(tmp_path: Path) -> None:
    pool = ManualThreadPool()
    h = Harness(str(tmp_path), pool, maxRequests=1, maxBuffered=1000)
    h.init()
    ids = [h.send(C.FXP_STAT, s("x" * 50)) for _ in range(30)]
    assert h.transport.producerState == "paused"
    assert len(h.server._frames) >= 1000
    pool.runAll()
    assert h.transport.producerState == "producing"
    assert [r.id for r in h.replies()] == ids


def test_closed_window_stops_starting_requests_but_keeps_reading(h: Harness) -> None:
    h.server.pauseProducing()
    requestId = h.send(C.FXP_STAT, s("."))
    assert h.replies() == []
    # The client may be blocked writing requests; refusing them would deadlock.
    assert h.transport.producerState == "producing"
    h.server.readConnectionLost()
    assert h.transport.exitStatus is None
    h.server.resumeProducing()
    (reply,) = h.replies()
    assert reply.id == requestId and reply.type == C.FXP_ATTRS
    assert h.transport.exitStatus == 0


def test_replies_in_completion_order_with_per_handle_order(tmp_path: Path) -> None:
    pool = ManualThreadPool()
    h = Harness(str(tmp_path), pool)
    h.init()
    for name in ("a", "b"):
        Path(h.path(name)).write_bytes(name.encode() * 10)
        h.send(C.FXP_OPEN, s(name), u32(C.FXF_READ | C.FXF_WRITE), attrs())
        pool.runAll()
    a, b = (r.handle() for r in h.replies())
    readA = h.send(C.FXP_READ, s(a), u64(0), u32(3))
    writeB = h.send(C.FXP_WRITE, s(b), u64(0), s(b"BBB"))
    closeB = h.send(C.FXP_CLOSE, s(b))
    assert len(pool.queue) == 2  # close(b) waits behind write(b)
    pool.runOne(1)
    assert [r.id for r in h.replies()] == [writeB]
    pool.runOne(1)
    assert [r.id for r in h.replies()] == [closeB]
    pool.runOne(0)
    (reply,) = h.replies()
    assert reply.id == readA and reply.data() == b"aaa"


def test_concurrent_paths_keep_their_order(tmp_path: Path) -> None:
    pool = ManualThreadPool()
    h = Harness(str(tmp_path), pool)
    h.init()
    first = h.send(C.FXP_MKDIR, s("d"), attrs())
    second = h.send(C.FXP_STAT, s("d"))
    assert len(pool.queue) == 1
    pool.runAll()
    replies = h.replies()
    assert [r.id for r in replies] == [first, second]
    assert replies[1].type == C.FXP_ATTRS


def test_pipelined_large_upload_hashes_right(tmp_path: Path) -> None:
    h = Harness(str(tmp_path), SyncThreadPool())
    h.init()
    handle = h.open("up", RW_CREATE)
    data = os.urandom(3 * 1024 * 1024)
    chunk = C.MAX_WRITE
    stream = b""
    for offset in range(0, len(data), chunk):
        body = bytes([C.FXP_WRITE]) + u32(offset) + s(handle) + u64(offset)
        body += s(data[offset : offset + chunk])
        stream += u32(len(body)) + body
    for i in range(0, len(stream), 7000):
        h.sendRaw(stream[i : i + 7000])
    assert all(r.status()[0] == C.FX_OK for r in h.replies())
    h.call(C.FXP_CLOSE, s(handle))
    digest = hashlib.sha256(Path(h.path("up")).read_bytes()).hexdigest()
    assert digest == hashlib.sha256(data).hexdigest()
