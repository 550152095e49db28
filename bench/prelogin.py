"""
Before login (issue 12): an ordinary OpenSSH user's login latency through
diego-ssh-proxy while someone else attacks it before logging in, and what the
attack makes the proxy and diego-sshd hold.

For each scenario a fresh diego-sshd and a fresh proxy in front of it are
started (L{tests.support.attacks.startServers}) with the services' default
pre-login settings: no exempt address (the test helpers otherwise exempt
127.0.0.1). Everything is on loopback; the attack comes from C{ATTACKER}
(127.0.0.3), the ordinary user from C{USER_SOURCE} (127.0.0.2).

  - C{none}: no attack;
  - C{flood}: C{FLOOD} silent connections from the attacker, held open, plus a
    trickle of C{TRICKLE} from each of C{TRICKLE_SOURCES} (127.0.0.4...); none
    sends a byte;
  - C{guess}: C{GUESSERS} OpenSSH password guessers from the attacker in
    parallel, each connection trying a wrong password as many times as the
    server lets it (C{NumberOfPasswordPrompts=20}, C{SSH_ASKPASS}), then
    reconnecting at once, for C{GUESS_SECONDS}.

Each scenario: one warm-up login, the attack is set up, then C{logins}
sequential C{sshpass ssh -b 127.0.0.2 ... true} through the proxy, timed from
start to exit (the bench's client settings). Meanwhile the servers' VmRSS and
open descriptors (/proc/PID/status, /proc/PID/fd) are sampled every 50 ms
(L{ProcessWatch}); reported: before the attack and the peak during it, and
their CPU time from the attack's start to the last login's end. A
connection of the attacker counts as refused when the server closed it before
sending its version line.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.world import raiseFileLimit, writeClientConfig
from tests.support.attacks import ProcessWatch, Servers, Usage, fdCount, rssKiB, startServers
from tests.support.proxy import CREDENTIALS

ATTACKER = "127.0.0.3"
USER_SOURCE = "127.0.0.2"
TRICKLE_SOURCES = ("127.0.0.4", "127.0.0.5", "127.0.0.6")
FLOOD = 1000
TRICKLE = 10
GUESSERS = 4
GUESS_SECONDS = 12.0
# The services' defaults: no exempt address (startServers would exempt 127.0.0.1).
# Not with another checkout's code (PYTHONPATH, to measure before issue 12): it may not
# know the flag, and startServers exempts nothing then.
DEFAULTS = () if os.environ.get("PYTHONPATH") else ("--perSourcePenaltyExemptList=",)
SCENARIOS = {
    "none": "no attack",
    "flood": f"{FLOOD} silent connections from {ATTACKER}, "
    f"+{TRICKLE} from each of {len(TRICKLE_SOURCES)} others",
    "guess": f"{GUESSERS} parallel password guessers from {ATTACKER}",
}


@dataclass
class PreloginRun:
    scenario: str
    logins: list[float] = field(default_factory=list)  # seconds, the ordinary user's
    loginFailures: list[str] = field(default_factory=list)
    before: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (KiB, fds)
    usage: dict[str, Usage] = field(default_factory=dict)
    attempts: int = 0  # the attacker's connections
    refused: int = 0  # of those, closed before the server's version line
    admitted: int = 0  # of those, that got a version line
    guesses: int = 0  # wrong passwords sent
    trickle: tuple[int, int] = (0, 0)  # (admitted, refused) from the other sources
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.logins) if self.logins else None


@dataclass
class PreloginResult:
    runs: list[PreloginRun] = field(default_factory=list)
    seconds: float = 0.0


def _loginArgv(config: Path, servers: Servers) -> list[str]:
    return [
        "sshpass", "-e", "ssh", "-F", str(config), "-o", "BatchMode=no",
        "-o", "PubkeyAuthentication=no", "-o", f"User=diego:{servers.guid}/0",
        "-o", f"BindAddress={USER_SOURCE}", "-p", str(servers.proxy.port), "127.0.0.1", "true",
    ]  # fmt: skip


def _login(run: PreloginRun, argv: list[str], env: dict[str, str]) -> None:
    start = time.perf_counter()
    result = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
    )
    if result.returncode == 0:
        run.logins.append(time.perf_counter() - start)
    else:
        run.loginFailures.append(result.stderr.decode(errors="replace").strip()[-160:])


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def _classify(socks: list[socket.socket], wait: float = 2.0) -> tuple[int, int]:
    """
    (admitted, refused): a version line, or closed before one; sockets that
    have said nothing within C{wait} count as neither.
    """
    admitted = refused = 0
    deadline = time.monotonic() + wait
    for sock in socks:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(256)
        except TimeoutError:
            continue
        except OSError:
            data = b""
        if data.startswith(b"SSH-"):
            admitted += 1
        elif not data:
            refused += 1
    return admitted, refused


def _flood(run: PreloginRun, servers: Servers, logins: int, argv: list[str], env: dict) -> None:
    socks: list[socket.socket] = []
    trickle: list[socket.socket] = []
    try:
        with ProcessWatch(servers.pids()) as watch:
            for i in range(FLOOD):
                socks.append(_connect(servers.proxy.port, ATTACKER))
                if i % (FLOOD // TRICKLE) == 0:
                    for source in TRICKLE_SOURCES:
                        trickle.append(_connect(servers.proxy.port, source))
            run.attempts = len(socks)
            run.admitted, run.refused = _classify(socks)
            run.trickle = _classify(trickle, 1.0)
            for _ in range(logins):
                _login(run, argv, env)
        run.usage = watch.usage
    finally:
        for sock in (*socks, *trickle):
            sock.close()


class _Guessers:
    """C{GUESSERS} threads, each running OpenSSH guessers one after the other."""

    def __init__(self, tmp: Path, config: Path, servers: Servers, seconds: float) -> None:
        self.counter = tmp / "guesses"
        askpass = tmp / "askpass"
        askpass.write_text(f"#!/bin/sh\necho x >> {self.counter}\necho wrong-password\n")
        askpass.chmod(0o755)
        self.argv = [
            "ssh", "-F", str(config), "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=20",
            "-o", f"User=diego:{servers.guid}/0", "-o", f"BindAddress={ATTACKER}",
            "-p", str(servers.proxy.port), "127.0.0.1", "true",
        ]  # fmt: skip
        self.env = {
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "PATH": "/usr/bin:/bin",
        }
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.attempts = self.refused = self.failed = 0
        self.other: list[str] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(GUESSERS)]

    def _loop(self) -> None:
        while time.monotonic() < self.deadline:
            result = subprocess.run(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                timeout=60, check=False,
            )  # fmt: skip
            err = result.stderr
            with self.lock:
                self.attempts += 1
                if b"kex_exchange_identification" in err:
                    self.refused += 1  # closed or reset before the version line
                elif b"Permission denied" in err or b"Too many authentication" in err:
                    self.failed += 1
                else:
                    self.other.append(err.decode(errors="replace").strip()[-120:])

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(self.deadline - time.monotonic() + 70)

    @property
    def guesses(self) -> int:
        try:
            return len(self.counter.read_text().splitlines())
        except OSError:
            return 0


def _guess(
    run: PreloginRun, tmp: Path, config: Path, servers: Servers, logins: int, argv: list[str],
    env: dict,
) -> None:  # fmt: skip
    guessers = _Guessers(tmp, config, servers, GUESS_SECONDS)
    with ProcessWatch(servers.pids()) as watch:
        guessers.start()
        # Let the guessers fail their way into a penalty first, then log in meanwhile.
        time.sleep(3)
        for _ in range(logins):
            _login(run, argv, env)
        guessers.join()
    run.usage = watch.usage
    run.attempts, run.refused, run.guesses = guessers.attempts, guessers.refused, guessers.guesses
    run.admitted = guessers.failed
    if guessers.other:
        run.error = f"{len(guessers.other)} other outcomes, first: {guessers.other[0]}"


def oneRun(tmp: Path, scenario: str, logins: int) -> PreloginRun:
    run = PreloginRun(scenario)
    home = Path(tempfile.mkdtemp(prefix=f"prelogin-{scenario}-", dir=tmp))
    servers = startServers(home, daemonArgs=DEFAULTS, proxyArgs=DEFAULTS)
    try:
        config = home / "ssh_config"
        writeClientConfig(config, servers.daemon.identity)
        argv = _loginArgv(config, servers)
        env = servers.proxy.env(CREDENTIALS)
        _login(run, argv, env)  # warm-up: a first login on both
        run.logins.clear()
        run.before = {n: (rssKiB(p), fdCount(p)) for n, p in servers.pids().items()}
        if scenario == "none":
            with ProcessWatch(servers.pids()) as watch:
                for _ in range(logins):
                    _login(run, argv, env)
            run.usage = watch.usage
        elif scenario == "flood":
            _flood(run, servers, logins, argv, env)
        elif scenario == "guess":
            _guess(run, home, config, servers, logins, argv, env)
        else:
            raise ValueError(scenario)
    except (OSError, subprocess.TimeoutExpired) as e:
        run.error = f"{type(e).__name__}: {e}"
    finally:
        servers.stop()
        shutil.rmtree(home, ignore_errors=True)
    return run


def beforeLogin(logins: int = 5) -> PreloginResult:
    started = time.monotonic()
    raiseFileLimit()
    result = PreloginResult()
    tmp = Path(tempfile.mkdtemp(prefix="diegossh-bench-prelogin-"))
    try:
        for scenario in SCENARIOS:
            run = oneRun(tmp, scenario, logins)
            result.runs.append(run)
            print(f"  prelogin {scenario}: {summary(run)}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def latency(run: PreloginRun) -> str:
    if not run.logins:
        return "failed"
    values = sorted(run.logins)
    low, high = 1000 * values[0], 1000 * values[-1]
    text = f"{1000 * statistics.median(values):.0f} ({low:.0f}-{high:.0f})"
    if run.loginFailures:
        text += f", {len(run.loginFailures)} failed"
    return text


def held(run: PreloginRun, name: str) -> str:
    """RSS and descriptors before the attack -> peak during it; CPU time during it."""
    usage = run.usage.get(name)
    before = run.before.get(name)
    if usage is None or before is None:
        return "-"
    return (
        f"{before[0] / 1024:.1f} -> {usage.peakKiB / 1024:.1f} MiB, "
        f"{before[1]} -> {usage.peakFds} fds, CPU {usage.cpu:.1f} s"
    )


def attacker(run: PreloginRun) -> str:
    if run.scenario == "none":
        return "-"
    if run.scenario == "flood":
        return (
            f"{run.refused} of {run.attempts} refused, {run.admitted} held; others: "
            f"{run.trickle[0]} held, {run.trickle[1]} refused"
        )
    return (
        f"{run.refused} of {run.attempts} connections refused, {run.admitted} failed "
        f"({run.guesses} wrong passwords) in {GUESS_SECONDS:g} s"
    )


def summary(run: PreloginRun) -> str:
    text = (
        f"login {latency(run)} ms; proxy {held(run, 'proxy')}; daemon {held(run, 'daemon')}; "
        f"{attacker(run)}"
    )
    if run.loginFailures:
        text += f"; first login failure: {run.loginFailures[0]}"
    if run.error:
        text += f"; {run.error}"
    return text
