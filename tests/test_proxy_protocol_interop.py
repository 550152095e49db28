"""
The PROXY protocol with a real HAProxy (Debian's C{haproxy}, installed by
C{make system-deps}) in TCP mode with C{send-proxy-v2} and PROXY health
checks, in front of a real C{twistd diego-ssh-proxy} (C{--proxyProtocol},
trusting 127.0.0.1, HAProxy's source) and a real C{twistd diego-sshd}; the
client is OpenSSH bound to 127.0.0.2, so its address differs from the
balancer's.
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
from tests.support.proxy import (
    CLIENT_OPTIONS,
    Proxy,
    daemonBehindRoute,
    lrp,
    startProxy,
)

pytestmark = pytest.mark.interop

HAPROXY = Path("/usr/sbin/haproxy")
CLIENT = "127.0.0.2"

# What docs/operations.md shows: TCP mode, the PROXY v2 header on every
# connection to the proxy and on its health checks (a v2 LOCAL header).
HAPROXY_CONFIG = """\
global
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend ssh
    bind 127.0.0.1:{listen}
    default_backend diego_ssh_proxies

backend diego_ssh_proxies
    server proxy1 127.0.0.1:{proxy} send-proxy-v2 check check-send-proxy inter 200ms
"""


@dataclass
class World:
    proxy: Proxy
    daemon: Daemon
    haproxy: subprocess.Popen[bytes]
    port: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not HAPROXY.exists():
        pytest.fail("HAPROXY IS NOT INSTALLED (/usr/sbin/haproxy): run `make system-deps`")
    tmp = tmp_path_factory.mktemp("proxyprotocol")
    daemon, route = daemonBehindRoute(tmp)
    # No exemption for 127.0.0.1 (the balancer): its health checks must not
    # cost it penalties on their own.
    proxy = startProxy(
        tmp,
        [lrp("app", "127.0.0.1", daemon.port, route)],
        extraArgs=(
            "--proxyProtocol",
            "--proxyProtocolTrusted=127.0.0.1",
            "--perSourcePenalties=noauth:5s",
        ),
    )
    port = freePort()
    config = tmp / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(listen=port, proxy=proxy.port))
    haproxy = subprocess.Popen(
        [str(HAPROXY), "-db", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=(tmp / "haproxy.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        waitForPort(port, haproxy)
        yield World(proxy, daemon, haproxy, port)
    finally:
        haproxy.terminate()
        haproxy.wait(10)
        proxy.stop()
        daemon.stop()


def sshThroughBalancer(w: World, *command: str) -> subprocess.CompletedProcess[bytes]:
    argv = ["sshpass", "-e", "ssh", *CLIENT_OPTIONS, "-o", "PubkeyAuthentication=no",
            "-b", CLIENT, "-p", str(w.port), "diego:app/0@127.0.0.1", *command]  # fmt: skip
    return subprocess.run(
        argv, env=w.proxy.env(), capture_output=True, stdin=subprocess.DEVNULL, timeout=60
    )


def firstBytes(source: str, port: int, send: bytes) -> tuple[bytes, bool]:
    """
    What the proxy sends back to a connection from C{source} that sends
    C{send}: everything until it closes (or 10 s pass; with nothing sent,
    until the first line), and whether it closed.
    """
    with socket.socket() as s:
        s.settimeout(10)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(send)
        received = b""
        try:
            while chunk := s.recv(4096):
                received += chunk
                if b"\n" in received and not send:
                    return received, False
        except ConnectionResetError:
            pass
        except TimeoutError:
            return received, False
        return received, True


def test_login_through_haproxy_logs_the_client_address(world: World) -> None:
    result = sshThroughBalancer(world, "echo through-the-balancer")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"through-the-balancer\n"

    def logins() -> list[dict[str, Any]]:
        return [
            e
            for e in world.proxy.accessEvents()
            if e.get("event") == "login" and e.get("outcome") == "success"
        ]

    login = eventuallyBlocking(logins, "a successful login in the access log", 10)[-1]
    host, _, port = login["client"].rpartition(":")
    assert host == CLIENT, login
    assert int(port) not in (world.port, world.proxy.port)
    log = world.proxy.log.read_text()
    assert f"Successful remote access by {login['client']}" in log


def test_a_trusted_address_without_a_header_is_refused(world: World) -> None:
    assert firstBytes("127.0.0.1", world.proxy.port, b"SSH-2.0-OpenSSH_9.6\r\n") == (b"", True)
    assert "no PROXY header" in world.proxy.log.read_text()


def test_a_header_from_elsewhere_is_refused_and_direct_clients_proceed(world: World) -> None:
    # A direct client is admitted at accept and greeted at once; the header
    # it sends first closes the connection (and charges it "protocol").
    header = b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 22\r\n"
    received, closed = firstBytes("127.0.0.3", world.proxy.port, header)
    assert closed and received.startswith(b"SSH-2.0-")
    assert "a PROXY header from an address not in --proxyProtocolTrusted" in (
        world.proxy.log.read_text()
    )
    received, closed = firstBytes("127.0.0.4", world.proxy.port, b"")
    assert received.startswith(b"SSH-2.0-") and not closed


def test_health_checks_pass_and_cost_nothing(world: World) -> None:
    # HAProxy checks every 200 ms with a v2 LOCAL header; charged 5 s of
    # noauth each (--perSourcePenalties=noauth:5s), five would get the
    # balancer's address refused (min 15 s).
    def checks() -> int | None:
        count = world.proxy.log.read_text().count("a health check (PROXY LOCAL) from 127.0.0.1")
        return count if count >= 6 else None

    eventuallyBlocking(checks, "six HAProxy health checks reaching the proxy", 20)
    result = sshThroughBalancer(world, "true")
    assert result.returncode == 0, result.stderr
    log = world.proxy.log.read_text()
    assert "refusing connections from 127.0.0.1 " not in log
    assert "Traceback" not in log
