"""
C{--workers N}: the proxy's processes sharing one listening socket. Real
OpenSSH clients log in through a proxy started with C{--workers 2}; the access
log's C{pid} says which process served each login.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from twisted.python import usage

from diegossh.proxy import tap
from diegossh.proxy.config import ConfigError, merge
from diegossh.proxy.tap import Options
from diegossh.proxy.worker import buildWorkerOptions
from diegossh.proxy.workers import AdoptedPort, WorkerPool, bindListener, workerOptions
from diegossh.ssh.keys import generateHostKey
from tests.support.daemon import Daemon, startDaemon
from tests.support.proxy import Proxy, fingerprintOf, lrp, startProxy

BASE = ["--address=127.0.0.1:0", "--enableDiegoAuth", "--diegoCredentials=secret",
        "--lrpDirectory=/nonexistent.json"]  # fmt: skip


# -- settings


def test_workers_default_to_one() -> None:
    options = Options()
    options.parseOptions(BASE)
    assert options["settings"].workers == 1


@pytest.mark.parametrize(("given", "count"), [("2", 2), ("16", 16), (3, 3)])
def test_workers_as_flag_or_key(tmp_path: Path, given: object, count: int) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"workers": given}))
    assert merge({}, str(path))["workers"] == count
    assert merge({"workers": str(count)}, None)["workers"] == count


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", True])
def test_bad_worker_counts(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"workers": bad}))
    with pytest.raises(ConfigError):
        merge({}, str(path))


def test_bad_worker_flag_is_a_usage_error() -> None:
    with pytest.raises(usage.UsageError, match="workers"):
        Options().parseOptions([*BASE, "--workers=none"])


def test_worker_rebuilds_the_parents_options() -> None:
    options = Options()
    options.parseOptions([*BASE, "--workers=3", "--allowedCiphers=aes128-gcm@openssh.com"])
    raw = workerOptions(options)
    assert "settings" not in raw
    json.dumps(raw)  # what goes down the pipe
    rebuilt = buildWorkerOptions({"options": raw, "hostKeys": []}, fd=7)
    settings = rebuilt["settings"]
    assert settings.inheritedListenFD == 7
    assert settings.workers == 1
    assert settings.healthCheckAddress is None
    assert options["settings"].healthCheckAddress == ":2223"
    (diego,) = settings.realms
    assert diego.parsed.credentials == "secret"
    assert settings.policy.ciphers == options["settings"].policy.ciphers
    # the rest is the parent's, value for value
    assert (
        replace(settings, workers=3, inheritedListenFD=None, healthCheckAddress=":2223")
        == options["settings"]
    )


def test_bound_listener_is_nonblocking_and_listening() -> None:
    sock = bindListener("127.0.0.1:0")
    try:
        assert not sock.getblocking()
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        sock.close()


def _serviceOf(cls: type, top: Any) -> Any:
    (found,) = [service for service in top if isinstance(service, cls)]
    return found


@pytest.mark.parametrize("given", [True, False], ids=["given", "generated"])
def test_a_worker_serves_the_parents_host_key(tmp_path: Path, given: bool) -> None:
    """
    The key a worker's factory serves is the one the parent's factory serves:
    the key the parent loaded, or the one it generated.
    """
    table = tmp_path / "lrps.json"
    table.write_text(json.dumps({"lrps": []}))
    args = ["--address=127.0.0.1:0", "--enableDiegoAuth", "--diegoCredentials=secret",
            f"--lrpDirectory={table}", "--workers=2"]  # fmt: skip
    key = generateHostKey()
    if given:
        path = tmp_path / "host_key"
        path.write_bytes(key.toString("OPENSSH"))
        args.append(f"--hostKey={path}")
    options = Options()
    options.parseOptions(args)
    pool = _serviceOf(WorkerPool, tap.makeService(options))
    parentKeys = pool.factory.privateKeys
    assert len(parentKeys) == 1
    if given:
        assert list(parentKeys.values()) == [key]
    # What goes down the pipe is text; the worker builds its service from it.
    boot = json.loads(json.dumps(pool.boot))
    worker = _serviceOf(AdoptedPort, tap.makeService(buildWorkerOptions(boot, fd=7)))
    assert worker.factory.privateKeys == parentKeys


# -- processes


@dataclass
class World:
    proxy: Proxy
    daemon: Daemon
    lrps: list[dict[str, Any]]


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _eventually(check: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.1)


def _workerPids(proxy: Proxy) -> set[int]:
    """The parent's worker processes (python children, not clients)."""
    return _children(proxy.proc.pid)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("workers")
    hostKey = tmp / "daemon_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}",))
    route = {
        "container_port": 2222,
        "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
        "user": "vcap",
        "private_key": daemon.identity.read_text(),
    }
    lrps = [lrp("app", "127.0.0.1", daemon.port, route)]
    proxy = startProxy(tmp, lrps, extraArgs=("--workers=2", "--communicationTimeout=30s"))
    _eventually(lambda: len(_workerPids(proxy)) == 1, "one worker started")
    yield World(proxy, daemon, lrps)
    proxy.stop()
    daemon.stop()


