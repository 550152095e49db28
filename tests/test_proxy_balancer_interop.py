# -*- test-case-name: tests.test_proxy_balancer_interop -*-
"""
Two proxies behind a real HAProxy (Debian's C{haproxy}, installed by C{make
system-deps}) in TCP mode with C{send-proxy-v2}, health-checked on
C{GET /ready}: logins through the balancer are spread over both; SIGTERM to
the one carrying a transfer: the transfer completes, HAProxy marks that
proxy down, new logins go to the other, and the drained one exits 0; then,
with a new proxy in its place, kill -9 the other: new logins keep working.
The configuration is the one docs/operations.md shows.
"""

from __future__ import annotations

import csv
import io
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, freePort, waitForPort
from tests.support.eventually import eventuallyBlocking
from tests.support.proxy import CLIENT_OPTIONS, Proxy, daemonBehindRoute, lrp, startProxy

pytestmark = [pytest.mark.interop, pytest.mark.slow]

HAPROXY = Path("/usr/sbin/haproxy")
# The client's own address, not the balancer's: what each proxy must log.
CLIENT = "127.0.0.2"
CHUNKS, CHUNK = 40, 100_000
SLOW_DOWNLOAD = f"for i in $(seq {CHUNKS}); do head -c {CHUNK} /dev/zero; sleep 0.1; done"

# docs/operations.md, "Drain and upgrade": PROXY v2 on the SSH port, HTTP
# checks of /ready on the health port; fall 1 so a draining proxy is out at
# its first 503 (the proxy keeps accepting for a second after SIGTERM).
HAPROXY_CONFIG = """\
global
    maxconn 256
    stats socket {socket} level admin

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch

frontend ssh
    bind 127.0.0.1:{listen}
    default_backend diego_ssh_proxies

backend diego_ssh_proxies
    balance roundrobin
    option httpchk GET /ready
    default-server send-proxy-v2 check inter 200ms fall 1 rise 2
    server proxy1 127.0.0.1:{port1} check port {health1}
    server proxy2 127.0.0.1:{port2} check port {health2}
"""


class Balancer:
    def __init__(self, tmp: Path, daemon: Daemon, route: dict[str, object]) -> None:
        self.tmp = tmp
        self.lrps = [lrp("app", "127.0.0.1", daemon.port, route)]
        self.ports = [(freePort(), freePort()), (freePort(), freePort())]
        self.proxies: list[Proxy] = []
        for slot in (0, 1):
            self.proxies.append(self.startProxy(slot))
        self.port = freePort()
        self.socket = tmp / "haproxy.sock"
        config = tmp / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(
                socket=self.socket, listen=self.port,
                port1=self.ports[0][0], health1=self.ports[0][1],
                port2=self.ports[1][0], health2=self.ports[1][1],
            )
        )  # fmt: skip
        self.haproxy = subprocess.Popen(
            [str(HAPROXY), "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=(tmp / "haproxy.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        waitForPort(self.port, self.haproxy)

    def startProxy(self, slot: int, generation: int = 0) -> Proxy:
        where = self.tmp / f"proxy{slot + 1}-{generation}"
        where.mkdir()
        port, health = self.ports[slot]
        return startProxy(
            where, self.lrps, port=port, health=health,
            extraArgs=("--proxyProtocol", "--proxyProtocolTrusted=127.0.0.1",
                       "--drainTimeout=60s"),
        )  # fmt: skip

    def states(self) -> dict[str, str]:
        """Each server's status as HAProxy sees it (UP, DOWN, ...)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "diego_ssh_proxies" and row["svname"].startswith("proxy")
        }

    def ssh(self, command: str) -> list[str]:
        return ["sshpass", "-e", "ssh", *CLIENT_OPTIONS, "-o", "PubkeyAuthentication=no",
                "-b", CLIENT, "-p", str(self.port), "diego:app/0@127.0.0.1", command]  # fmt: skip

    def login(self) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.ssh("echo in"), env=self.proxies[0].env(),
                              capture_output=True, timeout=60, check=False)  # fmt: skip

    def stop(self) -> None:
        if self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(10)
        for proxy in self.proxies:
            if proxy.proc.poll() is None:
                proxy.proc.kill()
                proxy.proc.wait(10)


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    if not HAPROXY.exists():
        pytest.fail("HAPROXY IS NOT INSTALLED (/usr/sbin/haproxy): run `make system-deps`")
    daemon, route = daemonBehindRoute(tmp_path)
    world = Balancer(tmp_path, daemon, route)
    try:
        yield world
    finally:
        world.stop()
        daemon.stop()


def _logins(proxy: Proxy) -> int:
    return len([e for e in proxy.accessEvents() if e["event"] == "login"])


def test_drain_and_kill_behind_haproxy(balancer: Balancer) -> None:
    eventuallyBlocking(
        lambda: balancer.states() == {"proxy1": "UP", "proxy2": "UP"}, "both proxies up", 20
    )
    for _ in range(4):
        result = balancer.login()
        assert result.returncode == 0 and result.stdout == b"in\n", result.stderr
    first, second = balancer.proxies
    assert (_logins(first), _logins(second)) == (2, 2)  # round robin
    for proxy in (first, second):
        clients = {e["client"].rpartition(":")[0] for e in proxy.accessEvents()}
        assert clients == {CLIENT}, clients

    # A transfer through the balancer, to whichever proxy is next.
    out = balancer.tmp / "download"
    with out.open("wb") as sink:
        transfer = subprocess.Popen(balancer.ssh(SLOW_DOWNLOAD), stdout=sink,
                                    stderr=subprocess.PIPE, env=first.env())  # fmt: skip
    eventuallyBlocking(lambda: out.stat().st_size > 0, "the transfer under way", 20)
    carrier = first if _logins(first) == 3 else second
    other = second if carrier is first else first
    name = "proxy1" if carrier is first else "proxy2"
    assert _logins(carrier) == 3

    carrier.proc.send_signal(signal.SIGTERM)
    eventuallyBlocking(lambda: balancer.states()[name] != "UP", f"HAProxy marks {name} down", 5)
    before = _logins(other)
    for _ in range(3):
        result = balancer.login()
        assert result.returncode == 0 and result.stdout == b"in\n", result.stderr
    assert (_logins(other), _logins(carrier)) == (before + 3, 3)
    _, err = transfer.communicate(timeout=60)
    assert (transfer.returncode, out.stat().st_size) == (0, CHUNKS * CHUNK), err
    assert carrier.proc.wait(20) == 0

    # A new proxy in the drained one's place; then the other dies hard.
    slot = balancer.proxies.index(carrier)
    balancer.proxies[slot] = replacement = balancer.startProxy(slot, generation=1)
    eventuallyBlocking(lambda: balancer.states()[name] == "UP", f"{name} back up", 20)
    other.proc.kill()
    other.proc.wait(10)
    started = time.monotonic()
    for _ in range(4):
        result = balancer.login()
        assert result.returncode == 0 and result.stdout == b"in\n", result.stderr
    assert _logins(replacement) == 4
    assert time.monotonic() - started < 30
