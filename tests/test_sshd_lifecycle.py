"""
How a daemon session ends, without processes or sockets: hang-up of a program
whose session ends first (in every order against its start, output and
exit), descriptors closed whatever state they were in, eow@openssh.com, start
failures, and malformed request payloads refused.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from twisted.conch.ssh.common import NS
from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from diegossh.sshd import session as sessionModule
from diegossh.sshd.session import KILL_GRACE, SessionChannel, SessionConfig


class FakeChild:
    """
    A child process as the session sees it; records what it was asked.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.pid: int | None = 4242
        self.alive = True
        self.fd = None

    def signalGroup(self, number: int) -> bool:
        self.calls.append(("signal", number))
        return self.alive

    def hangUp(self) -> bool:
        self.calls.append("hangUp")
        return self.alive

    def killGroup(self) -> bool:
        self.calls.append("killGroup")
        return self.alive

    def closeDescriptors(self) -> None:
        self.calls.append("closeDescriptors")

    def closeOutput(self, childFD: int) -> None:
        self.calls.append(("closeOutput", childFD))

    def terminalFD(self) -> int | None:
        return None

    def pauseProducing(self) -> None:
        self.calls.append("pauseProducing")

    def resumeProducing(self) -> None:
        self.calls.append("resumeProducing")

    def stopProducing(self) -> None:
        self.calls.append("stopProducing")

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        self.calls.append("unregisterProducer")

    def write(self, data: bytes) -> None:
        pass

    def closeStdin(self) -> None:
        self.calls.append("closeStdin")


