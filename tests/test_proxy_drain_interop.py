# -*- test-case-name: tests.test_proxy_drain_interop -*-
"""
Graceful drain with real processes: a real proxy (the C{ssh-proxy} script,
or C{twistd diego-ssh-proxy}, alone or with C{--workers 2}) in front of a
real daemon, OpenSSH transfers through it, and a SIGTERM in the middle: the
transfers complete byte for byte, the health check answers 503 at once, the
listener refuses new connections a second later, and the proxy exits 0. A
drain that outlives C{--drainTimeout} ends with the client told why. And
C{GET /ready} follows the LRP table: 503 while a broken edit is in the file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import TWISTD, Daemon, exemptTestClients, freePort, waitForPort
from tests.support.eventually import eventuallyBlocking
from tests.support.proxy import CLIENT_OPTIONS, CREDENTIALS, daemonBehindRoute, lrp, readAccessLog

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SSH_PROXY = str(Path(sys.executable).with_name("ssh-proxy"))
CHUNKS, CHUNK = 30, 100_000
#: A download that takes about 3 s whatever the machine's speed: mid-flight
#: when the proxy is told to stop.
SLOW_DOWNLOAD = f"for i in $(seq {CHUNKS}); do head -c {CHUNK} /dev/zero; sleep 0.1; done"
LONG = 2 * CHUNKS
SLOWER_DOWNLOAD = f"for i in $(seq {LONG}); do head -c {CHUNK} /dev/zero; sleep 0.1; done"


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    health: int
    tmp: Path

    def ssh(self, command: str) -> list[str]:
        return ["sshpass", "-e", "ssh", *CLIENT_OPTIONS, "-o", "PubkeyAuthentication=no",
                "-p", str(self.port), "diego:app/0@127.0.0.1", command]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**os.environ, "SSHPASS": CREDENTIALS}

    def status(self, path: str = "/") -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return True
        except OSError:
            return False

    def output(self) -> str:
        log = self.tmp / "proxy.log"
        return log.read_text() if log.exists() else ""


def start(tmp: Path, daemon: Daemon, route: dict[str, Any], kind: str,
          extraArgs: Sequence[str] = ()) -> Running:  # fmt: skip
    port, health = freePort(), freePort()
    table = tmp / "lrps.json"
    table.write_text(json.dumps({"lrps": [lrp("app", "127.0.0.1", daemon.port, route)]}))
    args = [f"--address=127.0.0.1:{port}", f"--healthCheckAddress=127.0.0.1:{health}",
            "--enableDiegoAuth", f"--lrpDirectory={table}",
            f"--accessLog={tmp / 'access.json'}", *exemptTestClients(extraArgs),
            *extraArgs]  # fmt: skip
    env = {**os.environ, "DIEGO_CREDENTIALS": CREDENTIALS}
    log = tmp / "proxy.log"
    if kind == "ssh-proxy":
        argv = [SSH_PROXY, *args]
        out: Any = log.open("wb")
    else:
        argv = [TWISTD, "-n", "--pidfile=", "--logfile", str(log), "diego-ssh-proxy", *args]
        out = None
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                            cwd=str(tmp), env=env)  # fmt: skip
    try:
        waitForPort(port, proc)
        waitForPort(health, proc)
    except Exception:
        proc.kill()
        raise
    return Running(proc, port, health, tmp)


@pytest.fixture
def behind(tmp_path: Path) -> Iterator[tuple[Daemon, dict[str, Any]]]:
    daemon, route = daemonBehindRoute(tmp_path)
    yield daemon, route
    daemon.stop()


def _stopped(proxy: Running) -> None:
    if proxy.proc.poll() is None:
        proxy.proc.kill()
        proxy.proc.wait(10)


@dataclass
class Transfer:
    proc: subprocess.Popen[bytes]
    out: Path

    def size(self) -> int:
        return self.out.stat().st_size


def _transfers(proxy: Running, count: int, command: str = SLOW_DOWNLOAD) -> list[Transfer]:
    """
    C{count} slow downloads into files (read as they come: no pipe left full
    to slow one down), each known to be mid-flight (its first bytes arrived).
    """
    started = []
    for _ in range(count):
        out = proxy.tmp / f"download-{len(list(proxy.tmp.glob('download-*')))}"
        with out.open("wb") as sink:
            proc = subprocess.Popen(proxy.ssh(command), stdout=sink, stderr=subprocess.PIPE,
                                    env=proxy.env())  # fmt: skip
        started.append(Transfer(proc, out))
    for each in started:
        eventuallyBlocking(lambda each=each: each.size() > 0, "the first bytes", 20)  # type: ignore[misc]
    return started


def _finish(transfer: Transfer) -> tuple[int, int, bytes]:
    """The bytes received, the exit status, stderr."""
    _, err = transfer.proc.communicate(timeout=60)
    return transfer.size(), transfer.proc.returncode, err


@pytest.mark.parametrize("kind", ["ssh-proxy", "twistd"])
def test_sigterm_mid_transfer_drains(
    tmp_path: Path, behind: tuple[Daemon, dict[str, Any]], kind: str
) -> None:
    daemon, route = behind
    proxy = start(tmp_path, daemon, route, kind, ["--drainTimeout=30s"])
    try:
        assert (proxy.status("/"), proxy.status("/ready")) == (200, 200)
        [transfer] = _transfers(proxy, 1)
        signalled = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        eventuallyBlocking(lambda: proxy.status("/") == 503, "GET / answers 503", 2)
        assert proxy.status("/ready") == 503
        eventuallyBlocking(lambda: not proxy.accepting(), "the listener closed", 5)
        closedAfter = time.monotonic() - signalled
        assert closedAfter >= 0.9, closedAfter  # the balancer's second
        assert proxy.proc.poll() is None  # the session goes on
        refused = subprocess.run(proxy.ssh("true"), capture_output=True, env=proxy.env(),
                                 timeout=30, check=False)  # fmt: skip
        assert refused.returncode == 255 and b"refused" in refused.stderr, refused.stderr
        size, status, err = _finish(transfer)
        assert (size, status) == (CHUNKS * CHUNK, 0), err
        assert proxy.proc.wait(20) == 0, proxy.output()
    finally:
        _stopped(proxy)
    events = readAccessLog(tmp_path / "access.json")
    assert [e["event"] for e in events if e["event"] in ("login", "session_end")] == [
        "login", "session_end",
    ]  # fmt: skip


def test_workers_drain_with_the_parent(
    tmp_path: Path, behind: tuple[Daemon, dict[str, Any]]
) -> None:
    daemon, route = behind
    proxy = start(tmp_path, daemon, route, "twistd", ["--workers=2", "--drainTimeout=30s"])
    try:
        eventuallyBlocking(lambda: "ProxyFactory starting on" in "".join(
            line for line in proxy.output().splitlines() if "worker 1" in line
        ), "the worker listening", 30)  # fmt: skip
        workers = _children(proxy.proc.pid)
        transfers: list[Transfer] = []
        pids: set[int] = set()
        for _ in range(3):  # until both processes carry one (the kernel picks)
            transfers += _transfers(proxy, 3, SLOWER_DOWNLOAD)
            events = readAccessLog(tmp_path / "access.json")
            pids = {e["pid"] for e in events if e["event"] == "login"}
            if len(pids) == 2:
                break
        proxy.proc.send_signal(signal.SIGTERM)
        eventuallyBlocking(lambda: proxy.status("/") == 503, "GET / answers 503", 2)
        eventuallyBlocking(lambda: not proxy.accepting(), "every listener closed", 5)
        for transfer in transfers:
            size, status, err = _finish(transfer)
            assert (size, status) == (LONG * CHUNK, 0), err
        assert proxy.proc.wait(20) == 0, proxy.output()
        assert not Path(f"/proc/{workers[0]}").exists()
    finally:
        _stopped(proxy)
    ends = [e for e in readAccessLog(tmp_path / "access.json") if e["event"] == "session_end"]
    assert len(ends) == len(transfers)
    assert len(pids) == 2, pids  # both processes carried transfers through the drain
    assert "restart" not in proxy.output() and "starting another" not in proxy.output()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_drain_that_outlives_the_timeout_tells_the_client_why(
    tmp_path: Path, behind: tuple[Daemon, dict[str, Any]]
) -> None:
    daemon, route = behind
    proxy = start(tmp_path, daemon, route, "ssh-proxy", ["--drainTimeout=1.5s"])
    try:
        [transfer] = _transfers(proxy, 1)
        signalled = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        size, status, err = _finish(transfer)
        cutAfter = time.monotonic() - signalled
        assert size < CHUNKS * CHUNK and status == 255
        assert b"the proxy is shutting down" in err, err
        assert 1.4 <= cutAfter < 10, cutAfter
        assert proxy.proc.wait(20) == 0, proxy.output()
    finally:
        _stopped(proxy)


def test_a_second_sigterm_stops_at_once(
    tmp_path: Path, behind: tuple[Daemon, dict[str, Any]]
) -> None:
    daemon, route = behind
    proxy = start(tmp_path, daemon, route, "twistd", ["--drainTimeout=30s"])
    try:
        [transfer] = _transfers(proxy, 1)
        proxy.proc.send_signal(signal.SIGTERM)
        eventuallyBlocking(lambda: proxy.status("/") == 503, "GET / answers 503", 2)
        signalled = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        size, status, err = _finish(transfer)
        assert time.monotonic() - signalled < 5
        assert size < CHUNKS * CHUNK and status == 255
        assert b"the proxy is shutting down" in err, err
        assert proxy.proc.wait(20) == 0, proxy.output()
    finally:
        _stopped(proxy)


def test_ready_follows_the_lrp_table(tmp_path: Path, behind: tuple[Daemon, dict[str, Any]]) -> None:
    daemon, route = behind
    proxy = start(tmp_path, daemon, route, "ssh-proxy")
    table = tmp_path / "lrps.json"
    good = table.read_text()
    try:
        assert (proxy.status("/"), proxy.status("/ready")) == (200, 200)
        table.write_text(good[:-5])  # an edit saved half-way
        eventuallyBlocking(lambda: proxy.status("/ready") == 503, "/ready 503", 12)
        assert proxy.status("/") == 200  # upstream's meaning: the proxy takes connections
        login = subprocess.run(proxy.ssh("echo still"), capture_output=True, env=proxy.env(),
                               timeout=30, check=False)  # fmt: skip
        assert login.stdout == b"still\n", login.stderr  # the last good table serves
        table.write_text(good)
        eventuallyBlocking(lambda: proxy.status("/ready") == 200, "/ready 200 again", 12)
        assert "the route source cannot be read: not ready" in proxy.output()
        proxy.proc.send_signal(signal.SIGINT)
        assert proxy.proc.wait(20) == 0
    finally:
        _stopped(proxy)
