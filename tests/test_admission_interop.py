"""
Before login, end to end (issue 12 items 2, 3 and 6): real C{twistd} servers,
real sockets on loopback addresses, real OpenSSH clients.

  - a flood of silent connections from 127.0.0.3 is cut at the proxy's
    per-source limit, and an OpenSSH login from 127.0.0.2 goes through;
  - a password-guessing client from 127.0.0.3 is refused at accept (no byte,
    no key exchange) after its third failed connection, while 127.0.0.2 logs
    in;
  - 50 simultaneous honest logins from one address through the proxy, with
    the defaults, all succeed;
  - diego-sshd out of descriptors (a low C{RLIMIT_NOFILE}): connections wait
    in the backlog instead of being accepted and dropped, one log line per
    episode, an established session goes on, and once descriptors are free
    the waiting connections and a new OpenSSH login are served.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.attacks import Servers, startServers
from tests.support.daemon import TWISTD, Daemon, freePort, waitForPort
from tests.support.keys import authorizedKeyLine, key, writePrivateKey

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

# The test servers exempt 127.0.0.1, every other test's client address
# (tests.support.daemon.exemptTestClients); here floods and guesses come from
# ATTACKER, the honest user from OTHER, the 50 logins from NAT.
ATTACKER = "127.0.0.3"
OTHER = "127.0.0.2"
NAT = "127.0.0.4"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    pair = startServers(tmp_path)
    try:
        yield pair
    finally:
        pair.stop()


def greeting(
    port: int, source: str = ATTACKER, timeout: float = 5.0
) -> tuple[socket.socket, bytes | None]:
    """
    A connection from C{source} and what the server said first: its version
    line, C{b""} when it closed at once, C{None} when it said nothing within
    C{timeout} (the connection still waits in the backlog).
    """
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    try:
        data = sock.recv(256)
    except TimeoutError:
        return sock, None
    except OSError:
        data = b""
    return sock, data


def proxyLogin(
    servers: Servers, source: str, password: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    options = [f"BindAddress={source}", "NumberOfPasswordPrompts=1"]
    argv = servers.proxy.ssh(f"diego:{servers.guid}/0", "echo", "logged-in", options=options)
    env = servers.proxy.env() if password is None else servers.proxy.env(password)
    return subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)


def test_a_silent_flood_from_one_address_does_not_stop_another(servers: Servers) -> None:
    flood: list[socket.socket] = []
    answers: list[bytes | None] = []
    try:
        for _ in range(300):
            sock, first = greeting(servers.proxy.port)
            flood.append(sock)
            answers.append(first)
        admitted = sum(1 for a in answers if a and a.startswith(b"SSH-2.0-"))
        refused = sum(1 for a in answers if a == b"")
        # the proxy's per-source limit (60): the rest closed before any byte
        assert (admitted, refused) == (60, 240), answers[:3]
        result = proxyLogin(servers, OTHER)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == b"logged-in"
    finally:
        for sock in flood:
            sock.close()


def test_a_guessing_client_is_refused_at_accept_and_others_log_in(servers: Servers) -> None:
    outcomes: list[str] = []
    for _ in range(8):
        guess = proxyLogin(servers, ATTACKER, password="wrong")
        if b"Permission denied" in guess.stderr:
            outcomes.append("failed")
        elif b"kex_exchange_identification" in guess.stderr:
            # closed (or reset, when the client's version line was already
            # on its way) before the server sent a byte
            outcomes.append("refused")
        else:
            outcomes.append(f"other: {guess.returncode} {guess.stderr[-200:]!r}")
        if outcomes[-3:] == ["refused"] * 3:
            break
    # three failed connections (3 x 5 s reaches min, 15 s); the third's charge
    # may land just after the next connection was accepted
    assert outcomes[:3] == ["failed"] * 3, outcomes
    assert outcomes[-3:] == ["refused"] * 3, outcomes
    assert outcomes.count("failed") <= 4, outcomes
    started = time.monotonic()
    result = proxyLogin(servers, OTHER)
    print(f"login from {OTHER} while {ATTACKER} is refused: {time.monotonic() - started:.2f}s")
    assert result.returncode == 0, result.stderr
    # and the guesser is still refused, with no key exchange
    sock, first = greeting(servers.proxy.port)
    sock.close()
    assert first == b""


def test_fifty_simultaneous_logins_from_one_address(servers: Servers) -> None:
    argv = servers.proxy.ssh(
        f"diego:{servers.guid}/0", "echo", "logged-in", options=[f"BindAddress={NAT}"]
    )
    procs = [
        subprocess.Popen(
            argv,
            env=servers.proxy.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(50)
    ]
    failures = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            if proc.returncode != 0 or out.strip() != b"logged-in":
                failures.append((proc.returncode, err[-200:]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert failures == []


# -- out of descriptors

NOFILE = 48


def startLimitedDaemon(tmp: Path) -> Daemon:
    """diego-sshd with at most L{NOFILE} descriptors."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    identity = writePrivateKey(key("ed25519"), tmp / "id_ed25519")
    port = freePort()
    log = tmp / "sshd.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "USER": "vcap",
        "SSHD_AUTHKEY": authorizedKeyLine(key("ed25519")),
    }
    if os.environ.get("PYTHONPATH"):  # another checkout's code, to see the test fail there
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    argv = [
        TWISTD, "-n", "--pidfile=", "--logfile", str(log), "diego-sshd",
        f"--address=127.0.0.1:{port}",
    ]  # fmt: skip
    launcher = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, *argv], env=env, cwd=str(tmp), stdin=subprocess.DEVNULL
    )
    try:
        waitForPort(port, proc)
    except Exception:
        proc.kill()
        raise
    return Daemon(port, identity, home, proc, log)


