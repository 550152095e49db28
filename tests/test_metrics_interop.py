# -*- test-case-name: tests.test_metrics_interop -*-
"""
C{/metrics} scraped over HTTP from real processes after a known sequence
of OpenSSH logins and transfers: the proxy alone, the proxy with
C{--workers 2} (every process's figures on the parent's one page), and the
daemon with C{-enableMetrics}. Each checks exact deltas, and that no user
name, guid, password or address is in the page.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.support.daemon import Daemon, freePort
from tests.support.eventually import eventuallyBlocking
from tests.support.proxy import CREDENTIALS, Proxy, daemonBehindRoute, lrp, startProxy
from tests.test_proxy_cf import APP, CFWorld
from tests.test_proxy_cf import ssh as cfLogin
from tests.test_sshd_dropin import (
    Running,
    ccArguments,
    ccHostKey,
    environment,
    login,
    serve,
    userIdentity,
)

GUID = "metrics-app-4f1e"
USER = f"diego:{GUID}/0"
WRONG = "wrong-password-9b7d"
DOWNLOAD = 1_048_576
UPLOAD = 300_000
IPV4 = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain")
        text: str = response.read().decode()
    return text


def samples(text: str) -> dict[str, float]:
    """
    C{name{labels}} -> value, labels as the exposition writes them (sorted).
    """
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            found[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return found


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def assertNothingIdentifying(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, secret
    assert IPV4.findall(text) == []


def run(argv: list[str], env: dict[str, str], data: bytes | None = None) -> Any:
    return subprocess.run(
        argv, env=env, input=data, capture_output=True, timeout=120, check=False,
        stdin=None if data is not None else subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, list[Any]]]:
    tmp = tmp_path_factory.mktemp("metrics")
    daemon, route = daemonBehindRoute(tmp)
    yield daemon, [lrp(GUID, "127.0.0.1", daemon.port, route)]
    daemon.stop()


@pytest.fixture
def proxies() -> Iterator[Callable[..., tuple[Proxy, int]]]:
    started: list[Proxy] = []

    def start(tmp: Path, lrps: list[Any], *extra: str) -> tuple[Proxy, int]:
        debugPort = freePort()
        proxy = startProxy(tmp, lrps, extraArgs=(f"--debugAddr=127.0.0.1:{debugPort}", *extra))
        started.append(proxy)
        eventuallyBlocking(lambda: scrape(debugPort), "the debug listener")
        return proxy, debugPort

    yield start
    for proxy in started:
        proxy.stop()


LOGIN_OK = 'diegossh_logins_total{outcome="success",realm="diego",reason="none"}'
LOGIN_BAD = 'diegossh_logins_total{outcome="failure",realm="diego",reason="credentials"}'


def test_proxy_counts_a_known_sequence(
    tmp_path: Path, backend: tuple[Daemon, list[Any]], proxies: Callable[..., tuple[Proxy, int]]
) -> None:
    proxy, debugPort = proxies(tmp_path, backend[1])
    before = samples(scrape(debugPort))
    # a login with an exec
    hello = run(proxy.ssh(USER, "echo hello"), proxy.env())
    assert (hello.returncode, hello.stdout) == (0, b"hello\n"), hello.stderr
    # a wrong password, once
    bad = run(proxy.ssh(USER, "true", options=["NumberOfPasswordPrompts=1"]), proxy.env(WRONG))
    assert bad.returncode != 0
    # a transfer each way, of known sizes
    down = run(proxy.ssh(USER, f"head -c {DOWNLOAD} /dev/zero"), proxy.env())
    assert (down.returncode, len(down.stdout)) == (0, DOWNLOAD), down.stderr
    up = run(proxy.ssh(USER, "wc -c"), proxy.env(), data=b"u" * UPLOAD)
    assert (up.returncode, up.stdout.strip()) == (0, str(UPLOAD).encode()), up.stderr

    def settled() -> dict[str, float] | None:
        now = samples(scrape(debugPort))
        idle = now["diegossh_connections_open"] == 0 and (
            now['diegossh_proxy_sessions_open{realm="diego"}'] == 0
        )
        return now if idle else None

    after = eventuallyBlocking(settled, "every connection closed")
    assert delta(after, before, "diegossh_connections_total") == 4
    assert delta(after, before, LOGIN_OK) == 3
    assert delta(after, before, LOGIN_BAD) == 1
    kexes = sum(
        delta(after, before, key)
        for key in after
        if key.startswith("diegossh_key_exchanges_total") and 'kind="initial"' in key
    )
    assert kexes == 4
    assert delta(after, before, 'diegossh_channels_opened_total{type="session"}') == 3
    assert after['diegossh_channels_open{type="session"}'] == 0
    for histogram in ("dial", "login"):
        name = f'diegossh_proxy_backend_{histogram}_seconds_count{{outcome="success"}}'
        assert delta(after, before, name) == 3
    # the bytes: what the access log says of the same sessions, to the byte
    ends = [e for e in proxy.accessEvents() if e.get("event") == "session_end"]
    toUser = delta(after, before, 'diegossh_proxy_relayed_bytes_total{direction="to_user"}')
    toInstance = delta(after, before, 'diegossh_proxy_relayed_bytes_total{direction="to_instance"}')
    assert toUser == sum(e["bytes_to_client"] for e in ends)
    assert toInstance == sum(e["bytes_from_client"] for e in ends)
    assert toUser >= DOWNLOAD and toInstance >= UPLOAD
    assertNothingIdentifying(scrape(debugPort), GUID, "diego:", CREDENTIALS, WRONG, "vcap")


def test_every_workers_figures_reach_the_one_page(
    tmp_path: Path, backend: tuple[Daemon, list[Any]], proxies: Callable[..., tuple[Proxy, int]]
) -> None:
    proxy, debugPort = proxies(tmp_path, backend[1], "--workers=2")
    before = samples(scrape(debugPort))

    def servedBy() -> set[int]:
        return {e["pid"] for e in proxy.accessEvents() if e.get("outcome") == "success"}

    logins = 0
    for _ in range(10):  # until both processes have served one; bounded, no timing
        with ThreadPoolExecutor(6) as pool:
            results = list(
                pool.map(lambda _: run(proxy.ssh(USER, "echo hi"), proxy.env()), range(6))
            )
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        logins += len(results)
        if len(servedBy()) == 2:
            break
    assert len(servedBy()) == 2, "one process served every login"

    def counted() -> dict[str, float] | None:
        now = samples(scrape(debugPort))
        return now if delta(now, before, LOGIN_OK) == logins else None

    after = eventuallyBlocking(counted, "every process's logins on the page")
    assert delta(after, before, "diegossh_connections_total") == logins
    after = eventuallyBlocking(
        lambda: (lambda now: now if now["diegossh_connections_open"] == 0 else None)(
            samples(scrape(debugPort))
        ),
        "the gauges summed back to zero",
    )
    assert after["diegossh_proxy_worker_restarts_total"] == 0
    # a worker killed: one restart, and no count goes back
    (worker,) = children(proxy.proc.pid)
    os.kill(worker, signal.SIGKILL)
    eventuallyBlocking(lambda: children(proxy.proc.pid) - {worker}, "a new worker")
    restarted = samples(scrape(debugPort))
    assert restarted["diegossh_proxy_worker_restarts_total"] == 1
    assert delta(restarted, before, LOGIN_OK) == logins
    assert delta(restarted, before, "diegossh_connections_total") == logins
    assert restarted["diegossh_connections_open"] == 0
    assertNothingIdentifying(scrape(debugPort), GUID, "diego:", CREDENTIALS, "vcap")
    # the files: a private directory, named to the workers, gone when the proxy stops
    (worker,) = children(proxy.proc.pid)
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    (shared,) = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    directory = Path(shared.decode())
    assert directory.stat().st_mode & 0o777 == 0o700
    assert {p.name for p in directory.iterdir()} <= {
        f"{kind}_{slot}.db"
        for kind in ("counter", "gauge_livesum", "gauge_livemax", "histogram")
        for slot in (0, 1)
    }
    proxy.stop()
    assert not directory.exists()


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


@pytest_twisted.ensureDeferred
async def test_calls_to_bbs_uaa_and_cloud_controller(tmp_path: Path) -> None:
    world = CFWorld(tmp_path)
    debugPort = freePort()
    try:
        proxy = await world.start(extra=(f"--debugAddr=127.0.0.1:{debugPort}",))
        ok = await cfLogin(proxy, world.uaa.issueCode("alice"), "echo cf")
        assert ok.stdout == b"cf\n", ok.stderr
        refused = await cfLogin(proxy, "not-a-code", "true")
        assert refused.returncode != 0
        page = await threads.deferToThread(scrape, debugPort)
        after = samples(page)

        def calls(service: str, outcome: str) -> float:
            name = "diegossh_proxy_http_call_seconds_count"
            return after.get(f'{name}{{outcome="{outcome}",service="{service}"}}', 0.0)

        assert calls("uaa", "2xx") == 1 and calls("uaa", "4xx") == 1
        assert calls("cloud_controller", "2xx") >= 1
        assert calls("bbs", "2xx") >= 1
        assert after['diegossh_logins_total{outcome="success",realm="cf",reason="none"}'] == 1
        credentials = 'diegossh_logins_total{outcome="failure",realm="cf",reason="credentials"}'
        assert after[credentials] == 1
        assertNothingIdentifying(page, "alice", "not-a-code", "ssh-proxy-secret", APP)
    finally:
        await world.stop()


@pytest.fixture
def started() -> Iterator[list[Running]]:
    running: list[Running] = []
    yield running
    for daemon in running:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def test_the_daemon_counts_when_asked(tmp_path: Path, started: list[Running]) -> None:
    identity, authorized = userIdentity(tmp_path)
    port, debugPort = freePort(), freePort()
    arguments = [
        *ccArguments(port, ccHostKey(), authorized),
        f"-debugAddr=127.0.0.1:{debugPort}",
        "-enableMetrics",
    ]
    daemon = serve(tmp_path, started, arguments, environment(tmp_path), port)
    # serve's probe of the port was a connection too
    before = eventuallyBlocking(
        lambda: (lambda now: now if now["diegossh_connections_open"] == 0 else None)(
            samples(scrape(debugPort))
        ),
        "the probe closed",
    )
    ran = login(daemon, identity, "echo done")
    assert (ran.returncode, ran.stdout) == (0, b"done\n"), ran.stderr
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)  # fmt: skip
    assert login(daemon, stranger, "true").returncode != 0

    def settled() -> dict[str, float] | None:
        now = samples(scrape(debugPort))
        return now if now["diegossh_connections_open"] == 0 else None

    after = eventuallyBlocking(settled, "both connections closed")
    assert delta(after, before, "diegossh_connections_total") == 2
    assert after['diegossh_logins_total{outcome="success",realm="sshd",reason="none"}'] == 1
    assert after['diegossh_logins_total{outcome="failure",realm="sshd",reason="credentials"}'] >= 1
    assert after['diegossh_channels_opened_total{type="session"}'] == 1
    assert after['diegossh_channels_open{type="session"}'] == 0
    assertNothingIdentifying(scrape(debugPort), "vcap", authorized.split()[1])
    assert daemon.stop() == 0
