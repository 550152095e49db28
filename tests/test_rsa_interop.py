"""
RSA with real OpenSSH (issue 14):

- the daemon and the proxy with an RSA host key (as BOSH's
  C{diego.ssh_proxy.host_key} is) take a client that knows only C{ssh-rsa}
  for RSA host keys, as the cf CLI on golang.org/x/crypto before November
  2021 does (OpenSSH 9 plays it with C{-o HostKeyAlgorithms=ssh-rsa}); with
  C{--allowedHostKeyAlgorithms} leaving it out, that client is refused and a
  current one still logs in;
- the proxy logs in to a stock OpenSSH sshd (which, since 8.8, refuses
  C{ssh-rsa} signatures) with an RSA route key.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, runClient, startDaemon
from tests.support.keys import key
from tests.support.proxy import CLIENT_OPTIONS, Proxy, fingerprintOf, lrp, startProxy
from tests.support.stocksshd import USER, StockSSHD, startStockSSHD

pytestmark = pytest.mark.interop

RSA_ROUTE_KEY = key("rsa")
WITHOUT_SSH_RSA = "--allowedHostKeyAlgorithms=rsa-sha2-512,rsa-sha2-256,ssh-ed25519"
NEGOTIATED_SSH_RSA = b"kex: host key algorithm: ssh-rsa"


@dataclass
class World:
    hostKey: Path
    daemon: Daemon
    strictDaemon: Daemon
    stock: StockSSHD
    proxy: Proxy
    strictProxy: Proxy


def rsaHostKey(path: Path) -> Path:
    """An RSA host key in PEM, as BOSH's job renders one."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rsa")
    hostKey = rsaHostKey(tmp / "rsa_host_key")
    (tmp / "d1").mkdir()
    (tmp / "d2").mkdir()
    daemon = startDaemon(tmp / "d1", extraArgs=(f"--hostKey={hostKey}",))
    strictDaemon = startDaemon(tmp / "d2", extraArgs=(f"--hostKey={hostKey}", WITHOUT_SSH_RSA))
    # The route key, where the stock sshd's user may read it (sshd reads
    # authorized keys as that user).
    authorized = Path("/tmp") / USER / f"authorized_keys-{uuid.uuid4().hex}"
    stock = None
    proxies: list[Proxy] = []
    try:
        stock = startStockSSHD(tmp, f"PubkeyAuthentication yes\nAuthorizedKeysFile {authorized}\n")
        authorized.write_text(RSA_ROUTE_KEY.public().toString("openssh").decode() + "\n")
        os.chown(authorized, *_ids(USER))
        daemonRoute = {
            "container_port": 2222,
            "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
            "user": "vcap",
            "private_key": key("ed25519").toString("openssh").decode(),
        }
        stockRoute = {
            "container_port": 2222,
            "host_fingerprint": fingerprintOf(stock.hostKeyPub),
            "user": USER,
            "private_key": RSA_ROUTE_KEY.toString("openssh").decode(),
        }
        lrps = [
            lrp("app", "127.0.0.1", daemon.port, daemonRoute),
            lrp("stock", "127.0.0.1", stock.port, stockRoute),
        ]
        for name, extra in (("p1", ()), ("p2", (WITHOUT_SSH_RSA,))):
            (tmp / name).mkdir()
            args = ("--communicationTimeout=10s", f"--hostKey={hostKey}", *extra)
            proxies.append(startProxy(tmp / name, lrps, extraArgs=args))
        yield World(hostKey, daemon, strictDaemon, stock, proxies[0], proxies[1])
    finally:
        for each in proxies:
            each.stop()
        daemon.stop()
        strictDaemon.stop()
        if stock is not None:
            stock.stop()
        authorized.unlink(missing_ok=True)


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def daemonLogin(daemon: Daemon, *options: str) -> subprocess.CompletedProcess[bytes]:
    argv = ["ssh", *CLIENT_OPTIONS, "-o", "BatchMode=yes", "-v", "-p", str(daemon.port),
            "-i", str(daemon.identity)]  # fmt: skip
    for option in options:
        argv += ["-o", option]
    return runClient([*argv, "vcap@127.0.0.1", "echo logged-in"], timeout=60)


def proxyLogin(proxy: Proxy, user: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    argv = proxy.ssh(user, "echo logged-in", options=options)
    # -v after ssh's name: the negotiated host key algorithm is a debug line.
    argv.insert(argv.index("ssh") + 1, "-v")
    return runClient(argv, env=proxy.env(), timeout=60)


# -- an old client: ssh-rsa only


def test_an_ssh_rsa_only_client_logs_into_the_daemon(world: World) -> None:
    result = daemonLogin(world.daemon, "HostKeyAlgorithms=ssh-rsa")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"logged-in\n"
    assert NEGOTIATED_SSH_RSA in result.stderr


def test_an_ssh_rsa_only_client_logs_in_through_the_proxy(world: World) -> None:
    result = proxyLogin(world.proxy, "diego:app/0", "HostKeyAlgorithms=ssh-rsa")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"logged-in\n"
    assert NEGOTIATED_SSH_RSA in result.stderr


# -- turned off


@pytest.mark.parametrize("which", ["daemon", "proxy"])
def test_turned_off_refuses_the_old_client_and_keeps_current_ones(world: World, which: str) -> None:
    def login(*options: str) -> subprocess.CompletedProcess[bytes]:
        if which == "daemon":
            return daemonLogin(world.strictDaemon, *options)
        return proxyLogin(world.strictProxy, "diego:app/0", *options)

    old = login("HostKeyAlgorithms=ssh-rsa")
    assert old.returncode == 255
    assert b"no matching host key type found" in old.stderr
    assert b"logged-in" not in old.stdout
    current = login("HostKeyAlgorithms=ssh-rsa,rsa-sha2-512")
    assert current.returncode == 0, current.stderr.decode()
    assert b"kex: host key algorithm: rsa-sha2-512" in current.stderr


# -- an RSA route key into current OpenSSH


def test_an_rsa_route_key_logs_into_stock_openssh(world: World) -> None:
    """
    OpenSSH 8.8 and later refuse ssh-rsa signatures by default: the proxy
    must sign with rsa-sha2-512 or rsa-sha2-256, as the backend lists them.
    """
    result = proxyLogin(world.proxy, "diego:stock/0")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"logged-in\n"