class FakeConn:
    """
    The connection service as a channel uses it: records what goes out.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def sendData(self, channel: Any, data: Any) -> None:
        self.sent.append(("data", bytes(data)))

    def sendExtendedData(self, channel: Any, dataType: int, data: Any) -> None:
        self.sent.append(("stderr", bytes(data)))

    def sendEOF(self, channel: Any) -> None:
        self.sent.append(("eof",))

    def sendClose(self, channel: Any) -> None:
        if channel.localClosed:
            return
        self.sent.append(("close",))
        channel.localClosed = True
        if channel.remoteClosed:
            channel.closed()

    def sendRequest(
        self, channel: Any, requestType: bytes, data: bytes, wantReply: int = 0
    ) -> None:
        self.sent.append(("request", requestType, data))

    def adjustWindow(self, channel: Any, n: int) -> None:
        channel.localWindowLeft += n

    def kinds(self) -> list[Any]:
        return [item[0] if item[0] != "request" else item[1] for item in self.sent]


def makeSession(
    monkeypatch: pytest.MonkeyPatch, window: int = 1 << 20, child: FakeChild | None = None
) -> tuple[SessionChannel, FakeChild, FakeConn, Clock]:
    config = SessionConfig({"HOME": "/h"}, "/h", "/bin/sh", lambda argv, env: None)
    conn = FakeConn()
    clock = Clock()
    session = SessionChannel(config, clock, localWindow=1 << 20, conn=conn)
    session.remoteWindowLeft = window
    session.remoteMaxPacket = 32768
    fake = child or FakeChild()

    def spawn(reactor: Any, protocol: Any, *args: Any, **kwargs: Any) -> FakeChild:
        # As Twisted does: the protocol is connected inside the constructor.
        protocol.makeConnection(fake)
        return fake

    monkeypatch.setattr(sessionModule.process, "spawn", spawn)
    return session, fake, conn, clock


def ended(code: int = 0) -> Failure:
    return Failure(error.ProcessDone(0) if code == 0 else error.ProcessTerminated(code))


def closeFromPeer(session: SessionChannel) -> None:
    # What Conch's connection does with a CHANNEL_CLOSE.
    session.closeReceived()
    session.remoteClosed = True
    if session.localClosed:
        session.closed()


def dropConnection(session: SessionChannel) -> None:
    # What Conch's connection does for every open channel when it is lost.
    session.localClosed = session.remoteClosed = True
    session.closed()


# -- the program outlives its session: every order


@pytest.mark.parametrize("end", [closeFromPeer, dropConnection])
def test_session_ending_right_after_the_fork_hangs_up_then_kills(
    monkeypatch: pytest.MonkeyPatch, end: Any
) -> None:
    session, child, _conn, clock = makeSession(monkeypatch)
    assert session.request_exec(NS(b"sleep 1000")) == 1
    end(session)
    assert child.calls[-2:] == ["hangUp", "closeDescriptors"]
    clock.advance(KILL_GRACE - 0.1)
    assert "killGroup" not in child.calls
    clock.advance(0.1)
    assert child.calls[-1] == "killGroup"
    assert not clock.getDelayedCalls()


def test_the_child_is_known_before_spawn_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    # The session ends while the process constructor is still running
    # (connectionMade is called from inside it, right after the fork).
    session, child, _conn, _clock = makeSession(monkeypatch)

    def spawn(reactor: Any, protocol: Any, *args: Any, **kwargs: Any) -> FakeChild:
        protocol.makeConnection(child)
        dropConnection(session)
        return child

    monkeypatch.setattr(sessionModule.process, "spawn", spawn)
    session.request_exec(NS(b"sleep 1000"))
    assert "hangUp" in child.calls
    assert "closeDescriptors" in child.calls


def test_leader_reaped_but_descendants_hold_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # `sleep 1000 & exit`: Twisted reaped the leader (its pid is now None)
    # but the pipes are still open; the group must still be hung up.
    session, child, _conn, clock = makeSession(monkeypatch)
    session.request_exec(NS(b"sleep 1000 & exit"))
    child.pid = None
    session.childExited()
    dropConnection(session)
    assert child.calls[-2:] == ["hangUp", "closeDescriptors"]
    clock.advance(KILL_GRACE)
    assert child.calls[-1] == "killGroup"


def test_output_closed_before_the_session_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    # The program closed its stdout and stderr but still runs.
    session, child, _conn, _clock = makeSession(monkeypatch)
    session.request_exec(NS(b"exec >&- 2>&-; sleep 1000"))
    session.outputClosed(1)
    session.outputClosed(2)
    dropConnection(session)
    assert "hangUp" in child.calls


def test_program_that_ended_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its descendants that let go of the session's pipes (nohup ... &) are
    # not the session's any more, as under sshd.
    session, child, conn, clock = makeSession(monkeypatch)
    session.request_exec(NS(b"true"))
    session.childExited()
    session.outputClosed(1)
    session.outputClosed(2)
    session.processEnded(ended())
    assert conn.kinds() == [b"exit-status", "eof", "close"]
    closeFromPeer(session)
    assert "hangUp" not in child.calls
    assert not clock.getDelayedCalls()


def test_nothing_to_kill_when_the_hang_up_reached_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    child = FakeChild()
    child.alive = False
    session, child, _conn, clock = makeSession(monkeypatch, child=child)
    session.request_exec(NS(b"true"))
    dropConnection(session)
    assert child.calls[-2:] == ["hangUp", "closeDescriptors"]
    assert not clock.getDelayedCalls()


def test_session_closed_before_any_program() -> None:
    config = SessionConfig({"HOME": "/h"}, "/h", "/bin/sh", lambda argv, env: None)
    session = SessionChannel(config, Clock(), conn=FakeConn())
    dropConnection(session)
    assert session.request_exec(NS(b"true")) == 0


def test_events_after_the_end_send_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    session, _child, conn, _clock = makeSession(monkeypatch)
    session.request_exec(NS(b"yes"))
    dropConnection(session)
    sent = list(conn.sent)
    session.childDataReceived(1, b"late")
    session.outputClosed(1)
    session.outputClosed(2)
    session.processEnded(ended())
    assert conn.sent == sent


# -- backed-up output: everything is dropped and closed at the end


def test_backed_up_session_drops_its_queue_and_closes_its_descriptors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session, child, _conn, _clock = makeSession(monkeypatch, window=0)
    session.request_exec(NS(b"yes"))
    session.childDataReceived(1, b"y\n" * 1_000_000)
    assert "pauseProducing" in child.calls
    assert session.bufferedBytes > 0
    dropConnection(session)
    assert session.bufferedBytes == 0
    assert "closeDescriptors" in child.calls


def test_close_from_the_client_is_answered_at_once_despite_a_full_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session, child, conn, _clock = makeSession(monkeypatch, window=0)
    session.request_exec(NS(b"yes"))
    session.childDataReceived(1, b"y\n" * 1000)
    closeFromPeer(session)
    assert conn.kinds() == ["close"]
    assert "closeDescriptors" in child.calls


# -- eow@openssh.com


def test_eow_closes_stdout_drops_its_queue_and_keeps_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session, child, conn, _clock = makeSession(monkeypatch, window=4)
    session.request_exec(NS(b"yes"))
    session.childDataReceived(1, b"y\n" * 10)
    session.childDataReceived(2, b"warning\n")
    assert session.requestReceived(b"eow@openssh.com", b"") == 1
    assert ("closeOutput", 1) in child.calls
    session.childDataReceived(1, b"late stdout")
    session.childDataReceived(2, b"late stderr\n")
    session.addWindowBytes(1000)
    assert conn.sent == [
        ("data", b"y\ny\n"),
        ("stderr", b"warning\n"),
        ("stderr", b"late stderr\n"),
    ]
    # yes dies of SIGPIPE; the session ends as under sshd.
    session.outputClosed(1)
    session.outputClosed(2)
    session.processEnded(Failure(error.ProcessTerminated(None, 13, 13)))
    assert conn.kinds()[-3:] == [b"exit-signal", "eof", "close"]


def test_eow_with_a_pty_stops_reading_it(monkeypatch: pytest.MonkeyPatch) -> None:
    session, child, conn, _clock = makeSession(monkeypatch, window=0)
    term = NS(b"xterm") + struct.pack(">4L", 80, 24, 0, 0) + NS(b"")
    assert session.request_pty_req(term) == 1
    session.request_exec(NS(b"yes"))
    session.childDataReceived(1, b"y\r\n" * 10)
    session.requestReceived(b"eow@openssh.com", b"")
    assert child.calls[-1] == "pauseProducing"
    assert session.bufferedBytes == 0
    session.addWindowBytes(1 << 20)
    assert "resumeProducing" not in child.calls
    assert conn.sent == []
    # The program ends (a signal request, say): the unread pty is closed so
    # that its end can be seen.
    session.childExited()
    assert child.calls[-1] == "closeDescriptors"


def test_eow_before_the_program_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    session, child, _conn, _clock = makeSession(monkeypatch)
    session.requestReceived(b"eow@openssh.com", b"")
    session.request_exec(NS(b"yes"))
    assert ("closeOutput", 1) in child.calls


# -- start failures


def test_a_program_that_cannot_start_gives_one_line_and_a_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session, _child, conn, clock = makeSession(monkeypatch)

    def spawn(*args: Any, **kwargs: Any) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(sessionModule.process, "spawn", spawn)
    assert session.request_exec(NS(b"echo hi")) == 1
    # Nothing before the reply to the request.
    assert conn.sent == []
    clock.advance(0)
    assert conn.sent == [
        ("stderr", b"diego-sshd: cannot run /bin/sh: Too many open files\n"),
        ("request", b"exit-status", struct.pack(">L", 126)),
        ("eof",),
        ("close",),
    ]


def test_a_child_forked_before_the_start_failed_is_not_left_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session, child, conn, clock = makeSession(monkeypatch)

    def spawn(reactor: Any, protocol: Any, *args: Any, **kwargs: Any) -> None:
        protocol.makeConnection(child)
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(sessionModule.process, "spawn", spawn)
    assert session.request_exec(NS(b"echo hi")) == 1
    assert child.calls == ["hangUp"]
    clock.advance(0)
    assert conn.sent[0] == ("stderr", b"diego-sshd: cannot run /bin/sh: Bad file descriptor\n")
    dropConnection(session)
    clock.advance(KILL_GRACE)
    assert child.calls == ["hangUp", "killGroup"]


def test_a_python_program_that_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(argv: list[str], env: dict[str, str]) -> Any:
        raise ValueError("bad options")

    config = SessionConfig({"HOME": "/h"}, "/h", "/bin/sh", broken)
    conn = FakeConn()
    clock = Clock()
    session = SessionChannel(config, clock, conn=conn)
    session.remoteWindowLeft = 1 << 20
    session.remoteMaxPacket = 32768
    assert session.request_exec(NS(b"scp -t /tmp")) == 1
    clock.advance(0)
    assert conn.sent[0] == ("stderr", b"diego-sshd: cannot run scp: bad options\n")
    assert conn.kinds()[1:] == [b"exit-status", "eof", "close"]


# -- malformed payloads are refused, never raised


def _truncations(payload: bytes) -> list[bytes]:
    return [payload[:n] for n in range(len(payload))] + [payload + b"\0", payload + b"junk"]


VALID = {
    b"pty-req": NS(b"xterm") + struct.pack(">4L", 80, 24, 640, 480) + NS(b"\x01\0\0\0\x03\0"),
    b"window-change": struct.pack(">4L", 100, 30, 0, 0),
    b"env": NS(b"FOO") + NS(b"bar"),
    b"exec": NS(b"true"),
    b"subsystem": NS(b"sftp"),
    b"signal": NS(b"TERM"),
    b"shell": b"",
    b"eow@openssh.com": b"",
}


@pytest.mark.parametrize("requestType", sorted(VALID))
def test_truncated_or_padded_payloads_are_refused(
    monkeypatch: pytest.MonkeyPatch, requestType: bytes
) -> None:
    for payload in _truncations(VALID[requestType]):
        session, child, _conn, _clock = makeSession(monkeypatch)
        if requestType in (b"window-change",):
            session.term = "xterm"
        if requestType == b"signal":
            session.request_exec(NS(b"sleep 1000"))
            child.calls.clear()
        assert session.requestReceived(requestType, payload) == 0, payload
        assert session.term in (None, "xterm")
        assert not session.env.requested
        assert session._outputWanted
        assert not [c for c in child.calls if isinstance(c, tuple) and c[0] == "signal"]
        if requestType != b"signal":
            assert not session.started


@pytest.mark.parametrize("requestType", sorted(VALID))
def test_the_valid_payloads_are_accepted(
    monkeypatch: pytest.MonkeyPatch, requestType: bytes
) -> None:
    # The other half of the test above: the same payloads, whole, do work.
    session, _child, _conn, _clock = makeSession(monkeypatch)
    if requestType == b"window-change":
        session.term = "xterm"
    if requestType == b"signal":
        session.request_exec(NS(b"sleep 1000"))
    if requestType == b"subsystem":
        session.config = SessionConfig({}, "/h", "/bin/sh", lambda argv, env: FakeProgram())
    assert session.requestReceived(requestType, VALID[requestType]) == 1


class FakeProgram:
    def makeConnection(self, transport: Any) -> None:
        self.transport = transport


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xff\xff\xff", NS(b"x") + b"\0\0\0\x05abc", b"\0\0\0\x02a", NS(b"a\0b")],
)
def test_garbage_payloads_for_every_request(
    monkeypatch: pytest.MonkeyPatch, payload: bytes
) -> None:
    session, _child, _conn, _clock = makeSession(monkeypatch)
    for requestType in [*VALID, b"x11-req", b"auth-agent-req@openssh.com", b"break"]:
        if VALID.get(requestType) == payload:
            continue
        assert session.requestReceived(requestType, payload) == 0
    assert not session.started


def test_strange_request_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    session, _child, _conn, _clock = makeSession(monkeypatch)
    for name in [b"\xff\xfe", b"pty req", b"", b"__init__", b"-", b"exec\0"]:
        assert session.requestReceived(name, NS(b"true")) == 0
    assert not session.started


def test_nul_in_a_command_or_terminal_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    session, _child, _conn, _clock = makeSession(monkeypatch)
    assert session.request_exec(NS(b"echo a\0b")) == 0
    pty = NS(b"xt\0erm") + struct.pack(">4L", 80, 24, 0, 0) + NS(b"")
    assert session.request_pty_req(pty) == 0
    assert not session.started
