"""
Unit tests of the daemon's session channel logic, without processes or sockets.
"""

from __future__ import annotations

from typing import Any

from diegossh.sshd.environment import SessionEnvironment
from diegossh.sshd.session import SessionChannel, SessionConfig


class FakeChild:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.written: list[bytes] = []
        self.pid = 4242

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.calls.append("write")

    def unregisterProducer(self) -> None:
        self.calls.append("unregisterProducer")

    def closeStdin(self) -> None:
        self.calls.append("closeStdin")


class FakeConn:
    def __init__(self) -> None:
        self.adjusted: list[int] = []

    def adjustWindow(self, channel: Any, n: int) -> None:
        self.adjusted.append(n)
        channel.localWindowLeft += n


def makeSession() -> tuple[SessionChannel, FakeChild, FakeConn]:
    config = SessionConfig({"HOME": "/h"}, "/h", "/bin/sh", lambda argv, env: None)
    conn = FakeConn()
    session = SessionChannel(config, None, localWindow=1000, conn=conn)
    child = FakeChild()
    session.child = child
    return session, child, conn


def test_eof_while_the_child_pauses_us_still_closes_stdin() -> None:
    # Twisted resumes a paused producer instead of closing the pipe when it
    # drains; so the session must unregister itself before closing stdin.
    session, child, conn = makeSession()
    session.localWindowLeft -= 800
    session.dataReceived(b"x" * 800)
    session.pauseProducing()
    session.localWindowLeft -= 100
    session.dataReceived(b"y" * 100)
    session.eofReceived()
    assert child.calls[-2:] == ["unregisterProducer", "closeStdin"]
    assert sum(conn.adjusted) == 800  # granted in batches of half the window


def test_env_is_refused_for_protected_names_and_after_start() -> None:
    env = SessionEnvironment({"HOME": "/h", "USER": "u", "PATH": "/bin:/usr/bin"})
    assert env.request("FOO", "bar")
    assert not env.request("HOME", "/evil")
    assert not env.request("USER", "evil")
    assert not env.request("SSHD_HOSTKEY", "x")
    assert env.request("PATH", "/custom")
    assert env.build("xterm")["TERM"] == "xterm"
    assert env.build()["PATH"] == "/custom"
    session, _, _ = makeSession()
    session.started = True
    import struct

    from twisted.conch.ssh.common import NS

    assert session.request_env(NS(b"A") + NS(b"b")) == 0
    assert session.request_window_change(struct.pack(">4L", 80, 24, 0, 0)) == 0