def _login(proxy: Proxy, *options: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        proxy.ssh("diego:app/0", "echo hello", options=options),
        env=proxy.env(),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def _servingPids(proxy: Proxy) -> set[int]:
    return {
        e["pid"] for e in proxy.accessEvents() if e.get("event") == "login" and e.get("outcome")
    }


@pytest.mark.interop
def test_logins_land_on_both_processes(world: World) -> None:
    proxy = world.proxy
    expected = {proxy.proc.pid} | _workerPids(proxy)
    assert len(expected) == 2
    # Which process accepts is the kernel's choice; concurrent logins keep one
    # busy while the other accepts. Bounded rounds, no timing.
    for _ in range(10):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: _login(proxy), range(8)))
        for result in results:
            assert result.returncode == 0, result.stderr
            assert result.stdout == b"hello\n"
        if _servingPids(proxy) >= expected:
            break
    assert _servingPids(proxy) == expected


_HOST_KEY_SEEN = re.compile(rb"Server host key: \S+ (SHA256:\S+)")


def _loginsSeeingHostKey(proxy: Proxy) -> tuple[set[str], set[int]]:
    """
    Concurrent logins until at least two processes have served one (bounded
    rounds, no timing): the host keys the clients saw, and the processes (from
    the access log) that served them.
    """
    before = len(proxy.accessEvents())
    seen: set[str] = set()
    pids: set[int] = set()
    for _ in range(10):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: _login(proxy, "LogLevel=DEBUG1"), range(8)))
        for result in results:
            assert result.returncode == 0, result.stderr
            seen.update(m.decode() for m in _HOST_KEY_SEEN.findall(result.stderr))
        pids = {
            e["pid"]
            for e in proxy.accessEvents()[before:]
            if e.get("event") == "login" and e.get("outcome")
        }
        if len(pids) > 1:
            break
    return seen, pids


@pytest.mark.interop
def test_every_process_serves_the_generated_host_key(world: World) -> None:
    proxy = world.proxy
    generated = re.search(r"generated an ed25519 host key: (SHA256:\S+)", proxy.log.read_text())
    assert generated is not None
    seen, pids = _loginsSeeingHostKey(proxy)
    assert len(pids) > 1, "only one process answered"
    assert pids <= {proxy.proc.pid} | _workerPids(proxy)
    assert seen == {generated.group(1)}


@pytest.mark.interop
def test_every_process_serves_the_given_host_key(world: World, tmp_path: Path) -> None:
    hostKey = tmp_path / "proxy_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    proxy = startProxy(tmp_path, world.lrps, extraArgs=("--workers=2", f"--hostKey={hostKey}"))
    try:
        _eventually(lambda: len(_workerPids(proxy)) == 1, "one worker started")
        seen, pids = _loginsSeeingHostKey(proxy)
        assert len(pids) > 1, "only one process answered"
        assert seen == {fingerprintOf(Path(f"{hostKey}.pub"))}
    finally:
        proxy.stop()


@pytest.mark.interop
def test_a_killed_worker_is_restarted(world: World) -> None:
    proxy = world.proxy
    (old,) = _workerPids(proxy)
    os.kill(old, signal.SIGKILL)
    _eventually(lambda: len(_workerPids(proxy) - {old}) == 1, "a new worker")
    (new,) = _workerPids(proxy)
    assert new != old
    _eventually(lambda: "starting another" in proxy.log.read_text(), "the restart logged")
    assert f"pid {old}) ended" in proxy.log.read_text()
    assert _login(proxy).returncode == 0


def _startWorkers(tmp: Path, world: World) -> tuple[Proxy, set[int]]:
    proxy = startProxy(tmp, world.lrps, extraArgs=("--workers=3",))
    _eventually(lambda: len(_workerPids(proxy)) == 2, "two workers started")
    return proxy, _workerPids(proxy)


@pytest.mark.interop
def test_stopping_the_parent_stops_every_worker(world: World, tmp_path: Path) -> None:
    proxy, workers = _startWorkers(tmp_path, world)
    proxy.stop()
    _eventually(lambda: not any(_alive(pid) for pid in workers), "workers gone")


@pytest.mark.interop
def test_a_killed_parent_leaves_no_worker(world: World, tmp_path: Path) -> None:
    proxy, workers = _startWorkers(tmp_path, world)
    proxy.proc.kill()
    proxy.proc.wait(30)
    _eventually(lambda: not any(_alive(pid) for pid in workers), "workers gone")
