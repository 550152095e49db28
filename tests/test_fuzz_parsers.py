"""
Properties of the parsers of peer data, in memory, with hypothesis: whatever
bytes arrive, each parser returns a value or raises its own documented
refusal (L{Malformed}, L{ProtocolError}, L{MalformedRequest}), never another
exception. The socket-level fuzzer (test_fuzz.py) reaches the same parsers
through real sessions; these reach far more inputs per second.
"""

from __future__ import annotations

import os
import struct
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, globalLogPublisher

from diegossh.ssh import tcpip_wire
from diegossh.sshd.pty import WindowSize, parseModes
from diegossh.sshd.scp import buildSCP
from diegossh.sshd.scp._input import EndOfInput, InputBuffer
from diegossh.sshd.scp._program import SCPProgram
from diegossh.sshd.scp._records import (
    MAX_SIZE,
    Entry,
    ProtocolError,
    formatEntry,
    formatTimes,
    parseRecord,
)
from diegossh.sshd.sftp import _constants as C
from diegossh.sshd.sftp._attrs import decodeAttrs
from diegossh.sshd.sftp._errors import SFTPError
from diegossh.sshd.sftp._requests import EXTENDED, REQUESTS, Job
from diegossh.sshd.sftp._wire import FrameBuffer, Malformed, PacketTooLarge, Reader
from tests.scp_support import FakeSession
from tests.sftp_support import Harness
from tests.support import hypothesis_home  # noqa: F401 - before any example runs

pytestmark = pytest.mark.slow

# Nothing written into the working tree: no example database (and
# tests.support.hypothesis_home for hypothesis's other caches).
FAST = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

u32s = st.integers(0, 0xFFFFFFFF)


def ns(value: bytes) -> bytes:
    return struct.pack(">L", len(value)) + value


@st.composite
def lengthy(draw: Any) -> bytes:
    """
    Bytes made of plausible fields: strings with right or wrong lengths,
    uint32s near the edges, raw bytes.
    """
    parts = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=12).map(ns),
                st.sampled_from([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]).map(
                    lambda v: struct.pack(">L", v)
                ),
                st.binary(max_size=8),
            ),
            max_size=8,
        )
    )
    return b"".join(parts)


anyBytes = st.one_of(st.binary(max_size=64), lengthy())


# -- SFTP


class _FS:
    """
    Parsers only read fields and bind methods; nothing here may run.
    """

    def __getattr__(self, name: str) -> Any:
        def untouchable(*args: Any) -> None:
            raise AssertionError(f"a parser ran {name}")

        return untouchable


@FAST
@given(st.lists(st.binary(max_size=40), max_size=10), st.integers(8, 64))
def test_sftp_frames_never_exceed_the_limit(chunks: list[bytes], limit: int) -> None:
    frames = FrameBuffer(limit)
    for chunk in chunks:
        frames.feed(chunk)
        try:
            while (packet := frames.next()) is not None:
                assert len(packet) <= limit
        except PacketTooLarge:
            return


@FAST
@given(st.sampled_from(sorted(REQUESTS)), anyBytes)
def test_sftp_request_parsers_refuse_cleanly(msgType: int, body: bytes) -> None:
    try:
        job = REQUESTS[msgType](_FS(), Reader(body))  # type: ignore[arg-type]
    except (Malformed, SFTPError):
        return
    assert isinstance(job, Job)


@FAST
@given(st.sampled_from(sorted(EXTENDED)), anyBytes)
def test_sftp_extended_parsers_refuse_cleanly(name: bytes, body: bytes) -> None:
    try:
        job = EXTENDED[name](_FS(), Reader(body))  # type: ignore[arg-type]
    except (Malformed, SFTPError):
        return
    assert isinstance(job, Job)


@FAST
@given(anyBytes)
def test_sftp_attrs_refuse_cleanly(body: bytes) -> None:
    try:
        decodeAttrs(Reader(body))
    except Malformed:
        pass


# -- scp


