"""
Hostile clients (issue 11): each attack of L{tests.support.attacks} against a
fresh diego-sshd and a fresh diego-ssh-proxy in front of it, while an
ordinary OpenSSH download runs through that proxy.

For every attack and path (the daemon directly, or through the proxy), a new
pair of servers is started, so one attack's leftovers (memory Python keeps,
descriptors, processes) never show up in the next one's figures. Then:

  1. the ordinary transfer alone, ceil(C{runs}/2) times before the attack and
     as many after it (median of all): C{ssh ... head -c N /dev/zero} through
     the proxy to the daemon, with the bench's OpenSSH client settings, timed
     from start to exit; the servers' CPU time over the runs before gives the
     CPU one transfer costs;
  2. the attack, holding its hostile state for C{hold} seconds and for as
     long as the same C{runs} transfers (one after the other, started once
     the attack is in that state) take; meanwhile the servers' resident
     memory is sampled every 50 ms (and their VmHWM read at the end), their
     CPU time read before and after.

Reported per attack and path: each server's peak RSS growth, its CPU time
over the attack less what the C{runs} ordinary transfers cost alone, the
transfer's median time during the attack over its median alone, and what the
attack saw. An attack stops early
once a server has grown by C{limitMiB} (1 GiB), so the machine survives the
unfixed code.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import BenchFailure, timed
from bench.world import writeClientConfig
from tests.support import attacks
from tests.support.attacks import ProcessWatch, Servers, Target, Usage, startServers
from tests.support.proxy import CREDENTIALS

ATTACKS = {
    "A": "key exchange never finished",
    "B": "4 GiB window never read",
    "C": "maximum packet 1",
    "D": "authentication after authentication",
    "E": "10,000 channel opens",
    "F": "exec, then close or drop at once (20x)",
}
PATHS = ("daemon", "proxy")
GROWTH_TARGET_MIB = 16
SLOWDOWN_TARGET = 1.25


@dataclass
class HostileRun:
    attack: str
    path: str
    usage: dict[str, Usage] = field(default_factory=dict)
    alone: list[float] = field(default_factory=list)  # seconds per transfer
    aloneCPU: dict[str, float] = field(default_factory=dict)  # per transfer, per process
    during: list[float] = field(default_factory=list)  # seconds per transfer, during the attack
    transfers: int = 1
    seen: str = ""  # what the attack observed, in a few words
    stoppedEarly: bool = False
    error: str | None = None

    @property
    def aloneSeconds(self) -> float | None:
        return statistics.median(self.alone) if self.alone else None

    @property
    def duringSeconds(self) -> float | None:
        return statistics.median(self.during) if self.during else None

    @property
    def slowdown(self) -> float | None:
        if self.aloneSeconds and self.duringSeconds:
            return self.duringSeconds / self.aloneSeconds
        return None

    def attackCPU(self, name: str) -> float | None:
        usage = self.usage.get(name)
        if usage is None:
            return None
        return max(0.0, usage.cpu - self.transfers * self.aloneCPU.get(name, 0.0))


@dataclass
class HostileResult:
    size: int
    hold: float
    runs: list[HostileRun] = field(default_factory=list)
    seconds: float = 0.0


def _describe(attack: str, outcome: Any) -> str:
    if attack == "A":
        closed = (
            f"closed after {outcome.closedAfter:.1f} s" if outcome.closedAfter else "not closed"
        )
        why = f" ({outcome.disconnect[1]})" if outcome.disconnect else ""
        return f"{outcome.bytesBeforeStall >> 20} MiB before the stall; {closed}{why}"
    if attack == "B":
        return f"{outcome.bytesBeforeStall >> 20} MiB read, then none"
    if attack == "C":
        if outcome.refused:
            return f"refused: {outcome.failure[1] if outcome.failure else '?'}"
        return f"accepted: {outcome.messages} messages for {outcome.bytes} bytes"
    if attack == "D":
        second = "second login succeeded" if outcome.secondSuccess else "no second login"
        if outcome.disconnect:
            second += f"; disconnected ({outcome.disconnect[1]})"
        return second
    if attack == "E":
        return f"{outcome.confirmed} of {outcome.asked} confirmed, {outcome.refused} refused"
    if attack == "F":
        return f"{outcome.started} started, {len(outcome.survivors)} processes survived"
    return ""


def _attack(attack: str, target: Target, hold: float, stop: Any, during: Callable[[], Any]) -> Any:
    if attack == "A":
        return attacks.kexStall(target, seconds=hold, stop=stop, during=during)
    if attack == "B":
        return attacks.neverRead(target, seconds=hold, stop=stop, during=during)
    if attack == "C":
        return attacks.tinyPackets(
            target, seconds=hold, command="cat /dev/zero", stop=stop, during=during
        )
    if attack == "D":
        secret = f"bench-secret-{attacks.newMarker()}"
        return attacks.authAgain(target, secret=secret, seconds=hold, stop=stop, during=during)
    if attack == "E":
        return attacks.manyChannels(target, count=10_000, seconds=hold, stop=stop, during=during)
    if attack == "F":
        return attacks.orphans(target, rounds=20, grace=5, stop=stop, during=during)
    raise ValueError(attack)


def _transferArgv(config: Path, servers: Servers, size: int) -> list[str]:
    return [
        "sshpass", "-e", "ssh", "-F", str(config), "-o", "BatchMode=no",
        "-o", "PubkeyAuthentication=no", "-o", f"User=diego:{servers.guid}/0",
        "-p", str(servers.proxy.port), "127.0.0.1", f"head -c {size} /dev/zero",
    ]  # fmt: skip


def oneRun(
    tmp: Path, attack: str, path: str, size: int, hold: float, runs: int, limitMiB: int
) -> HostileRun:
    run = HostileRun(attack, path)
    aloneRuns = max(1, (runs + 1) // 2)
    home = Path(tempfile.mkdtemp(prefix=f"{attack}-{path}-", dir=tmp))
    servers = startServers(home)
    try:
        config = home / "ssh_config"
        writeClientConfig(config, servers.daemon.identity)
        argv = _transferArgv(config, servers, size)
        env = servers.proxy.env(CREDENTIALS)
        timed([*argv[:-1], "true"], env, timeout=30)  # warm-up: a first login on both
        pids = servers.pids()
        cpu0 = {name: attacks.cpuSeconds(pid) for name, pid in pids.items()}
        run.alone = [timed(argv, env, timeout=120) for _ in range(aloneRuns)]
        run.aloneCPU = {
            name: (attacks.cpuSeconds(pid) - cpu0[name]) / aloneRuns for name, pid in pids.items()
        }

        def transfer() -> list[float]:
            return [timed(argv, env, timeout=180) for _ in range(runs)]

        run.transfers = runs
        with ProcessWatch(pids, limitKiB=limitMiB * 1024) as watch:
            outcome = _attack(attack, servers.target(path), hold, watch.exceeded, transfer)
        run.usage = watch.usage
        run.stoppedEarly = outcome.stoppedEarly
        run.seen = _describe(attack, outcome)
        if outcome.stoppedEarly:
            run.seen += f"; stopped at +{limitMiB} MiB after {outcome.seconds:.1f} s"
        if outcome.duringError is not None:
            # BenchFailure: "ssh -F ...... exited N: <its stderr>"; keep the end.
            run.error = f"ordinary transfer {str(outcome.duringError).rsplit('... ', 1)[-1]}"
        elif isinstance(outcome.duringResult, list):
            run.during = outcome.duringResult
        # Alone again, after: the machine's load drifts; the median of both halves.
        run.alone += [timed(argv, env, timeout=120) for _ in range(aloneRuns)]
    except (BenchFailure, attacks.SSHError, OSError, subprocess.TimeoutExpired) as e:
        run.error = f"{type(e).__name__}: {e}"
    finally:
        servers.stop()
        shutil.rmtree(home, ignore_errors=True)
    return run


def hostileClients(
    size: int, hold: float, runs: int, only: str = "ABCDEF", limitMiB: int = 1024
) -> HostileResult:
    started = time.monotonic()
    result = HostileResult(size, hold)
    tmp = Path(tempfile.mkdtemp(prefix="diegossh-bench-hostile-"))
    try:
        for attack in only:
            for path in PATHS:
                run = oneRun(tmp, attack, path, size, hold, runs, limitMiB)
                result.runs.append(run)
                name = f"{attack} ({ATTACKS[attack]}) -> {path}"
                print(f"  hostile {name}: {summary(run)}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def seconds(values: list[float]) -> str:
    """Median (min-max) of some transfer times."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def growth(run: HostileRun, name: str) -> str:
    usage = run.usage.get(name)
    if usage is None:
        return "-"
    mark = "+" if usage.growthKiB >= 0 else ""
    stopped = " (stopped)" if run.stoppedEarly and usage.growthMiB > GROWTH_TARGET_MIB else ""
    return f"{mark}{usage.growthMiB:.1f}{stopped}"


def summary(run: HostileRun) -> str:
    if run.error and not run.usage:
        return f"failed: {run.error}"
    cpu = {n: run.attackCPU(n) for n in ("proxy", "daemon")}
    slowdown = f"{run.slowdown:.2f}x" if run.slowdown else "-"
    return (
        f"RSS proxy {growth(run, 'proxy')} MiB, daemon {growth(run, 'daemon')} MiB; "
        f"CPU proxy {cpu['proxy'] or 0:.2f} s, daemon {cpu['daemon'] or 0:.2f} s; "
        f"transfer {slowdown}; {run.seen}" + (f"; {run.error}" if run.error else "")
    )
