"""
The scenarios the mutation fuzzer (L{tests.support.fuzz}) plays: real
sessions scripted message by message (a session with env, pty-req and exec;
SFTP; scp both ways; global requests and remote forwarding; a direct-tcpip
channel), each step waiting for the answer a real client would wait for.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.conch.ssh import common, service
from twisted.internet import defer

BOUND = 5.0
# An unmutated step's answer (what a real client waits for before its next
# message) on a loaded machine: the case under test is the mutated message,
# bounded by BOUND; a step nobody tampered with that never comes is still a
# hang, found here three times later, rather than a false alarm under load.
SETTLE_BOUND = 15.0

MSG_IGNORE = 2
MSG_DISCONNECT = 1
MSG_KEXINIT = 20
MSG_NEWKEYS = 21
MSG_DEBUG = 4
MSG_GLOBAL_REQUEST = 80
MSG_REQUEST_SUCCESS = 81
MSG_REQUEST_FAILURE = 82
MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_OPEN_CONFIRMATION = 91
MSG_CHANNEL_OPEN_FAILURE = 92
MSG_CHANNEL_WINDOW_ADJUST = 93
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EXTENDED_DATA = 95
MSG_CHANNEL_EOF = 96
MSG_CHANNEL_CLOSE = 97
MSG_CHANNEL_REQUEST = 98
MSG_CHANNEL_SUCCESS = 99
MSG_CHANNEL_FAILURE = 100

# our channel numbers: the scenario's channel and the liveness probe's
OURS = 0
PROBE = 0x5EED
WINDOW = 1 << 20
MAX_PACKET = 32768

# message numbers a swapped message may become
SWAP_TYPES = [1, 2, 3, 4, 5, 6, 7, 20, 21, 30, 31, 50, 51, 52, 53, 60, 61, 80, 81, 82,
              90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 127, 192, 255]  # fmt: skip


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def NS(value: bytes | str) -> bytes:
    return common.NS(value.encode() if isinstance(value, str) else value)


def u32(value: int) -> bytes:
    return struct.pack(">L", value)


class FuzzConnection(service.SSHService):
    """
    An C{ssh-connection} client that only records: every message, the data
    per channel, and waiters on predicates over the messages.
    """

    name = b"ssh-connection"

    def __init__(self) -> None:
        self.started: defer.Deferred[FuzzConnection] = defer.Deferred()
        self.messages: list[tuple[int, bytes]] = []
        self.data: dict[int, bytearray] = {}
        self._waiters: list[tuple[Callable[[int, bytes], bool], defer.Deferred[bytes]]] = []

    def serviceStarted(self) -> None:
        self.started.callback(self)

    def send(self, messageType: int, payload: bytes) -> None:
        self.transport.sendPacket(messageType, payload)

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        self.messages.append((messageNum, packet))
        if messageNum == MSG_CHANNEL_DATA and len(packet) >= 8:
            (channel,) = struct.unpack(">L", packet[:4])
            self.data.setdefault(channel, bytearray()).extend(packet[8:])
        for waiter in list(self._waiters):
            if waiter[1].called:
                self._waiters.remove(waiter)
            elif waiter[0](messageNum, packet):
                self._waiters.remove(waiter)
                waiter[1].callback(packet)

    def seen(self, predicate: Callable[[int, bytes], bool]) -> bytes | None:
        for num, packet in self.messages:
            if predicate(num, packet):
                return packet
        return None

    def until(self, predicate: Callable[[int, bytes], bool]) -> defer.Deferred[bytes]:
        """
        The first message, already received or to come, matching C{predicate}.
        """
        found = self.seen(predicate)
        if found is not None:
            return defer.succeed(found)
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiters.append((predicate, d))
        return d

    def after(self, mark: int, predicate: Callable[[int, bytes], bool]) -> defer.Deferred[bytes]:
        """
        As L{until}, among messages from index C{mark} on.
        """
        for num, packet in self.messages[mark:]:
            if predicate(num, packet):
                return defer.succeed(packet)
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiters.append((predicate, d))
        return d


@dataclass
class Context:
    """
    What a scenario learns as it goes: the server's number for our channel,
    the port a remote forward got, SFTP handles.
    """

    conn: FuzzConnection
    echoPort: int
    theirs: int = 0
    forwardPort: int = 0
    handles: dict[str, bytes] = field(default_factory=dict)
    channelOpen: bool = False
    # whether a program runs on the channel (then EOF must end it)
    started: bool = False
    # how the channel is ended by the liveness check: "eof" first, or "close"
    ending: str = "close"
    # the number the mutated message went out with
    sentType: int = 0


Build = Callable[[Context], bytes]
Settle = Callable[[Context, int], Awaitable[Any]]


@dataclass
class Step:
    """
    One message of a scenario. C{content} is the channel data a data step
    carries (then C{build} wraps it); C{settle} waits for the answer a real
    client would wait for, given the index of the first message after ours.
    """

    name: str
    messageType: int
    build: Build
    settle: Settle | None = None
    content: Build | None = None
    # how a (mutated) content is framed: as channel data by default
    wrap: Callable[[Context, bytes], bytes] = lambda ctx, data: u32(ctx.theirs) + NS(data)


def withTimeout(d: Any, seconds: float = BOUND) -> Any:
    d = defer.ensureDeferred(d) if not isinstance(d, defer.Deferred) else d
    return d.addTimeout(seconds, reactor())


def forOurs(*types: int) -> Callable[[int, bytes], bool]:
    def match(num: int, packet: bytes) -> bool:
        return num in types and packet[:4] == u32(OURS)

    return match


def channelData(content: Build) -> Build:
    return lambda ctx: u32(ctx.theirs) + NS(content(ctx))


def channelRequest(name: str, wantReply: bool, data: Build | bytes = b"") -> Build:
    def build(ctx: Context) -> bytes:
        extra = data(ctx) if callable(data) else data
        return u32(ctx.theirs) + NS(name) + (b"\1" if wantReply else b"\0") + extra

    return build


async def openConfirmed(ctx: Context, mark: int) -> None:
    reply = await withTimeout(
        ctx.conn.after(mark, forOurs(MSG_CHANNEL_OPEN_CONFIRMATION)), SETTLE_BOUND
    )
    ctx.theirs = struct.unpack(">L", reply[4:8])[0]
    ctx.channelOpen = True


async def requestAnswered(ctx: Context, mark: int) -> None:
    await withTimeout(
        ctx.conn.after(mark, forOurs(MSG_CHANNEL_SUCCESS, MSG_CHANNEL_FAILURE)), SETTLE_BOUND
    )


async def programStarted(ctx: Context, mark: int) -> None:
    reply = await withTimeout(
        ctx.conn.after(mark, lambda n, p: n in (MSG_CHANNEL_SUCCESS, MSG_CHANNEL_FAILURE)
                       and p[:4] == u32(OURS)), SETTLE_BOUND
    )  # fmt: skip
    ctx.started = reply is not None and ctx.conn.seen(forOurs(MSG_CHANNEL_SUCCESS)) is not None


def either(*ds: defer.Deferred[Any]) -> defer.Deferred[None]:
    """
    Fires when any of C{ds} does; cancelling it leaves them alone.
    """
    out: defer.Deferred[None] = defer.Deferred()

    def fired(result: Any) -> Any:
        if not out.called:
            out.callback(None)
        return result

    for d in ds:
        d.addBoth(fired)
    return out


async def globalAnswered(ctx: Context, mark: int) -> bytes:
    def match(num: int, packet: bytes) -> bool:
        return num in (MSG_REQUEST_SUCCESS, MSG_REQUEST_FAILURE)

    return await withTimeout(ctx.conn.after(mark, match), SETTLE_BOUND)  # type: ignore[no-any-return]


async def dataGrows(ctx: Context, mark: int, predicate: Callable[[bytes], bool]) -> None:
    """
    Wait until our channel's data (all of it so far) satisfies C{predicate}.
    """

    def match(num: int, packet: bytes) -> bool:
        return predicate(bytes(ctx.conn.data.get(OURS, b"")))

    if match(0, b""):
        return
    await withTimeout(
        ctx.conn.after(mark, lambda n, p: n == MSG_CHANNEL_DATA and match(n, p)), SETTLE_BOUND
    )


def moreData(extra: int) -> Settle:
    """
    Settle once C{extra} more bytes of channel data arrived than before the step.
    """

    async def settle(ctx: Context, mark: int) -> None:
        before = sum(
            len(p) - 8
            for n, p in ctx.conn.messages[:mark]
            if n == MSG_CHANNEL_DATA and p[:4] == u32(OURS)
        )
        await dataGrows(ctx, mark, lambda data: len(data) >= before + extra)

    return settle


def extendedData() -> Step:
    """
    Extended data from the client, which no channel of ours expects.
    """
    return Step(
        "extended data",
        MSG_CHANNEL_EXTENDED_DATA,
        lambda ctx: u32(ctx.theirs) + u32(1) + NS(EXTENDED),
        content=lambda ctx: EXTENDED,
        wrap=lambda ctx, data: u32(ctx.theirs) + u32(1) + NS(data),
    )


def sessionOpen() -> Step:
    return Step(
        "open session",
        MSG_CHANNEL_OPEN,
        lambda ctx: NS("session") + struct.pack(">3L", OURS, WINDOW, MAX_PACKET),
        openConfirmed,
    )


# long enough to be recognised should a log line carry them
EXTENDED = b"extended data from the client"
IGNORED = b"ignore me, ignore me, ignore me"
X11 = b"\0" + NS("MIT-MAGIC-COOKIE-1") + NS("00ff") + u32(0)
PTY_MODES = bytes([53]) + u32(1) + bytes([1]) + u32(3) + bytes([128]) + u32(38400) + b"\0"


def execScenario() -> list[Step]:
    return [
        sessionOpen(),
        Step("env", MSG_CHANNEL_REQUEST, channelRequest("env", True, NS("LANG") + NS("C.UTF-8")),
             requestAnswered),
        Step("exec", MSG_CHANNEL_REQUEST, channelRequest("exec", True, NS("cat")), programStarted),
        Step("data", MSG_CHANNEL_DATA, channelData(lambda ctx: b"hello\n"),
             moreData(6), content=lambda ctx: b"hello\n"),
        extendedData(),
        Step("window adjust", MSG_CHANNEL_WINDOW_ADJUST, lambda ctx: u32(ctx.theirs) + u32(4096)),
        Step("window-change", MSG_CHANNEL_REQUEST,
             channelRequest("window-change", False, struct.pack(">4L", 100, 40, 0, 0))),
        Step("ignore", MSG_IGNORE, lambda ctx: NS(IGNORED), content=lambda ctx: IGNORED,
             wrap=lambda ctx, data: NS(data)),
        Step("debug", MSG_DEBUG, lambda ctx: b"\0" + NS(b"hello") + NS(b"en")),
        Step("eof", MSG_CHANNEL_EOF, lambda ctx: u32(ctx.theirs)),
    ]  # fmt: skip


def ptyScenario() -> list[Step]:
    return [
        sessionOpen(),
        Step("pty-req", MSG_CHANNEL_REQUEST,
             channelRequest("pty-req", True, NS("xterm") + struct.pack(">4L", 80, 24, 640, 480)
                            + NS(PTY_MODES)), requestAnswered),
        Step("x11-req", MSG_CHANNEL_REQUEST,
             channelRequest("x11-req", True, X11), requestAnswered),
        Step("auth-agent-req", MSG_CHANNEL_REQUEST,
             channelRequest("auth-agent-req@openssh.com", True), requestAnswered),
        Step("keepalive", MSG_CHANNEL_REQUEST, channelRequest("keepalive@openssh.com", True),
             requestAnswered),
        Step("exec", MSG_CHANNEL_REQUEST, channelRequest("exec", True, NS("cat")), programStarted),
        Step("window-change", MSG_CHANNEL_REQUEST,
             channelRequest("window-change", False, struct.pack(">4L", 120, 50, 0, 0))),
        Step("data", MSG_CHANNEL_DATA, channelData(lambda ctx: b"hi\r"), moreData(2),
             content=lambda ctx: b"hi\r"),
        Step("signal", MSG_CHANNEL_REQUEST, channelRequest("signal", False, NS("INT"))),
    ]  # fmt: skip


# SFTP


def sftpPacket(kind: int, requestId: int | None, body: bytes) -> bytes:
    head = bytes([kind]) + (u32(requestId) if requestId is not None else b"")
    return u32(len(head) + len(body)) + head + body


def sftpFrames(data: bytes) -> list[bytes]:
    out = []
    while len(data) >= 4:
        (length,) = struct.unpack(">L", data[:4])
        if len(data) < 4 + length:
            break
        out.append(data[4 : 4 + length])
        data = data[4 + length :]
    return out


def sftpReply(requestId: int | None, capture: str | None = None) -> Settle:
    async def settle(ctx: Context, mark: int) -> None:
        def answered(data: bytes) -> bool:
            for frame in sftpFrames(data):
                if requestId is None and frame[:1] == b"\x02":
                    return True
                if requestId is not None and frame[1:5] == u32(requestId):
                    return True
            return False

        await dataGrows(ctx, mark, answered)
        if capture is not None:
            for frame in sftpFrames(bytes(ctx.conn.data.get(OURS, b""))):
                if frame[:1] == b"\x66" and frame[1:5] == u32(requestId or 0):
                    ctx.handles[capture] = common.getNS(frame[5:])[0]

    return settle


def sftpStep(name: str, kind: int, requestId: int | None, body: Build | bytes,
             capture: str | None = None) -> Step:  # fmt: skip
    def content(ctx: Context) -> bytes:
        return sftpPacket(kind, requestId, body(ctx) if callable(body) else body)

    return Step(f"sftp {name}", MSG_CHANNEL_DATA, channelData(content),
                sftpReply(requestId, capture), content=content)  # fmt: skip


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def handle(name: str) -> Build:
    return lambda ctx: NS(ctx.handles.get(name, b"\0\0\0\0"))


def sftpScenario() -> list[Step]:
    noAttrs = u32(0)
    return [
        sessionOpen(),
        Step("subsystem", MSG_CHANNEL_REQUEST, channelRequest("subsystem", True, NS("sftp")),
             programStarted),
        sftpStep("init", 1, None, u32(3)),
        sftpStep("realpath", 16, 1, NS(".")),
        sftpStep("stat", 17, 2, NS(".")),
        sftpStep("mkdir", 14, 3, NS("fz-dir") + noAttrs),
        sftpStep("open", 3, 4, NS("fz-file") + u32(0x1A) + noAttrs, capture="file"),
        sftpStep("write", 6, 5, lambda ctx: handle("file")(ctx) + u64(0) + NS("hello")),
        sftpStep("fstat", 8, 6, handle("file")),
        sftpStep("read", 5, 7, lambda ctx: handle("file")(ctx) + struct.pack(">QL", 0, 5)),
        sftpStep("fsetstat", 10, 8, lambda ctx: handle("file")(ctx) + u32(4) + u32(0o640)),
        sftpStep("close", 4, 9, handle("file")),
        sftpStep("setstat", 9, 10, NS("fz-file") + u32(8) + u32(1700000000) + u32(1700000000)),
        sftpStep("opendir", 11, 11, NS("."), capture="dir"),
        sftpStep("readdir", 12, 12, handle("dir")),
        sftpStep("closedir", 4, 13, handle("dir")),
        sftpStep("rename", 18, 14, NS("fz-file") + NS("fz-file2")),
        sftpStep("symlink", 20, 15, NS("fz-link") + NS("fz-file2")),
        sftpStep("readlink", 19, 16, NS("fz-link")),
        sftpStep("statvfs", 200, 17, NS("statvfs@openssh.com") + NS(".")),
        sftpStep("posix-rename", 200, 18, NS("posix-rename@openssh.com") + NS("fz-file2")
                 + NS("fz-file3")),
        sftpStep("remove", 13, 19, NS("fz-file3")),
        sftpStep("rmdir", 15, 20, NS("fz-dir")),
    ]  # fmt: skip


# scp


def scpAck(ctx: Context, mark: int) -> Awaitable[None]:
    return moreData(1)(ctx, mark)


def scpData(name: str, content: bytes, settle: Settle | None = scpAck) -> Step:
    return Step(f"scp {name}", MSG_CHANNEL_DATA, channelData(lambda ctx: content), settle,
                content=lambda ctx: content)  # fmt: skip


async def scpStarted(ctx: Context, mark: int) -> None:
    await programStarted(ctx, mark)
    await moreData(1)(ctx, 0)


def scpSinkScenario() -> list[Step]:
    return [
        sessionOpen(),
        Step("exec scp -t", MSG_CHANNEL_REQUEST, channelRequest("exec", True, NS("scp -r -p -t .")),
             scpStarted),
        scpData("times", b"T1700000000 0 1700000000 0\n"),
        scpData("file record", b"C0644 5 fz-scp.txt\n"),
        scpData("file data", b"hello\0"),
        scpData("dir record", b"D0755 0 fz-scpdir\n"),
        scpData("inner file record", b"C0600 3 x\n"),
        scpData("inner file data", b"abc\0"),
        scpData("end dir", b"E\n"),
        scpData("empty file", b"C0644 0 empty\n"),
        scpData("empty data", b"\0"),
        Step("eof", MSG_CHANNEL_EOF, lambda ctx: u32(ctx.theirs)),
    ]  # fmt: skip


def scpSourceScenario() -> list[Step]:
    def lines(n: int) -> Settle:
        return lambda ctx, mark: dataGrows(ctx, mark, lambda d: d.count(b"\n") >= n)

    return [
        sessionOpen(),
        Step("exec scp -f", MSG_CHANNEL_REQUEST,
             channelRequest("exec", True, NS("scp -p -f fz-src.txt")), programStarted),
        scpData("go", b"\0", lines(1)),
        scpData("ack times", b"\0", lines(2)),
        scpData("ack record", b"\0", moreData(len(SOURCE_CONTENT) + 1)),
        scpData("ack data", b"\0", None),
        Step("eof", MSG_CHANNEL_EOF, lambda ctx: u32(ctx.theirs)),
    ]  # fmt: skip


SOURCE_CONTENT = b"fuzz-source"


# connection-level requests and forwarding


async def forwardGranted(ctx: Context, mark: int) -> None:
    reply = await globalAnswered(ctx, mark)
    if len(reply) >= 4:
        ctx.forwardPort = struct.unpack(">L", reply[:4])[0]


def globalRequest(name: str, wantReply: bool, data: Build | bytes = b"") -> Build:
    def build(ctx: Context) -> bytes:
        extra = data(ctx) if callable(data) else data
        return NS(name) + (b"\1" if wantReply else b"\0") + extra

    return build


def globalScenario() -> list[Step]:
    return [
        Step("keepalive", MSG_GLOBAL_REQUEST, globalRequest("keepalive@openssh.com", True),
             globalAnswered),
        Step("tcpip-forward", MSG_GLOBAL_REQUEST,
             globalRequest("tcpip-forward", True, NS("127.0.0.1") + u32(0)), forwardGranted),
        Step("cancel-tcpip-forward", MSG_GLOBAL_REQUEST,
             globalRequest("cancel-tcpip-forward", True,
                           lambda ctx: NS("127.0.0.1") + u32(ctx.forwardPort)), globalAnswered),
        Step("streamlocal-forward", MSG_GLOBAL_REQUEST,
             globalRequest("streamlocal-forward@openssh.com", True, NS("/tmp/fz.sock")),
             globalAnswered),
        Step("no-reply request", MSG_GLOBAL_REQUEST,
             globalRequest("keepalive@openssh.com", False)),
    ]  # fmt: skip


def directScenario() -> list[Step]:
    def openDirect(ctx: Context) -> bytes:
        return (
            NS("direct-tcpip")
            + struct.pack(">3L", OURS, WINDOW, MAX_PACKET)
            + NS("127.0.0.1")
            + u32(ctx.echoPort)
            + NS("127.0.0.1")
            + u32(40000)
        )

    return [
        Step("open direct-tcpip", MSG_CHANNEL_OPEN, openDirect, openConfirmed),
        Step("data", MSG_CHANNEL_DATA, channelData(lambda ctx: b"ping"), moreData(4),
             content=lambda ctx: b"ping"),
        extendedData(),
        Step("eof", MSG_CHANNEL_EOF, lambda ctx: u32(ctx.theirs)),
    ]  # fmt: skip


SCENARIOS: dict[str, tuple[Callable[[], list[Step]], str]] = {
    # name: (steps, how the liveness check ends the channel)
    "exec": (execScenario, "eof"),
    "pty": (ptyScenario, "close"),
    "sftp": (sftpScenario, "eof"),
    "scp-sink": (scpSinkScenario, "eof"),
    "scp-source": (scpSourceScenario, "eof"),
    "global": (globalScenario, "close"),
    "direct-tcpip": (directScenario, "close"),
}