@FAST
@given(st.one_of(st.binary(max_size=80), st.from_regex(rb"\A[CDTE][0-9 ]{0,30}[ -~]{0,10}\Z")))
def test_scp_records_refuse_cleanly(line: bytes) -> None:
    try:
        parseRecord(line)
    except ProtocolError:
        pass


@FAST
@given(
    st.booleans(),
    st.integers(0, 0o7777),
    st.integers(0, MAX_SIZE),
    st.text(st.characters(blacklist_characters="/\n\0", codec="utf-8"), min_size=1, max_size=20),
)
def test_scp_entry_round_trip(isDirectory: bool, mode: int, size: int, name: str) -> None:
    if name in (".", ".."):
        return
    line = formatEntry(isDirectory, mode, size, name)
    assert parseRecord(line[:-1]) == Entry(isDirectory, mode & 0o6777, size, name.encode())


@FAST
@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_scp_times_round_trip(mtime: float, atime: float) -> None:
    parseRecord(formatTimes(min(mtime, 1e18), min(atime, 1e18))[:-1])


@FAST
@given(st.lists(st.binary(max_size=30), max_size=8), st.lists(st.sampled_from("lbs"), max_size=8))
def test_scp_input_reads_fail_only_with_end_or_protocol_error(
    chunks: list[bytes], reads: list[str]
) -> None:
    buffer = InputBuffer(lambda: None, lambda: None, highWater=16)
    results: list[Any] = []
    for chunk, read in zip(chunks, reads, strict=False):
        buffer.feed(chunk)
        reader = {"l": lambda: buffer.readLine(10), "b": buffer.readByte}
        d = reader.get(read, lambda: buffer.readSome(5))()
        d.addBoth(results.append)
        if not d.called:
            break
    buffer.close()
    for result in results:
        if hasattr(result, "check"):
            assert result.check(EndOfInput, ProtocolError), result


# -- pty


@FAST
@given(anyBytes)
def test_pty_modes_never_raise(encoded: bytes) -> None:
    for opcode, value in parseModes(encoded):
        assert 0 < opcode < 160
        assert 0 <= value <= 0xFFFFFFFF


@FAST
@given(u32s, u32s, u32s, u32s)
def test_window_size_fits_a_winsize(cols: int, rows: int, x: int, y: int) -> None:
    size = WindowSize.fromWire(cols, rows, x, y)
    struct.pack("4H", size.rows, size.cols, size.xpixel, size.ypixel)


# -- forwarding


@FAST
@given(anyBytes)
def test_forwarding_requests_refuse_cleanly(data: bytes) -> None:
    for parse in (tcpip_wire.parseDirectTCPIP, tcpip_wire.parseTCPIPForward):
        try:
            result = parse(data)
        except tcpip_wire.MalformedRequest:
            continue
        host, port = result[0], result[1]
        assert isinstance(host, str) and "\0" not in host
        assert 0 <= port <= 0xFFFF


@FAST
@given(
    st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=20),
    st.integers(1, 0xFFFF),
    st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=20),
    st.integers(0, 0xFFFF),
)
def test_forwarded_tcpip_round_trip(host: str, port: int, origHost: str, origPort: int) -> None:
    packed = tcpip_wire.packForwardedTCPIP(host, port, origHost, origPort)
    assert tcpip_wire.parseDirectTCPIP(packed) == (host, port, origHost, origPort)


@pytest.mark.parametrize(
    "data",
    [b"", b"\0\0", ns(b"127.0.0.1"), ns(b"127.0.0.1") + b"\0\0", ns(b"\xff") + b"\0\0\0\1"],
)
def test_forwarding_truncations_refused(data: bytes) -> None:
    with pytest.raises(tcpip_wire.MalformedRequest):
        tcpip_wire.parseTCPIPForward(data)


# -- the SFTP server, packet by packet

# Requests that only read (a random path may name anything on this machine).
_READ_ONLY = [
    C.FXP_STAT, C.FXP_LSTAT, C.FXP_REALPATH, C.FXP_OPENDIR, C.FXP_READDIR, C.FXP_FSTAT,
    C.FXP_CLOSE, C.FXP_READ, C.FXP_READLINK, 0, 2, 99, 255,
]  # fmt: skip
_READ_ONLY_EXTENDED = [
    b"statvfs@openssh.com", b"fstatvfs@openssh.com", b"limits@openssh.com",
    b"expand-path@openssh.com", b"home-directory", b"users-groups-by-id@openssh.com",
    b"no-such-extension@example.com",
]  # fmt: skip


