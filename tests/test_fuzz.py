"""
The mutation fuzzer (L{tests.support.fuzz}) against a real C{twistd
diego-sshd} and a real C{twistd diego-ssh-proxy} in front of it: every case
mutates one message of a scripted session, and neither service may log a
traceback, an error or the payload, leave the connection hanging, or refuse
the next login. See docs/hardening.md.

C{DIEGOSSH_FUZZ_SEED}, C{DIEGOSSH_FUZZ_CASES} (per service) and
C{DIEGOSSH_FUZZ_CONCURRENCY} override the defaults, to explore further than
CI does.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import protocol

from tests.support import fuzz
from tests.support.daemon import Daemon, startDaemon
from tests.support.fuzz import EchoServer
from tests.support.fuzz_scenarios import SCENARIOS, SOURCE_CONTENT, reactor
from tests.support.keys import key
from tests.support.proxy import CREDENTIALS, Proxy, fingerprintOf, lrp, startProxy

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SEED = int(os.environ.get("DIEGOSSH_FUZZ_SEED", "20261202"))
CASES = int(os.environ.get("DIEGOSSH_FUZZ_CASES", "1500"))
CONCURRENCY = int(os.environ.get("DIEGOSSH_FUZZ_CONCURRENCY", "8"))


@dataclass
class World:
    daemon: Daemon
    proxy: Proxy
    echoPort: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fuzz")
    hostKey = tmp / "daemon_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}",))
    (daemon.home / "fz-src.txt").write_bytes(SOURCE_CONTENT)
    route = {
        "container_port": 2222,
        "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
        "user": "vcap",
        "private_key": key("ed25519").toString("openssh").decode(),
    }
    proxy = startProxy(tmp, [lrp("app", "127.0.0.1", daemon.port, route)],
                       extraArgs=("--communicationTimeout=5s",))  # fmt: skip
    echo = reactor().listenTCP(0, protocol.Factory.forProtocol(EchoServer),
                                    interface="127.0.0.1")  # fmt: skip
    try:
        yield World(daemon, proxy, echo.getHost().port)
    finally:
        echo.stopListening()
        proxy.stop()
        daemon.stop()


def daemonTarget(world: World) -> fuzz.Target:
    return fuzz.Target(
        world.daemon.port,
        b"vcap",
        key=key("ed25519"),
        logs=[fuzz.LogWatcher(world.daemon.log, "diego-sshd")],
        echoPort=world.echoPort,
    )


def proxyTarget(world: World) -> fuzz.Target:
    return fuzz.Target(
        world.proxy.port,
        b"diego:app/0",
        password=CREDENTIALS.encode(),
        logs=[
            fuzz.LogWatcher(world.proxy.log, "ssh-proxy"),
            fuzz.LogWatcher(world.daemon.log, "diego-sshd"),
        ],
        echoPort=world.echoPort,
    )


async def fuzzService(target: fuzz.Target, seed: int, count: int) -> None:
    started = time.monotonic()
    login = await fuzz.recordLogin(target)
    for watcher in target.logs:
        watcher.read()
    cases = fuzz.planCases(seed, count, login)
    failed: list[fuzz.Outcome] = []
    outcomes: dict[str, int] = {}
    for outcome in await fuzz.runCases(target, cases, CONCURRENCY):
        outcomes[outcome.ended] = outcomes.get(outcome.ended, 0) + 1
        if outcome.problems:
            failed.append(outcome)
    # the last case is followed by a fresh login too
    final = await fuzz.runCase(target, fuzz.Case(len(cases), "global", 0, "keepalive",
                                                 fuzz.Mutation("append", 0, 1)))  # fmt: skip
    if final.problems:
        failed.append(final)
    elapsed = time.monotonic() - started
    print(f"{len(cases)} cases (seed {seed}) in {elapsed:.1f} s: {outcomes}")
    assert not failed, report(failed)


def report(failed: list[fuzz.Outcome]) -> str:
    distinct = fuzz.distinctProblems(failed)
    lines = [f"{len(failed)} failing cases, {len(distinct)} distinct problems:"]
    for signature, (first, count) in distinct.items():
        lines.append(f"  {count} x {signature}")
        lines.append(f"      first: {first.case.describe()}: {first.describeSent()}")
    for outcome in failed[:40]:
        lines.append(f"--- {outcome.case.describe()} ({outcome.ended})")
        lines += [f"    {p}" for p in outcome.problems]
    return "\n".join(lines)


@pytest_twisted.ensureDeferred
async def test_fuzz_daemon(world: World) -> None:
    await fuzzService(daemonTarget(world), SEED, CASES)


@pytest_twisted.ensureDeferred
async def test_fuzz_proxy(world: World) -> None:
    await fuzzService(proxyTarget(world), SEED + 1, CASES)


# -- the fuzzer's own parts, in memory


def test_mutations() -> None:
    payload = bytes(range(12))
    assert fuzz.Mutation("truncate", 5).apply(94, payload) == (94, payload[:5])
    assert fuzz.Mutation("flip", 2, 0xFF).apply(94, payload)[1][2] == 2 ^ 0xFF
    assert fuzz.Mutation("flip", 99, 1).apply(94, payload)[1][-1] == 11 ^ 1  # clamped
    assert fuzz.Mutation("setu32", 0, -1).apply(94, payload)[1][:4] == b"\0\1\2\4"
    assert fuzz.Mutation("setu32", 8, 0).apply(94, payload)[1][8:] == b"\0" * 4
    assert fuzz.Mutation("insertu32", 4, 0xFFFFFFFF).apply(94, payload)[1] == (
        payload[:4] + b"\xff" * 4 + payload[4:]
    )
    assert fuzz.Mutation("swap", 0, 1).apply(94, payload) == (1, payload)
    junk = fuzz.Mutation("append", 0, 7).apply(94, payload)[1]
    assert junk.startswith(payload) and len(junk) == 12 + 8


def test_plan_is_seeded() -> None:
    login = [("KEXINIT", 20, bytes(100)), ("USERAUTH password", 50, bytes(40))]
    first = fuzz.planCases(5, 300, login)
    assert first == fuzz.planCases(5, 300, login)
    assert first != fuzz.planCases(6, 300, login)
    assert len(first) == 300
    # every scenario and the login messages are in the plan
    assert {case.scenario for case in first} == {"login", *SCENARIOS}