def test_out_of_descriptors_pauses_accepting_and_recovers(tmp_path: Path) -> None:
    daemon = startLimitedDaemon(tmp_path)
    held: list[socket.socket] = []
    waiting: list[socket.socket] = []
    session = None
    try:
        # an established session: cat echoes what it is sent
        session = subprocess.Popen(
            daemon.ssh("cat"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert session.stdin is not None and session.stdout is not None
        session.stdin.write(b"before\n")
        session.stdin.flush()
        assert session.stdout.readline() == b"before\n"
        # silent connections until the daemon has no descriptor left
        for _ in range(NOFILE):
            sock, first = greeting(daemon.port, timeout=1.5)
            assert first != b"", "a connection was closed instead of waiting"
            if first is None:
                waiting.append(sock)
                break
            held.append(sock)
        assert waiting, "the daemon never ran out of descriptors"
        for _ in range(2):
            sock, first = greeting(daemon.port, timeout=0.5)
            assert first is None
            waiting.append(sock)
        # the established session goes on
        session.stdin.write(b"during\n")
        session.stdin.flush()
        assert session.stdout.readline() == b"during\n"
        time.sleep(1.5)  # a retry or two, still out of descriptors
        text = daemon.log.read_text()
        assert text.count("out of file descriptors") == 1, text[-2000:]
        assert "EMFILE recovery" not in text and "Could not accept" not in text
        # free some: the waiting connections are served, and a new login works
        for sock in held:
            sock.close()
        for sock in waiting:
            sock.settimeout(15)
            assert sock.recv(256).startswith(b"SSH-2.0-")
            sock.close()
        login = subprocess.run(
            daemon.ssh("echo", "back", options=(f"BindAddress={OTHER}",)),
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert login.returncode == 0, login.stderr
        assert login.stdout == b"back\n"
        session.stdin.write(b"after\n")
        session.stdin.flush()
        assert session.stdout.readline() == b"after\n"
        text = daemon.log.read_text()
        assert text.count("out of file descriptors") == 1
        assert "accepting connections again" in text
    finally:
        for sock in held + waiting:
            sock.close()
        if session is not None:
            session.kill()
            session.wait()
        daemon.stop()