@st.composite
def sftpRequests(draw: Any) -> bytes:
    kind = draw(st.one_of(st.sampled_from(_READ_ONLY), st.just(C.FXP_EXTENDED)))
    requestId = draw(st.integers(0, 0xFFFFFFFF))
    body = ns(draw(st.sampled_from(_READ_ONLY_EXTENDED))) if kind == C.FXP_EXTENDED else b""
    body += draw(anyBytes)
    return bytes([kind]) + struct.pack(">L", requestId) + body


@FAST
@given(st.lists(st.one_of(sftpRequests(), st.binary(max_size=6)), min_size=1, max_size=8))
def test_sftp_server_answers_every_request_or_ends(packets: list[bytes]) -> None:
    """
    Each request gets exactly one reply with its id, or the session ends
    with a status; nothing is logged as an error.
    """
    with tempfile.TemporaryDirectory() as home, _Errors() as errors:
        h = Harness(home)
        h.init()
        for packet in packets:
            h.sendPacket(packet)
            if h.transport.exitStatus is not None:
                break
            if len(packet) < 5:
                continue  # no request id: the session must have ended
            replies = h.replies()
            (requestId,) = struct.unpack(">L", packet[1:5])
            assert [r.id for r in replies] == [requestId], (packet, replies)
        else:
            short = [p for p in packets if len(p) < 5]
            assert not short or h.transport.exitStatus is not None
    assert not errors, errors


class _Errors:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        level = event.get("log_level")
        if "log_failure" in event or (level is not None and level >= LogLevel.error):
            self.events.append(event)

    def __enter__(self) -> list[Any]:
        globalLogPublisher.addObserver(self)
        return self.events

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)


# -- the scp sink, record by record

_SCP_PIECES = st.one_of(
    st.sampled_from(
        [b"C0644 5 a.txt\n", b"hello\0", b"D0755 0 d\n", b"E\n", b"T1 0 1 0\n", b"\0",
         b"C0600 0 ..\n", b"C0644 99999999999 big\n", b"D0755 0 /etc\n", b"\x01oops\n"]
    ),
    st.from_regex(rb"\A[CDT][0-7]{0,5} ?[0-9]{0,22} ?[a-z./]{0,5}\n\Z"),
    st.binary(max_size=12),
)  # fmt: skip


@FAST
@given(st.lists(_SCP_PIECES, max_size=10))
def test_scp_sink_ends_cleanly_whatever_it_is_sent(pieces: list[bytes]) -> None:
    """
    Whatever the client sends, the sink ends with a status once EOF comes,
    writes nothing outside its target and logs no error.
    """
    with tempfile.TemporaryDirectory() as top, _Errors() as errors:
        home = os.path.join(top, "home")
        os.mkdir(home)
        program = buildSCP(["scp", "-r", "-p", "-t", "--", "."], {"HOME": home})
        assert isinstance(program, SCPProgram)
        session = FakeSession()
        program.makeConnection(session)
        for piece in pieces:
            if session.status is not None:
                break
            program.dataReceived(piece)
        if session.status is None:
            program.readConnectionLost()
        assert session.status in (0, 1)
        assert os.listdir(top) == ["home"]
    assert not errors, errors


@FAST
@given(st.lists(st.one_of(st.sampled_from(["-t", "-f", "-r", "-p", "-d", "-v", "--", "-", "."]),
                          st.text(max_size=6)), max_size=6))  # fmt: skip
def test_scp_command_lines_build_or_refuse(args: list[str]) -> None:
    """
    Any C{scp ...} exec request becomes a program, a refusal, or a plain
    command for the shell; parsing it never raises.
    """
    program = buildSCP(["scp", *args], {"HOME": "/nonexistent"})
    assert program is None or hasattr(program, "makeConnection")
