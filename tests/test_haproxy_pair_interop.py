# -*- test-case-name: tests.test_haproxy_pair_interop -*-
"""
Two real proxies behind one real HAProxy (Debian's C{haproxy}), as a
platform runs them (docs/operations.md): TCP mode, round robin, the PROXY v2
header on every connection, and an HTTP health check on each proxy's health
listener. One daemon behind both, through the same route table; the client
is OpenSSH bound to 127.0.0.2, so its address differs from the balancer's.

What an operator relies on, shown with the real programs: logins are spread
over both proxies and each logs the client's real address; a proxy killed
with SIGKILL costs nothing to new logins (HAProxy retries the other one and
then marks the dead one down).

Each test builds its own pair, since one of them kills a proxy.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, freePort, waitForPort
from tests.support.eventually import eventuallyBlocking
from tests.support.proxy import CLIENT_OPTIONS, Proxy, daemonBehindRoute, lrp, startProxy

pytestmark = [pytest.mark.interop, pytest.mark.slow]

HAPROXY = Path("/usr/sbin/haproxy")
CLIENT = "127.0.0.2"

# What docs/operations.md shows, with test timings: the health check is an
# HTTP GET of each proxy's health listener (HEALTH_PATH), every 200 ms; a
# server is down after two failed checks; a connection refused by a proxy
# (dead, or draining with its listener closed) is retried on the other.
HEALTH_PATH = "/"
HAPROXY_CONFIG = """\
global
    maxconn 256
    stats socket {stats} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch

frontend ssh
    bind 127.0.0.1:{listen}
    default_backend diego_ssh_proxies

backend diego_ssh_proxies
    balance roundrobin
    option httpchk
    http-check send meth GET uri {path}
    default-server send-proxy-v2 check inter 200ms fall 2 rise 2
{servers}
"""
SERVER = "    server {name} 127.0.0.1:{port} check port {health}"


@dataclass
class Pair:
    proxies: dict[str, Proxy]
    daemon: Daemon
    haproxy: subprocess.Popen[bytes]
    port: int
    stats: Path

    def ssh(self, *command: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(*command),
            env=next(iter(self.proxies.values())).env(),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    def argv(self, *command: str) -> list[str]:
        return ["sshpass", "-e", "ssh", *CLIENT_OPTIONS, "-o", "PubkeyAuthentication=no",
                "-b", CLIENT, "-p", str(self.port), "diego:app/0@127.0.0.1", *command]  # fmt: skip

    def status(self) -> dict[str, str]:
        """
        Each server's status as HAProxy sees it (C{UP}, C{DOWN}, ...), from
        C{show stat} on its admin socket.
        """
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            text = b""
            while chunk := s.recv(65536):
                text += chunk
        lines = text.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        status: dict[str, str] = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "diego_ssh_proxies" and row.get("svname") in self.proxies:
                status[row["svname"]] = row["status"]
        return status

    def successfulLogins(self, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.proxies[name].accessEvents()
            if e.get("event") == "login" and e.get("outcome") == "success"
        ]

    def waitForStatus(self, wanted: dict[str, str], timeout: float = 20) -> None:
        eventuallyBlocking(
            lambda: self.status() == wanted or None, f"HAProxy to see {wanted}", timeout
        )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    if not HAPROXY.exists():
        pytest.fail("HAProxy is not installed (/usr/sbin/haproxy): run `make system-deps`")
    daemon, route = daemonBehindRoute(tmp_path)
    proxies: dict[str, Proxy] = {}
    haproxy = None
    try:
        for name in ("proxy1", "proxy2"):
            home = tmp_path / name
            home.mkdir()
            proxies[name] = startProxy(
                home,
                [lrp("app", "127.0.0.1", daemon.port, route)],
                extraArgs=("--proxyProtocol", "--proxyProtocolTrusted=127.0.0.1"),
            )
        port = freePort()
        stats = tmp_path / "haproxy.sock"
        servers = "\n".join(
            SERVER.format(name=name, port=p.port, health=p.healthPort)
            for name, p in proxies.items()
        )
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(listen=port, stats=stats, path=HEALTH_PATH, servers=servers)
        )
        haproxy = subprocess.Popen(
            [str(HAPROXY), "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=(tmp_path / "haproxy.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        waitForPort(port, haproxy)
        world = Pair(proxies, daemon, haproxy, port, stats)
        world.waitForStatus({"proxy1": "UP", "proxy2": "UP"})
        yield world
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(10)
        for proxy in proxies.values():
            proxy.stop()
        daemon.stop()


def test_logins_are_spread_over_both_and_log_the_client_address(pair: Pair) -> None:
    for n in range(6):
        result = pair.ssh(f"echo login-{n}")
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"login-{n}\n".encode()

    def everyLogin() -> dict[str, list[dict[str, Any]]]:
        seen = {name: pair.successfulLogins(name) for name in pair.proxies}
        return seen if sum(map(len, seen.values())) == 6 else {}

    seen = eventuallyBlocking(everyLogin, "six logins in the two access logs", 10)
    # round robin: three each
    assert {name: len(logins) for name, logins in seen.items()} == {"proxy1": 3, "proxy2": 3}
    for logins in seen.values():
        for login in logins:
            assert login["client"].rpartition(":")[0] == CLIENT, login


def test_a_killed_proxy_costs_new_logins_nothing(pair: Pair) -> None:
    victim = pair.proxies["proxy1"]
    victim.proc.kill()
    victim.proc.wait(10)
    # At once, before HAProxy's checks notice: a connection sent to the dead
    # one is refused and retried on the other (option redispatch).
    for n in range(4):
        result = pair.ssh(f"echo after-kill-{n}")
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"after-kill-{n}\n".encode()
    pair.waitForStatus({"proxy1": "DOWN", "proxy2": "UP"})
    for _ in range(2):
        result = pair.ssh("true")
        assert result.returncode == 0, result.stderr
    assert len(pair.successfulLogins("proxy2")) == 6
