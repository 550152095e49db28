# -*- test-case-name: tests.test_sshd_hangup -*-
"""
The daemon's stop hangs up its sessions: in memory, every open connection
is told why and closed, and the stop is bounded; with a real daemon (under
twistd and as the C{diego-sshd} script) and OpenSSH, a session's program
that traps SIGHUP records it when the daemon gets SIGTERM, with a pipe or a
terminal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION
from twisted.internet.task import Clock

from diegossh.ssh.openconnections import OpenConnections
from diegossh.sshd.hangup import HANGUP_GRACE, HANGUP_REASON, HangUpService
from tests.support.admission import AdmitAll
from tests.support.daemon import BASE_OPTIONS, freePort, startDaemon, waitForPort
from tests.support.eventually import eventuallyBlocking
from tests.support.keys import authorizedKeyLine, key, writePrivateKey

DIEGO_SSHD = str(Path(sys.executable).with_name("diego-sshd"))


class Admission(AdmitAll):
    maxStartups = 7


class Socket:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class Transport:
    def __init__(self) -> None:
        self.told: list[tuple[int, bytes]] = []
        self.transport = Socket()

    def sendDisconnect(self, code: int, reason: bytes) -> None:
        self.told.append((code, reason))


def test_every_connection_is_told_why_and_the_stop_waits_for_them() -> None:
    clock = Clock()
    connections = OpenConnections(Admission())
    one, two = Transport(), Transport()
    connections.opened(one)
    connections.opened(two)
    assert connections.maxStartups == 7  # the limits read through
    done: list[Any] = []
    HangUpService(connections, clock).stopService().addCallback(done.append)
    assert one.told == two.told == [(DISCONNECT_BY_APPLICATION, HANGUP_REASON)]
    connections.closed(one)
    assert done == []
    connections.closed(two)
    assert done == [None]
    assert clock.getDelayedCalls() == []


def test_a_connection_that_does_not_close_is_aborted() -> None:
    clock = Clock()
    connections = OpenConnections(Admission())
    stuck = Transport()
    connections.opened(stuck)
    done: list[Any] = []
    HangUpService(connections, clock).stopService().addCallback(done.append)
    clock.advance(HANGUP_GRACE)
    assert stuck.transport.aborted and done == []
    connections.closed(stuck)
    assert done == [None]
    assert clock.getDelayedCalls() == []


def test_nothing_open_stops_at_once() -> None:
    done: list[Any] = []
    HangUpService(OpenConnections(Admission()), Clock()).stopService().addCallback(done.append)
    assert done == [None]


# -- a real daemon, OpenSSH


def _dropIn(tmp: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    (tmp / "home").mkdir(exist_ok=True)
    identity = writePrivateKey(key("ed25519"), tmp / "id_ed25519")
    port = freePort()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp / "home"), "USER": "vcap"}
    with (tmp / "sshd.out").open("wb") as out:
        proc = subprocess.Popen(
            [DIEGO_SSHD, f"-address=127.0.0.1:{port}",
             f"-authorizedKey={authorizedKeyLine(key('ed25519'))}",
             "-hostKey=" + key("p256").toString("openssh").decode()],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp,
        )  # fmt: skip
    waitForPort(port, proc)
    return proc, port, identity


@pytest.mark.interop
@pytest.mark.slow
@pytest.mark.parametrize("pty", [False, True], ids=["pipe", "pty"])
@pytest.mark.parametrize("kind", ["twistd", "diego-sshd"])
def test_sigterm_hangs_up_the_sessions_programs(tmp_path: Path, kind: str, pty: bool) -> None:
    if kind == "twistd":
        daemon = startDaemon(tmp_path)
        proc, port, identity = daemon.proc, daemon.port, daemon.identity
    else:
        proc, port, identity = _dropIn(tmp_path)
    mark = tmp_path / "hup"
    program = f"trap 'echo HUP > {mark}; exit 0' HUP; echo started; sleep 30 & wait"
    argv = ["ssh", *BASE_OPTIONS, *(["-o", "RequestTTY=force"] if pty else []),
            "-p", str(port), "-i", str(identity), "vcap@127.0.0.1", program]  # fmt: skip
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == b"started"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        eventuallyBlocking(mark.exists, "the program's SIGHUP trap", 5)
        assert mark.read_text() == "HUP\n"
        _, err = client.communicate(timeout=10)
        assert b"the daemon is shutting down" in err, err
        assert time.monotonic() - signalled < 5
    finally:
        for each in (client, proc):
            if each.poll() is None:
                each.kill()
                each.wait()
