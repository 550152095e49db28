"""
Idle sessions held open through one proxy process: its resident memory per
session and the time of a new OpenSSH login while they are open.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench.measure import BenchFailure, timed
from bench.world import World, rssKiB
from tests.support.proxy import CREDENTIALS


@dataclass
class IdleStage:
    want: int
    open: int
    failures: int
    openSeconds: float
    proxyKiB: int
    backendKiB: int
    loginSeconds: float | None
    loginError: str | None = None


@dataclass
class IdleResult:
    baseKiB: int
    backendBaseKiB: int
    stages: list[IdleStage] = field(default_factory=list)
    error: str | None = None

    def perSessionKiB(self, stage: IdleStage) -> float:
        return (stage.proxyKiB - self.baseKiB) / stage.open if stage.open else 0.0


def newLogin(world: World, tries: int = 3) -> float:
    argv = world.sshArgv("d", ["true"])
    return statistics.median(timed(argv, world.env(), timeout=60) for _ in range(tries))


def idleSessions(world: World, stages: list[int], limit: float) -> IdleResult:
    # A first login so the baseline includes everything a login loads once.
    newLogin(world, 1)
    result = IdleResult(rssKiB(world.proxy.proc.pid), rssKiB(world.daemon.proc.pid))
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.idleclient",
            "--port",
            str(world.proxy.port),
            "--user",
            "diego:app/0",
            "--password",
            CREDENTIALS,
            "--stages",
            ",".join(map(str, stages)),
            "--deadline",
            str(limit),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        for _ in stages:
            line = child.stdout.readline()
            if not line:
                break
            report = json.loads(line)
            time.sleep(1.0)  # let the last handshakes settle
            stage = IdleStage(
                report["want"],
                report["open"],
                report["failures"],
                report["seconds"],
                rssKiB(world.proxy.proc.pid),
                rssKiB(world.daemon.proc.pid),
                None,
            )
            try:
                stage.loginSeconds = newLogin(world)
            except (BenchFailure, subprocess.TimeoutExpired) as e:
                stage.loginError = str(e)
            result.stages.append(stage)
            print(
                f"  idle: {stage.open} open ({stage.failures} failed) in "
                f"{stage.openSeconds:.0f}s, proxy {stage.proxyKiB} KiB, "
                f"new login {stage.loginSeconds or 0:.2f} s",
                flush=True,
            )
            if report["failures"]:
                break
            child.stdin.write("next\n")
            child.stdin.flush()
    finally:
        try:
            _, err = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
        if err.strip():
            result.error = err.strip()[-500:]
    return result
