"""
A real C{twistd diego-ssh-proxy} in front of a real C{twistd diego-sshd} (key
route) and a stock OpenSSH sshd (password route), driven by OpenSSH's ssh,
scp, sftp and rsync.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, freePort, startDaemon
from tests.support.eventually import eventuallyBlocking
from tests.support.keys import key
from tests.support.proxy import Proxy, fingerprintOf, lrp, startProxy
from tests.support.stocksshd import PASSWORD, USER, StockSSHD, startStockSSHD

pytestmark = pytest.mark.interop


@dataclass
class World:
    proxy: Proxy
    daemon: Daemon
    stock: StockSSHD


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("proxy")
    hostKey = tmp / "daemon_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}",))
    stock = startStockSSHD(tmp)
    backendKey = key("ed25519").toString("openssh").decode()
    daemonRoute = {
        "container_port": 2222,
        "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
        "user": "vcap",
        "private_key": backendKey,
    }
    lrps = [
        lrp("app", "127.0.0.1", daemon.port, daemonRoute),
        lrp("stock", "127.0.0.1", stock.port,
            {"container_port": 2222, "host_fingerprint": fingerprintOf(stock.hostKeyPub),
             "user": USER, "password": PASSWORD}),
        lrp("wrongfp", "127.0.0.1", daemon.port,
            {**daemonRoute, "host_fingerprint": "SHA256:" + "A" * 43}),
        lrp("dead", "127.0.0.1", freePort(), daemonRoute),
        lrp("badcreds", "127.0.0.1", stock.port,
            {"container_port": 2222, "user": USER, "password": "wrong"}),
    ]  # fmt: skip
    proxy = startProxy(tmp, lrps, extraArgs=("--communicationTimeout=5s",))
    yield World(proxy, daemon, stock)
    proxy.stop()
    daemon.stop()
    stock.stop()


def run(
    argv: list[str], env: dict[str, str], **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    kwargs.setdefault("timeout", 120)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, env=env, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def connectTo(port: int) -> socket.socket | None:
    """A connection to C{port} on this machine, or None while nothing listens there."""
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None


@pytest.mark.parametrize("guid", ["app", "stock"])
def test_exec_through_the_proxy(world: World, guid: str) -> None:
    p = world.proxy
    result = run(p.ssh(f"diego:{guid}/0", "echo out; echo err >&2; exit 3"), p.env())
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr


def test_pty_session_through_the_proxy(world: World) -> None:
    p = world.proxy
    result = run(p.ssh("diego:app/0", "tty; stty size", options=("RequestTTY=force",)), p.env())
    lines = result.stdout.decode().replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert len(lines[1].split()) == 2


@pytest.mark.parametrize("guid", ["app", "stock"])
@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "scp-O"])
def test_scp_through_the_proxy(world: World, tmp_path: Path, guid: str, legacy: bool) -> None:
    p = world.proxy
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(3 * 1024 * 1024))
    name = f"scp-{legacy}.bin"
    up = run(p.scp(f"diego:{guid}/0", str(data), f"127.0.0.1:{name}", legacy=legacy), p.env())
    assert up.returncode == 0, up.stderr
    back = tmp_path / "back.bin"
    down = run(p.scp(f"diego:{guid}/0", f"127.0.0.1:{name}", str(back), legacy=legacy), p.env())
    assert down.returncode == 0, down.stderr
    assert sha(back) == sha(data)


def test_sftp_and_rsync_through_the_proxy(world: World, tmp_path: Path) -> None:
    p = world.proxy
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(5000 + i))
    rsync = run(["rsync", "-a", "-e", p.rsh("diego:app/0"), f"{src}/", "127.0.0.1:synced/"],
                p.env())  # fmt: skip
    assert rsync.returncode == 0, rsync.stderr
    for i in range(10):
        assert (world.daemon.home / "synced" / f"f{i}").read_bytes() == (src / f"f{i}").read_bytes()
    # Commands on stdin, not -b: sftp's batch mode forbids password prompts.
    commands = f"get synced/f3 {tmp_path / 'got'}\nls synced\n".encode()
    sftp = run(p.sftp("diego:app/0", "127.0.0.1"), p.env(), input=commands, stdin=None)
    assert sftp.returncode == 0, sftp.stderr
    assert (tmp_path / "got").read_bytes() == (src / "f3").read_bytes()


def _echoServer() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    return server, server.getsockname()[1]


def test_local_and_stdio_forwarding_through_the_proxy(world: World) -> None:
    p = world.proxy
    server, port = _echoServer()
    import threading

    def serve() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                conn.sendall(hashlib.sha256(data).hexdigest().encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    payload = os.urandom(2 * 1024 * 1024)
    stdio = run(
        [*p.ssh("diego:app/0")[:-1], "-W", f"127.0.0.1:{port}", "diego:app/0@127.0.0.1"],
        p.env(),
        input=payload,
        stdin=None,
    )
    assert stdio.stdout == hashlib.sha256(payload).hexdigest().encode(), stdio.stderr
    local = freePort()
    forward = (f"LocalForward=127.0.0.1:{local} 127.0.0.1:{port}", "ExitOnForwardFailure=yes")
    tunnel = subprocess.Popen(
        p.ssh("diego:app/0", "sleep 30", options=forward),
        env=p.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        conn = eventuallyBlocking(lambda: connectTo(local), "the -L listener to come up", 20)
        with conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert reply == hashlib.sha256(payload).hexdigest().encode()
    finally:
        tunnel.terminate()
        tunnel.wait(10)
        server.close()


def test_remote_forwarding_through_the_proxy(world: World) -> None:
    p = world.proxy
    server, port = _echoServer()
    remote = freePort()
    import threading

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello from the client side\n")

    threading.Thread(target=serve, daemon=True).start()
    result = run(
        p.ssh("diego:app/0", f"sleep 1; exec 3<>/dev/tcp/127.0.0.1/{remote}; head -1 <&3",
              options=(f"RemoteForward=127.0.0.1:{remote} 127.0.0.1:{port}",
                       "ExitOnForwardFailure=yes")),
        p.env(),
    )  # fmt: skip
    server.close()
    assert result.stdout == b"hello from the client side\n", result.stderr


@pytest.mark.slow
def test_one_gib_both_ways_with_rekeys(world: World, tmp_path: Path) -> None:
    p = world.proxy
    size = 1 << 30
    local = tmp_path / "big"
    with open(local, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(size >> 20):
            f.write(block[i % 11 :] + block[: i % 11])
    options = ("RekeyLimit=64M", "Ciphers=aes128-gcm@openssh.com")
    with open(local, "rb") as stdin:
        up = run(p.ssh("diego:app/0", "cat > big && sha256sum big", options=options), p.env(),
                 stdin=stdin, timeout=300)  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert up.stdout.split()[0].decode() == sha(local)
    back = tmp_path / "back"
    with open(back, "wb") as out:
        down = subprocess.run(p.ssh("diego:app/0", "cat big", options=options), env=p.env(),
                              stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              timeout=300, check=False)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert sha(back) == sha(local)
    (world.daemon.home / "big").unlink()


def test_slow_reader_does_not_grow_the_proxy(world: World) -> None:
    p = world.proxy
    size = 64 * 1024 * 1024
    before = p.rssKiB()
    proc = subprocess.Popen(p.ssh("diego:app/0", f"head -c {size} /dev/zero"), env=p.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    total, peak = 0, before
    while chunk := proc.stdout.read(256 * 1024):
        total += len(chunk)
        time.sleep(0.002)
        peak = max(peak, p.rssKiB())
    proc.wait(60)
    assert total == size
    assert peak - before < 16 * 1024, f"proxy grew by {peak - before} KiB"


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("diego:app/0", "wrong", b""),
        ("diego:app/x", "diego-secret", b""),
        ("diego:app/0junk", "diego-secret", b""),
        ("other:app/0", "diego-secret", b""),
        ("cf:app/0", "diego-secret", b""),
        ("diego:nosuch/0", "diego-secret", b"no instance 0 of process nosuch"),
        ("diego:app/7", "diego-secret", b"no instance 7"),
        ("diego:wrongfp/0", "diego-secret", b"host key does not match"),
        ("diego:dead/0", "diego-secret", b"could not connect to the instance"),
        ("diego:badcreds/0", "diego-secret", b"refused the route's credentials"),
    ],
)
def test_denied_logins(world: World, user: str, password: str, message: bytes) -> None:
    p = world.proxy
    result = run(p.ssh(user, "echo should-not-run", options=("NumberOfPasswordPrompts=1",)),
                 p.env(password))  # fmt: skip
    assert result.returncode != 0
    assert b"should-not-run" not in result.stdout
    assert message in result.stderr
    if not message:
        assert b"diego-ssh-proxy:" not in result.stderr  # nothing leaked before the secret


def test_secrets_never_in_logs(world: World) -> None:
    p = world.proxy
    run(p.ssh("diego:app/0", "true"), p.env())
    run(p.ssh("diego:app/0", "true"), p.env("a-wrong-password-123"))
    logs = p.log.read_text() + (p.accessLog.read_text() if p.accessLog.exists() else "")
    for secret in ("diego-secret", "a-wrong-password-123", PASSWORD, "PRIVATE KEY"):
        assert secret not in logs


def test_access_log_records_logins_and_session_ends(world: World) -> None:
    p = world.proxy
    run(p.ssh("diego:app/0", "head -c 1000 /dev/zero"), p.env())

    def sessionEnds() -> list[dict[str, Any]]:
        return [e for e in p.accessEvents() if e.get("event") == "session_end"]

    ends = eventuallyBlocking(sessionEnds, "a session_end in the access log", 10)
    events = p.accessEvents()
    logins = [e for e in events if e.get("event") == "login" and e.get("outcome") == "success"]
    assert logins and logins[-1]["process_guid"] == "app" and logins[-1]["realm"] == "diego"
    assert any(e["bytes_to_client"] >= 1000 for e in ends)


def test_health_check(world: World) -> None:
    base = f"http://127.0.0.1:{world.proxy.healthPort}"
    assert urllib.request.urlopen(base + "/", timeout=10).status == 200
    for path, method, status in (("/other", "GET", 404), ("/", "POST", 405)):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(base + path, method=method), timeout=10)
        assert info.value.code == status


def test_garbage_on_the_proxy_port_and_others_unaffected(world: World) -> None:
    p = world.proxy
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.recv(100)
        s.sendall(os.urandom(4096) + b"\n")
        s.settimeout(10)
        rest = b""
        while chunk := s.recv(4096):
            rest += chunk
    assert b"Invalid SSH identification" in rest or rest == b""
    result = run(p.ssh("diego:app/0", "echo alive"), p.env())
    assert result.stdout == b"alive\n"


def test_thirty_concurrent_logins(world: World) -> None:
    p = world.proxy

    def one(i: int) -> bytes:
        return run(p.ssh("diego:app/0", f"echo {i}"), p.env()).stdout

    with ThreadPoolExecutor(30) as pool:
        outputs = list(pool.map(one, range(30)))
    assert outputs == [f"{i}\n".encode() for i in range(30)]


def test_idle_connections_are_closed(tmp_path: Path) -> None:
    proxy = startProxy(tmp_path, [], extraArgs=("--idleConnectionTimeout=1s",))
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"SSH-2.0-idle-test\r\n")
            # Without the idle timeout recv would raise socket.timeout here.
            s.settimeout(15)
            while s.recv(4096):
                pass
        assert "idle" in proxy.log.read_text()
    finally:
        proxy.stop()


@pytest.mark.parametrize("guid", ["app", "stock"])
def test_yes_into_head_ends_through_the_proxy(world: World, guid: str) -> None:
    """
    The user's ssh sends eow@openssh.com when head exits (only to a server
    whose banner says OpenSSH); the relay passes it on and the container's
    program gets SIGPIPE, as with OpenSSH end to end.
    """
    p = world.proxy
    command = " ".join(p.ssh(f"diego:{guid}/0", "'exec yes'"))
    result = subprocess.run(
        f"{command} | head -n 1; echo status ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", env=p.env(), capture_output=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert result.stdout == b"y\nstatus 255\n", result.stderr
