"""
The measurements. Every loop is bounded by a count and by a deadline.
"""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.world import World, cpuSeconds, rssKiB
from tests.support.proxy import Proxy

MB = 1e6


class BenchFailure(RuntimeError):
    pass


def timed(
    argv: Sequence[str],
    env: dict[str, str],
    stdin: str | None = None,
    timeout: float = 600,
) -> float:
    """
    Run a client to completion; its wall time in seconds. Output goes to /dev/null.
    """
    stdinFile = open(stdin, "rb") if stdin else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        result = subprocess.run(
            list(argv),
            stdin=stdinFile,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            timeout=timeout,
            check=False,
        )
        elapsed = time.perf_counter() - start
    finally:
        if stdin and not isinstance(stdinFile, int):
            stdinFile.close()
    if result.returncode != 0:
        raise BenchFailure(
            f"{' '.join(argv[:6])}... exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()[-300:]}"
        )
    return elapsed


@dataclass
class Sample:
    """Several runs of one measurement."""

    values: list[float] = field(default_factory=list)
    error: str | None = None
    loginSeconds: float = 0.0

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def loginOverhead(world: World, argv: Sequence[str], tries: int = 3) -> float:
    """
    The fastest of a few runs of a command that moves no data: login and teardown.
    """
    return min(timed(argv, world.env(), timeout=30) for _ in range(tries))


def throughput(world: World, path: str, direction: str, runs: int, deadline: float) -> Sample:
    """
    MB/s of C{cat file} (down) or C{cat > /dev/null} (up) over path a-e: the size
    over the wall time of the client less the time of C{ssh ... true} on that path.
    """
    sample = Sample()
    try:
        sample.loginSeconds = loginOverhead(world, world.sshArgv(path, ["true"]))
    except (BenchFailure, subprocess.TimeoutExpired) as e:
        sample.error = str(e)
        return sample
    for _ in range(runs):
        if time.monotonic() > deadline and sample.values:
            break
        try:
            if direction == "down":
                argv = world.sshArgv(path, ["cat", "bench.bin"])
                seconds = timed(argv, world.env())
            else:
                argv = world.sshArgv(path, ["cat > /dev/null"])
                seconds = timed(argv, world.env(), stdin=str(world.data))
        except (BenchFailure, subprocess.TimeoutExpired) as e:
            sample.error = str(e)
            break
        sample.values.append(world.size / max(seconds - sample.loginSeconds, 1e-3) / MB)
    return sample


def fileTransfer(
    world: World, tool: str, path: str, direction: str, runs: int, deadline: float
) -> Sample:
    """
    MB/s of scp or sftp, downloading to /dev/null or uploading to a file in the home.
    """
    sample = Sample()
    try:
        sample.loginSeconds = loginOverhead(world, world.sshArgv(path, ["true"]))
    except (BenchFailure, subprocess.TimeoutExpired) as e:
        sample.error = str(e)
        return sample
    for _ in range(runs):
        if time.monotonic() > deadline and sample.values:
            break
        try:
            seconds = timed(world.fileArgv(tool, path, direction, "/dev/null"), world.env())
        except (BenchFailure, subprocess.TimeoutExpired) as e:
            sample.error = str(e)
            break
        finally:
            world.removeUploads()
        sample.values.append(world.size / max(seconds - sample.loginSeconds, 1e-3) / MB)
    return sample


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def loginLatency(world: World, path: str, count: int, deadline: float) -> Sample:
    """
    Seconds for C{ssh ... true}, one after the other.
    """
    sample = Sample()
    argv = world.sshArgv(path, ["true"])
    for _ in range(count):
        if time.monotonic() > deadline and len(sample.values) >= 5:
            break
        try:
            sample.values.append(timed(argv, world.env(), timeout=30))
        except (BenchFailure, subprocess.TimeoutExpired) as e:
            sample.error = str(e)
            break
    return sample


@dataclass
class Rate:
    logins: int
    failures: int
    seconds: float
    proxyCPU: float
    firstError: str | None

    @property
    def perSecond(self) -> float:
        return self.logins / self.seconds if self.seconds else 0.0


