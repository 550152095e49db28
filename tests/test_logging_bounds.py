"""
What a client that never logs in can make either service write (issue 12,
item 5), end to end: real diego-sshd and proxy processes (twistd, log files,
the access log), flooded from one address with 200 KB user names and with
truncated key exchanges (tests/support/attacks.py's HostileClient); the
logs grow by no more than the bound docs/prelogin.md gives ("Logs").

Before this, the 200 KB names alone made the proxy write 1.5 times what the
attacker sent.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from diegossh.ssh import logthrottle
from tests.support import attacks
from tests.support.attacks import HostileClient, Servers, Target, string

pytestmark = pytest.mark.interop

HUGE_NAME = 200_000
# docs/prelogin.md, "Logs": a log line before login is at most LINE_BYTES
# (every peer-supplied field is 128 characters and a marker), an access-log
# event at most ACCESS_BYTES (JSON, each field also in log_flattened); a
# source gets PER_SOURCE of each kind per window, plus one summary. The flood
# below is short, but may straddle two windows. The proxy's own log also
# carries the access events, as text.
LINE_BYTES = 1024
ACCESS_BYTES = 4096
WINDOW_LINES = logthrottle.PER_SOURCE + 1
BOUNDS = {
    "diego-sshd log": 2 * WINDOW_LINES * LINE_BYTES,
    "proxy log": 2 * 2 * WINDOW_LINES * LINE_BYTES,
    "access log": 2 * WINDOW_LINES * ACCESS_BYTES,
}
CONNECTIONS = 30
PARALLEL = 10


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    # Not the test suite's usual exempt list (127.0.0.1 is the attacker
    # here), and no penalties, so that every connection of the flood is let in.
    args = ("--perSourcePenalties=no",)
    pair = attacks.startServers(tmp_path, daemonArgs=args, proxyArgs=args)
    try:
        yield pair
    finally:
        pair.stop()


def sizes(servers: Servers) -> dict[str, int]:
    logs = {
        "diego-sshd log": servers.daemon.log,
        "proxy log": servers.proxy.log,
        "access log": servers.proxy.accessLog,
    }
    return {name: path.stat().st_size if path.exists() else 0 for name, path in logs.items()}


def hugeNames(port: int) -> int:
    """
    One connection: key exchange, then user authentication requests with a
    200 KB user name until the server hangs up (MaxAuthTries). Bytes sent.
    """
    name = "u" * HUGE_NAME + "\n\x1b[31m"
    client = HostileClient(Target(port, user=name, password="wrong"), timeout=10)
    sent = 0
    try:
        client.handshake()
        client.sendMessage(attacks.MSG_SERVICE_REQUEST, string("ssh-userauth"))
        client.expect({attacks.MSG_SERVICE_ACCEPT}, 10)
        for _ in range(10):
            body = client.authRequest("password")
            client.sendMessage(attacks.MSG_USERAUTH_REQUEST, body)
            sent += len(body)
            if client.next(10) is None:
                break
    except (OSError, attacks.SSHError):
        pass
    finally:
        client.close()
    return sent


def truncatedKexInit(port: int) -> int:
    """
    One connection: a version line with control characters, then a KEXINIT
    cut short after its cookie and a name list's length.
    """
    client = HostileClient(Target(port, user="x", password="x"), timeout=10)
    sent = 0
    try:
        line = b"SSH-2.0-" + b"\x1b[2J" * 50 + b"\r\n"
        client.sock.sendall(line)
        payload = bytes((attacks.MSG_KEXINIT,)) + os.urandom(16) + struct.pack(">L", 1000)
        packet = attacks._Plain().seal(payload)
        client.sock.sendall(packet)
        sent = len(line) + len(packet)
        while client.next(5) is not None:
            pass
    except (OSError, attacks.SSHError):
        pass
    finally:
        client.close()
    return sent


@pytest.mark.parametrize("service", ["proxy", "daemon"])
def test_a_flood_before_login_writes_no_more_than_the_bound(servers: Servers, service: str) -> None:
    port = servers.proxy.port if service == "proxy" else servers.daemon.port
    before = sizes(servers)
    # The proxy answers each wrong password about a second late (the password
    # slow-down, docs/prelogin.md): one connection takes its six tries in ~6 s,
    # so the connections run PARALLEL at a time (under the per-source limits).
    with ThreadPoolExecutor(PARALLEL) as pool:
        sent = sum(pool.map(hugeNames, [port] * CONNECTIONS))
    for _ in range(CONNECTIONS):
        sent += truncatedKexInit(port)
    # The daemon and proxy have written what they will: the last connection
    # is closed, and every log line is written before its socket closes.
    assert attacks.waitFor(lambda: attacks.socketCount(port) == 0, 10)
    grown = {name: size - before[name] for name, size in sizes(servers).items()}
    assert sent > CONNECTIONS * HUGE_NAME
    for name, growth in grown.items():
        assert growth <= BOUNDS[name], f"{name} grew by {growth} bytes for {sent} sent"
    text = (servers.proxy.log if service == "proxy" else servers.daemon.log).read_text()
    assert "u" * (HUGE_NAME // 100) not in text
    assert "\x1b" not in text
    assert "Got remote error" not in text
    if service == "proxy":
        # JSON lines, as docs/proxy.md says: one object per line, no 0x1E.
        data = servers.proxy.accessLog.read_bytes()
        assert b"\x1e" not in data
        denied = [json.loads(line) for line in data.splitlines()]
        assert denied and all(e["outcome"] == "denied" for e in denied)


def test_an_ordinary_logout_is_not_an_error(tmp_path: Path) -> None:
    """
    OpenSSH logs out with a DISCONNECT, code 11 ("disconnected by user"), and
    the proxy does the same to the daemon: info, not "Got remote error".
    """
    servers = attacks.startServers(tmp_path)
    try:
        for argv, env in [
            (servers.daemon.ssh("true"), None),
            (servers.proxy.ssh("diego:app/0", "true"), servers.proxy.env()),
        ]:
            result = subprocess.run(
                argv, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=20
            )
            assert result.returncode == 0, result.stderr
    finally:
        servers.stop()
    for log in (servers.daemon.log, servers.proxy.log):
        text = log.read_text()
        goodbyes = [line for line in text.splitlines() if "disconnected:" in line]
        assert goodbyes, f"no goodbye logged in {log.name}"
        assert all("#info]" in line and "(code 11)" in line for line in goodbyes), goodbyes
        assert "Got remote error" not in text
        assert "#error]" not in text and "#critical]" not in text
