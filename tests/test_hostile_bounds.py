"""
Issue 11, "no client can exhaust the proxy or the daemon", end to end: the
hostile clients of L{tests.support.attacks} against a real C{twistd diego-sshd}
and a real C{twistd diego-ssh-proxy} in front of it (fresh subprocesses for
every test, so each server's resident memory is its own and honest), with a
normal OpenSSH session running on the same path during each attack.

For each attack the test first asserts that the attack really happened (data
flowed before the client stalled, the login succeeded, the commands ran), then
checks every bound at once and reports all that failed:

  - A, a key exchange that never finishes: each server grows < 16 MiB, and
    the connection ends with a DISCONNECT within the key-exchange time limit;
  - B, a 4 GiB window never read: each server grows < 16 MiB;
  - C, a maximum packet of 1 byte: the open is refused (a 16 KiB one is not);
  - D, authentication after authentication: no second success, one access-log
    login, one backend connection, the password in no log, nothing (listeners,
    descriptors, backend connections) outliving the connection;
  - E, 10,000 channel opens: no more than the session limit confirmed, the
    rest refused with the connection kept, at most that many processes;
  - F, exec then close or drop at once, 20 times: no process survives;
  - and for all: the ordinary session works, descriptors come back to baseline.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import attacks
from tests.support.attacks import MiB, ProcessWatch, Servers, startServers

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.timeout(60)]

GROWTH_LIMIT_MIB = 16  # per hostile connection, per server process
# Past this an attack stops early: the bound is long broken, spare the machine.
WATCH_LIMIT_KIB = 256 * 1024
# The key-exchange time limit the servers get for attack A (see startServers).
KEX_TIMEOUT = 3.0
REKEY_BYTES = 32 * MiB  # for the servers that re-key first, in attack A
ORDINARY_BYTES = 4 * MiB
PATHS = ["daemon", "proxy"]


def sessionLimit() -> int:
    """The per-connection session limit the servers enforce (OpenSSH's MaxSessions: 10)."""
    try:
        from diegossh.ssh import connection
    except ImportError:
        return 10
    return int(getattr(connection, "MAX_SESSIONS", 10))


def minimumMaxPacket() -> int | None:
    try:
        from diegossh.ssh import connection
    except ImportError:
        return None
    value = getattr(connection, "MIN_PEER_MAX_PACKET", None)
    return int(value) if value is not None else None


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    pair = startServers(tmp_path, kexTimeout=KEX_TIMEOUT)
    try:
        # One login on each path first, so the baselines include what any login loads once.
        ordinary(pair, "proxy", 1024)
        yield pair
    finally:
        pair.stop()


def ordinary(servers: Servers, path: str, size: int = ORDINARY_BYTES) -> str:
    """
    An OpenSSH session on C{path} that downloads C{size} bytes; "" if it worked,
    else what went wrong.
    """
    command = f"head -c {size} /dev/zero | wc -c"
    if path == "daemon":
        argv = servers.daemon.ssh(command)
        env = None
    else:
        argv = servers.proxy.ssh("diego:app/0", command)
        env = servers.proxy.env()
    try:
        result = subprocess.run(
            argv, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        return f"ordinary session on {path}: no answer within 20 s"
    if result.returncode != 0 or result.stdout.strip() != str(size).encode():
        return (
            f"ordinary session on {path}: exit {result.returncode}, "
            f"out {result.stdout[-200:]!r}, err {result.stderr[-300:]!r}"
        )
    return ""


class Checks:
    """Every bound checked, all failures reported together."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.failed: list[str] = []

    def that(self, ok: bool, message: str) -> None:
        if not ok:
            self.failed.append(message)

    def growth(self, watch: ProcessWatch, connections: int = 1) -> None:
        limit = GROWTH_LIMIT_MIB * connections
        cut = "; the attack was cut short at the watch's limit" if watch.exceeded.is_set() else ""
        for name, usage in watch.usage.items():
            self.that(
                usage.growthMiB < limit,
                f"{name} grew {usage.growthMiB:.1f} MiB ({usage.baseKiB // 1024} -> "
                f"{usage.peakKiB // 1024} MiB; limit {limit} MiB{cut})",
            )

    def ordinary(self, outcome: attacks.Outcome) -> None:
        if outcome.duringError is not None:
            self.failed.append(f"ordinary session raised {outcome.duringError!r}")
        elif outcome.duringResult:
            self.failed.append(str(outcome.duringResult))

    def descriptors(self, servers: Servers, baseline: dict[str, int]) -> None:
        for name, pid in servers.pids().items():
            now = attacks.settledFds(pid, baseline[name])
            self.that(
                now <= baseline[name],
                f"{name} holds {now} descriptors after the attack, {baseline[name]} before",
            )

    def done(self) -> None:
        if self.failed:
            raise AssertionError(f"{self.title}:\n  - " + "\n  - ".join(self.failed))


def fds(servers: Servers) -> dict[str, int]:
    return {name: attacks.fdCount(pid) for name, pid in servers.pids().items()}


def during(servers: Servers, path: str) -> Callable[[], str]:
    return lambda: ordinary(servers, path)


# -- A


@pytest.fixture
def rekeyingServers(tmp_path: Path) -> Iterator[Servers]:
    """Servers that start a re-key of their own after 32 MiB instead of 1 GiB."""
    pair = startServers(tmp_path, kexTimeout=KEX_TIMEOUT, rekeyBytes=REKEY_BYTES)
    try:
        ordinary(pair, "proxy", 1024)
        yield pair
    finally:
        pair.stop()


def stalledKeyExchange(servers: Servers, path: str, mode: str) -> None:
    limit = servers.kexTimeout
    assert limit is not None
    baseline = fds(servers)
    with ProcessWatch(servers.pids(), limitKiB=WATCH_LIMIT_KIB) as watch:
        outcome = attacks.kexStall(
            servers.target(path),
            seconds=limit + 4,
            mode=mode,
            rekeyWait=20,
            stop=watch.exceeded,
            during=during(servers, path),
        )
    assert outcome.bytesBeforeStall >= MiB, "no data flowed before the stall"
    check = Checks(f"A, key exchange never finished ({path}, {mode}; {servers.kexTimeoutHow})")
    check.that(outcome.serverKexInit, "the server never answered our KEXINIT")
    check.growth(watch)
    if not outcome.stoppedEarly:
        check.that(
            outcome.disconnect is not None,
            f"no DISCONNECT within {outcome.seconds:.0f} s (key-exchange limit {limit:g} s); "
            + ("the server closed the socket silently" if outcome.closedByServer else "still open"),
        )
        check.that(
            outcome.closedAfter is not None and outcome.closedAfter <= limit + 2,
            f"closed {outcome.closedAfter} s after the stall, limit {limit:g} s",
        )
    check.ordinary(outcome)
    check.descriptors(servers, baseline)
    check.done()


@pytest.mark.parametrize("path", PATHS)
def test_unfinished_key_exchange(servers: Servers, path: str) -> None:
    """
    The client re-keys in the middle of C{cat /dev/zero} on a 4 GiB window,
    keeps reading, and never sends its key-exchange reply.
    """
    stalledKeyExchange(servers, path, "initiate")


@pytest.mark.parametrize("path", PATHS)
def test_unfinished_key_exchange_the_server_started(rekeyingServers: Servers, path: str) -> None:
    """
    The server re-keys (after 32 MiB here) in the middle of C{cat /dev/zero}
    on a 4 GiB window; the client answers its KEXINIT with its own, keeps
    reading, and goes no further.
    """
    stalledKeyExchange(rekeyingServers, path, "answer")


# -- B


@pytest.mark.parametrize("path", PATHS)
def test_huge_window_never_read(servers: Servers, path: str) -> None:
    """
    A 4 GiB window on C{cat /dev/zero}; after the first MiB the client never
    reads its socket again.
    """
    baseline = fds(servers)
    with ProcessWatch(servers.pids(), limitKiB=WATCH_LIMIT_KIB) as watch:
        outcome = attacks.neverRead(
            servers.target(path), seconds=6, stop=watch.exceeded, during=during(servers, path)
        )
    assert outcome.bytesBeforeStall >= MiB, "no data flowed before the client stopped reading"
    check = Checks(f"B, huge window never read ({path})")
    check.growth(watch)
    check.ordinary(outcome)
    check.descriptors(servers, baseline)
    check.done()


# -- C


@pytest.mark.parametrize("path", PATHS)
def test_maximum_packet_of_one_byte(servers: Servers, path: str) -> None:
    """
    A session channel announcing a maximum packet of 1 byte, then
    C{head -c 1M /dev/zero} if the server took it.
    """
    baseline = fds(servers)
    with ProcessWatch(servers.pids(), limitKiB=WATCH_LIMIT_KIB) as watch:
        outcome = attacks.tinyPackets(
            servers.target(path),
            seconds=3,
            command="head -c 1M /dev/zero",
            stop=watch.exceeded,
            during=during(servers, path),
        )
    floor = minimumMaxPacket()
    check = Checks(
        f"C, maximum packet 1 ({path}; MIN_PEER_MAX_PACKET "
        + (f"{floor}" if floor is not None else "not defined")
        + ")"
    )
    check.that(
        outcome.refused,
        f"the open was confirmed: {outcome.bytes} bytes came in {outcome.messages} messages "
        f"in {outcome.transferSeconds:.1f} s",
    )
    check.that(outcome.disconnect is None, f"refused with a disconnect {outcome.disconnect}")
    check.growth(watch)
    check.ordinary(outcome)
    # A maximum packet real clients use (PuTTY: 16 KiB) still opens.
    client = attacks.HostileClient.login(servers.target(path))
    try:
        channel = client.openChannel(maxPacket=16 * 1024)
        check.that(channel.confirmed, f"a 16 KiB maximum packet was refused: {channel.failure}")
    finally:
        client.close()
    check.descriptors(servers, baseline)
    check.done()


# -- D


def loginSuccesses(servers: Servers) -> int:
    return sum(
        1
        for e in servers.proxy.accessEvents()
        if e.get("event") == "login" and e.get("outcome") == "success"
    )


@pytest.mark.parametrize("path", PATHS)
def test_authentication_after_authentication(servers: Servers, path: str) -> None:
    """
    A login of three requests sent back to back; then a remote forwarding, a
    password request carrying a secret, a second ssh-userauth service
    request, a second login with the right credentials, a second remote
    forwarding.
    """
    secret = f"hostile-secret-{attacks.newMarker()}"
    baseline = fds(servers)
    successes = loginSuccesses(servers)
    seen: dict[str, Any] = {}

    def observe() -> str:
        # While the hostile connection is held, before the ordinary session logs in.
        seen["backends"] = attacks.socketCount(servers.daemon.port)
        seen["successes"] = loginSuccesses(servers) - successes
        return ordinary(servers, path)

    with ProcessWatch(servers.pids(), limitKiB=WATCH_LIMIT_KIB) as watch:
        outcome = attacks.authAgain(
            servers.target(path), secret=secret, seconds=1, stop=watch.exceeded, during=observe
        )
    assert outcome.firstForwardPort, "the first remote forwarding failed: the attack did not start"
    check = Checks(f"D, authentication after authentication ({path})")
    check.that(
        outcome.loginSuccesses == 1,
        f"{outcome.loginSuccesses} USERAUTH_SUCCESS for 3 requests sent back to back",
    )
    check.that(
        not outcome.secondSuccess,
        f"a second login succeeded (replies to the service request {outcome.serviceReplies}, "
        f"to the login {outcome.authReplies})",
    )
    check.that(
        seen.get("backends", 0) <= 1,
        f"{seen.get('backends')} connections to diego-sshd for one hostile connection",
    )
    if path == "proxy":
        check.that(
            seen.get("successes") == 1,
            f"{seen.get('successes')} access-log login successes for one connection",
        )
    ports = [p for p in (outcome.firstForwardPort, outcome.laterForwardPort) if p]
    attacks.waitFor(lambda: not any(attacks.listening(p) for p in ports), 5)
    for port in ports:
        check.that(
            not attacks.listening(port),
            f"remote-forward listener on port {port} outlived the connection",
        )
    check.that(
        attacks.waitFor(lambda: attacks.socketCount(servers.daemon.port) == 0, 5),
        f"{attacks.socketCount(servers.daemon.port)} connections to diego-sshd outlived it",
    )
    from tests.support.proxy import CREDENTIALS

    logs = {
        "diego-sshd log": servers.daemon.log,
        "proxy log": servers.proxy.log,
        "access log": servers.proxy.accessLog,
    }
    for name, log in logs.items():
        text = log.read_text() if log.exists() else ""
        for word in (secret, CREDENTIALS):
            check.that(word not in text, f"the {name} carries the password {word!r}")
    check.growth(watch)
    check.ordinary(outcome)
    check.descriptors(servers, baseline)
    check.done()


# -- E


@pytest.mark.parametrize("path", PATHS)
def test_ten_thousand_channel_opens(servers: Servers, path: str) -> None:
    """
    10,000 session opens on one connection; then, on another, 30 opens each
    running a command.
    """
    limit = sessionLimit()
    baseline = fds(servers)
    with ProcessWatch(servers.pids(), limitKiB=WATCH_LIMIT_KIB) as watch:
        outcome = attacks.manyChannels(
            servers.target(path),
            count=10_000,
            seconds=0.5,
            stop=watch.exceeded,
            during=during(servers, path),
        )
    assert outcome.confirmed >= 1, f"not one session opened: {outcome.firstFailure}"
    check = Checks(f"E, 10,000 channel opens ({path}; session limit {limit})")
    check.that(
        outcome.confirmed <= limit,
        f"{outcome.confirmed} of {outcome.asked} opens confirmed (limit {limit})",
    )
    check.that(
        outcome.unanswered == 0 or outcome.stoppedEarly,
        f"{outcome.unanswered} opens never answered",
    )
    check.that(
        outcome.disconnect is None and not outcome.closedByServer,
        f"the connection was dropped instead of refusing opens: {outcome.disconnect}",
    )
    check.growth(watch)
    check.ordinary(outcome)

    marker = attacks.newMarker()
    counted: dict[str, int] = {}

    def count() -> None:
        counted["processes"] = len(attacks.processesWith(marker))

    try:
        processes = attacks.manyChannels(
            servers.target(path), count=30, command=f"sleep {marker}", seconds=0.5, during=count
        )
    finally:
        attacks.killProcesses(attacks.processesWith(marker))
    assert processes.confirmed >= 1, f"no session for a command: {processes.firstFailure}"
    check.that(
        processes.execStarted <= limit,
        f"one connection started {processes.execStarted} commands "
        f"({counted.get('processes')} processes; limit {limit} sessions)",
    )
    check.descriptors(servers, baseline)
    check.done()


# -- F


@pytest.mark.parametrize("path", PATHS)
def test_no_orphans(servers: Servers, path: str) -> None:
    """
    20 times: exec C{sleep MARKER; true}, then close the channel or drop the
    connection, with or without waiting for the exec's reply.

    The survivors are counted once none has been seen for 4 s, or after 30 s:
    a daemon short of CPU (a loaded CI machine) may still be working through
    the last sessions' exec requests when the rounds end, and a program it
    starts then is hung up (and killed 2 s later) only then. Counting at the
    first moment none was seen caught such a late bash alive (reproduced with
    the CPUs busy; 0 of 12 runs fail with the quiet period, 2 of 6 did without).
    """
    baseline = fds(servers)
    with ProcessWatch(servers.pids(), limitKiB=WATCH_LIMIT_KIB) as watch:
        outcome = attacks.orphans(
            servers.target(path), rounds=20, grace=30, during=during(servers, path)
        )
    assert outcome.started >= 5, f"only {outcome.started} commands started: {outcome.firstError}"
    check = Checks(f"F, orphans ({path})")
    check.that(
        not outcome.survivors,
        f"{len(outcome.survivors)} processes survived {outcome.rounds} sessions "
        f"({outcome.started} confirmed started; killed now)",
    )
    check.growth(watch)
    check.ordinary(outcome)
    check.descriptors(servers, baseline)
    check.done()