def loginRate(world: World, path: str, concurrency: int, total: int, limit: float) -> Rate:
    """
    C{total} logins of C{ssh ... true} by C{concurrency} clients at once.
    """
    argv = world.sshArgv(path, ["true"])
    lock = threading.Lock()
    done = {"ok": 0, "failed": 0}
    errors: list[str] = []
    stop = time.monotonic() + limit
    issued = iter(range(total))

    def client() -> None:
        while time.monotonic() < stop:
            with lock:
                if next(issued, None) is None:
                    return
            try:
                timed(argv, world.env(), timeout=60)
                with lock:
                    done["ok"] += 1
            except (BenchFailure, subprocess.TimeoutExpired) as e:
                with lock:
                    done["failed"] += 1
                    errors.append(str(e))

    cpu0 = cpuSeconds(world.proxy.proc.pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(client)
    seconds = time.perf_counter() - start
    cpu = cpuSeconds(world.proxy.proc.pid) - cpu0
    return Rate(done["ok"], done["failed"], seconds, cpu, errors[0] if errors else None)


@dataclass
class SlowReader:
    seconds: float
    bytesRead: int
    proxyBaseKiB: int
    proxyMaxKiB: int
    backendBaseKiB: int
    backendMaxKiB: int
    series: list[tuple[float, int]]

    @property
    def growthKiB(self) -> int:
        return self.proxyMaxKiB - self.proxyBaseKiB


def slowReader(world: World, seconds: float, rate: int = 1_000_000) -> SlowReader:
    """
    Through the proxy to diego-sshd, C{cat /dev/zero} at full speed on the backend,
    read by the client's consumer at C{rate} bytes/s for C{seconds}; the proxy's RSS
    sampled every half second.
    """
    argv = world.sshArgv("d", ["cat /dev/zero"])
    proxyPid, backendPid = world.proxy.proc.pid, world.daemon.proc.pid
    base, backendBase = rssKiB(proxyPid), rssKiB(backendPid)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=world.env(),
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    total = {"read": 0}
    end = time.monotonic() + seconds

    def reader() -> None:
        chunk = rate // 16
        start = time.monotonic()
        while time.monotonic() < end:
            data = stdout.read1(chunk)  # type: ignore[attr-defined]
            if not data:
                return
            total["read"] += len(data)
            due = start + total["read"] / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    series: list[tuple[float, int]] = []
    peak, backendPeak = base, backendBase
    t0 = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.5)
        rss = rssKiB(proxyPid)
        peak = max(peak, rss)
        backendPeak = max(backendPeak, rssKiB(backendPid))
        series.append((time.monotonic() - t0, rss))
    proc.kill()
    proc.wait(10)
    thread.join(5)
    stdout.close()
    return SlowReader(
        time.monotonic() - t0, total["read"], base, peak, backendBase, backendPeak, series
    )


@dataclass
class Parallel:
    """Aggregate MB/s of several transfers at once, and which proxy processes served them."""

    sample: Sample
    servedBy: list[int] = field(default_factory=list)


def parallelThroughput(
    world: World, proxy: Proxy, path: str, direction: str, streams: int, runs: int, deadline: float
) -> Parallel:
    """
    C{streams} transfers of the bench file at once over path d or e through
    C{proxy}: streams x size over the wall time from the first start to the last
    end, less one login (they log in concurrently).
    """
    result = Parallel(Sample())
    sample = result.sample
    try:
        sample.loginSeconds = loginOverhead(world, world.sshArgv(path, ["true"], proxy))
    except (BenchFailure, subprocess.TimeoutExpired) as e:
        sample.error = str(e)
        return result
    command = ["cat", "bench.bin"] if direction == "down" else ["cat > /dev/null"]
    argv = world.sshArgv(path, command, proxy)
    before = len(proxy.accessEvents())
    for _ in range(runs):
        if time.monotonic() > deadline and sample.values:
            break
        try:
            with ThreadPoolExecutor(streams) as pool:
                start = time.perf_counter()
                stdin = str(world.data) if direction == "up" else None
                futures = [pool.submit(timed, argv, world.env(), stdin) for _ in range(streams)]
                for future in futures:
                    future.result()
                seconds = time.perf_counter() - start
        except (BenchFailure, subprocess.TimeoutExpired) as e:
            sample.error = str(e)
            break
        sample.values.append(streams * world.size / max(seconds - sample.loginSeconds, 1e-3) / MB)
    result.servedBy = [
        e["pid"]
        for e in proxy.accessEvents()[before:]
        if e.get("event") == "login" and e.get("outcome") == "success" and "pid" in e
    ]
    return result
