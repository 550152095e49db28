"""
The daemon's footprint in an app instance (issue 15): resident memory idle
right after start, after one login, and at its highest during a 1 GiB
download; and the time from exec to a port that accepts connections (median
of 5 fresh starts). For the installed C{diego-sshd} script and
C{twistd diego-sshd}, both with Cloud Controller's arguments, for the one-file
artifact C{dist/diego-sshd} when it has been built (C{make dist}), and for
stock OpenSSH's sshd beside them.

Our daemon is one process; stock sshd forks a process per connection (two,
with privilege separation), so its figures are the listener's plus those of
its sshd children: what an app instance would pay.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.world import SSHD, USER, startStockSSHD
from diegossh.sshd.idlerelease import CHECK_EVERY
from tests.support.daemon import freePort
from tests.support.keys import authorizedKeyLine, key, writePrivateKey
from tests.support.openssh import BASE_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ONE_FILE = ROOT / "dist" / "diego-sshd"
STARTS = 5
TRANSFER = 1 << 30
# How often the transfer's RSS is sampled.
SAMPLE_EVERY = 0.05
# After the download, how long before "idle again" is read: past the daemon's
# next look for pages to release (diegossh.sshd.idlerelease).
IDLE_AGAIN_AFTER = CHECK_EVERY + 2


@dataclass
class Footprint:
    name: str
    idleKiB: int | None = None
    loginKiB: int | None = None
    transferKiB: int | None = None
    # idle again, once the daemon's idle release has had its look after the download
    idleAgainKiB: int | None = None
    transferSeconds: float | None = None
    startSeconds: list[float] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None

    @property
    def startMedian(self) -> float | None:
        return statistics.median(self.startSeconds) if self.startSeconds else None


def processRssKiB(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def treeKiB(pid: int, name: str) -> int:
    """
    C{pid}'s RSS plus that of its descendants named C{name} (not the
    programs sessions run, which count for no server).
    """
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            if current == pid or Path(f"/proc/{current}/comm").read_text().startswith(name):
                total += processRssKiB(current)
            todo += children(current)
        except OSError:
            continue
    return total


def sshdTreeKiB(pid: int) -> int:
    """
    Stock sshd: the listener and its per-connection sshd processes.
    """
    return treeKiB(pid, "sshd")


def oneFileTreeKiB(pid: int) -> int:
    """
    C{dist/diego-sshd}: staticx's bootloader, PyInstaller's, and the
    interpreter they run (docs/dist.md), all named C{diego-sshd}.
    """
    return treeKiB(pid, "diego-sshd")


@dataclass
class Server:
    """
    How to start one server on a port, how to log in, and what to measure.
    """

    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str]
    user: str
    identity: Path
    measure: Callable[[int], int] = processRssKiB


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def started(
    server: Server, port: int, limit: float = 30
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """
    The server running on C{port}, and the seconds from exec to its first
    accepted connection (polled every millisecond).
    """
    begin = time.perf_counter()
    proc = subprocess.Popen(
        server.argv(port), env=server.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=server.env["HOME"],
    )  # fmt: skip
    try:
        while not accepting(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {proc.returncode}")
            if time.perf_counter() - begin > limit:
                raise RuntimeError(f"{server.name} not listening after {limit:.0f} s")
            time.sleep(0.001)
        yield proc, time.perf_counter() - begin
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ssh(server: Server, port: int, command: str) -> list[str]:
    return [
        "ssh", *BASE_OPTIONS, "-i", str(server.identity), "-p", str(port),
        f"{server.user}@127.0.0.1", command,
    ]  # fmt: skip


def settle(pid: int, measure: Callable[[int], int]) -> int:
    """
    RSS once it stops moving (a login's last allocations, a child's exit).
    """
    last = measure(pid)
    for _ in range(20):
        time.sleep(0.1)
        now = measure(pid)
        if now == last:
            return now
        last = now
    return last


def peakDuring(argv: Sequence[str], pid: int, measure: Callable[[int], int]) -> tuple[int, float]:
    """
    The highest RSS while C{argv} runs, and its wall time.
    """
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], measure(pid))
            except OSError:
                return
            done.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample)
    sampler.start()
    begin = time.perf_counter()
    try:
        subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, timeout=600, check=True,
        )  # fmt: skip
    finally:
        done.set()
        sampler.join()
    return peak[0], time.perf_counter() - begin


def measureServer(server: Server, size: int, starts: int) -> Footprint:
    result = Footprint(server.name)
    try:
        for _ in range(starts):
            with started(server, freePort()) as (_, seconds):
                result.startSeconds.append(seconds)
        port = freePort()
        with started(server, port) as (proc, _):
            result.idleKiB = settle(proc.pid, server.measure)
            login = subprocess.run(ssh(server, port, "true"), stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=60, check=False)  # fmt: skip
            if login.returncode != 0:
                raise RuntimeError(f"login failed: {login.stderr.decode(errors='replace')}")
            result.loginKiB = settle(proc.pid, server.measure)
            result.transferKiB, result.transferSeconds = peakDuring(
                ssh(server, port, f"head -c {size} /dev/zero"), proc.pid, server.measure
            )
            time.sleep(IDLE_AGAIN_AFTER)
            result.idleAgainKiB = settle(proc.pid, server.measure)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        result.error = str(e)[-300:]
    return result


def ccArgv(program: list[str], hostKey: str, authorized: str) -> Callable[[int], list[str]]:
    """
    Cloud Controller's LRP arguments for upstream's diego-sshd.
    """

    def argv(port: int) -> list[str]:
        return [
            *program, f"-address=127.0.0.1:{port}", f"-hostKey={hostKey}",
            f"-authorizedKey={authorized}", "-inheritDaemonEnv", "-logLevel=fatal",
        ]  # fmt: skip

    return argv


def twistdArgv(hostKey: str, authorized: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", "diego-sshd",
            f"--address=127.0.0.1:{port}", f"--hostKey={hostKey}",
            f"--authorizedKey={authorized}", "--inheritDaemonEnv",
        ]  # fmt: skip

    return argv


def servers(tmp: Path) -> tuple[list[Server], list[Footprint]]:
    """
    The servers to measure, and a L{Footprint} saying why for those skipped.
    """
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    identity = writePrivateKey(key("rsa"), tmp / "id_rsa")
    authorized = authorizedKeyLine(key("rsa"))
    hostKey = key("rsa").toString("openssh").decode()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "USER": "vcap"}
    if os.environ.get("PYTHONPATH"):
        # another checkout's daemon, e.g. the figures before a change (docs/performance.md)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    ours = [
        Server("diego-sshd script", ccArgv([str(BIN / "diego-sshd")], hostKey, authorized),
               env, "vcap", identity),
        Server("twistd diego-sshd", twistdArgv(hostKey, authorized), env, "vcap", identity),
    ]  # fmt: skip
    skipped = []
    if ONE_FILE.exists():
        ours.append(
            Server("dist/diego-sshd", ccArgv([str(ONE_FILE)], hostKey, authorized),
                   env, "vcap", identity, oneFileTreeKiB)
        )  # fmt: skip
    else:
        skipped.append(Footprint("dist/diego-sshd", skipped="not built (make dist)"))
    return ours, skipped


def stockServer(tmp: Path) -> Server | Footprint:
    """
    Stock sshd with the bench key, started again for each measurement from
    the configuration L{startStockSSHD} writes.
    """
    if not Path(SSHD).exists():
        return Footprint("stock sshd", skipped=f"{SSHD} not installed")
    identity = writePrivateKey(key("ed25519"), tmp / "id_stock")
    public = tmp / "id_stock.pub"
    public.write_text(authorizedKeyLine(key("ed25519")) + "\n")
    first = startStockSSHD(tmp, public)
    first.stop()
    config = tmp / "stock_sshd_config"
    lines = [line for line in config.read_text().splitlines() if not line.startswith("Port ")]

    def argv(port: int) -> list[str]:
        path = tmp / f"stock_sshd_config_{port}"
        path.write_text(f"Port {port}\n" + "\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return [SSHD, "-D", "-E", str(tmp / "stock_sshd.log"), "-f", str(path)]

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp)}
    return Server("stock sshd", argv, env, USER, identity, sshdTreeKiB)


def measureFootprint(size: int = TRANSFER, starts: int = STARTS) -> list[Footprint]:
    tmp = Path(tempfile.mkdtemp(prefix="diegossh-bench-footprint-"))
    tmp.chmod(0o755)  # stock sshd reads the authorized keys as the bench user
    try:
        ours, results = servers(tmp)
        stock = stockServer(tmp)
        candidates = [*ours, stock] if isinstance(stock, Server) else ours
        if isinstance(stock, Footprint):
            results.append(stock)
        for server in candidates:
            result = measureServer(server, size, starts)
            results.append(result)
            print(f"  footprint {describe(result, size)}", flush=True)
        order = [s.name for s in candidates] + ["dist/diego-sshd", "stock sshd"]
        return sorted(results, key=lambda r: order.index(r.name))
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def rate(result: Footprint, size: int) -> str:
    if not result.transferSeconds:
        return "-"
    return f"{size / result.transferSeconds / 1e6:.0f} MB/s"


def describe(result: Footprint, size: int) -> str:
    if result.skipped:
        return f"{result.name}: skipped, {result.skipped}"
    if result.error:
        return f"{result.name}: failed, {result.error}"
    start = result.startMedian
    return (
        f"{result.name}: idle {mib(result.idleKiB)}, after a login {mib(result.loginKiB)}, "
        f"during the transfer {mib(result.transferKiB)} ({rate(result, size)}), "
        f"idle {IDLE_AGAIN_AFTER:.0f} s after it {mib(result.idleAgainKiB)}, "
        f"exec to accepting {1000 * (start or 0):.0f} ms"
    )
