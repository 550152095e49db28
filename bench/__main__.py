"""
C{make bench} / C{python -m bench}: diego-sshd and diego-ssh-proxy against stock
OpenSSH on loopback. See docs/performance.md for the method and the results.

    python -m bench [--quick] [--size 1G] [--runs 3] [--only throughput,files,...]
    python -m bench hostile          # one section (or several) by name
    python -m bench prelogin         # before login: floods and guessers, < 2 minutes
    python -m bench footprint        # the daemon's RSS and start-up beside stock sshd
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.footprint import measureFootprint
from bench.hostile import hostileClients
from bench.idle import idleSessions
from bench.measure import (
    fileTransfer,
    loginLatency,
    loginRate,
    parallelThroughput,
    slowReader,
    throughput,
)
from bench.prelogin import beforeLogin
from bench.profile import profileProxy
from bench.world import TWISTD_PLUGIN_HELP, World, startWorld

STREAMS = 4
SECTIONS = (
    "throughput",
    "files",
    "latency",
    "rate",
    "idle",
    "slow",
    "profile",
    "workers",
    "hostile",
    "prelogin",
    "footprint",
)
# Sections with servers of their own, not measured on the shared world.
OWN_SERVERS = {"hostile", "prelogin", "footprint"}
# The ordinary transfer timed alone and during each hostile client (bench/hostile.py).
HOSTILE_SIZE = 256 << 20


def parseSize(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run per figure, 256 MiB, fewer logins and sessions"
    )
    parser.add_argument("--size", help="bytes per transfer (e.g. 1G, 256M); default 1G")
    parser.add_argument("--runs", type=int, help="runs per figure (median); default 3")
    parser.add_argument("--only", help=f"comma list of sections: {','.join(SECTIONS)}")
    parser.add_argument("--idle-stages", help="sessions to hold, e.g. 1000,2000,5000")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--hostile-hold", type=float, help="seconds each hostile client holds its state (6)"
    )
    parser.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        help="one more flag for the proxy, e.g. --proxy-arg=--debugAddr=127.0.0.1:17017 "
        "(metrics on); repeatable",
    )
    parser.add_argument(
        "names", nargs="*", metavar="SECTION", help="sections to run, as with --only"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.size = parseSize(args.size) if args.size else (256 << 20 if quick else 1 << 30)
    args.runs = args.runs or (1 if quick else 3)
    args.logins = 10 if quick else 50
    args.rateTotal = 96 if quick else 320
    args.stages = [
        int(s) for s in (args.idle_stages or ("500,1000" if quick else "1000,2000,5000")).split(",")
    ]
    args.slowSeconds = 10 if quick else 30
    args.profileSeconds = 5 if quick else 10
    args.hostileSize = min(args.size, HOSTILE_SIZE // 2 if quick else HOSTILE_SIZE)
    args.hostileHold = args.hostile_hold or (3.0 if quick else 6.0)
    named = set(args.only.split(",")) if args.only else set()
    named |= set(args.names)
    args.sections = named or set(SECTIONS)
    unknown = args.sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def workersAvailable() -> bool:
    out = subprocess.run(TWISTD_PLUGIN_HELP, capture_output=True, text=True, check=False)
    return "--workers" in out.stdout


def parallelWorkers(world: World, args: argparse.Namespace) -> dict[str, Any]:
    """
    4 transfers at once through a 1-worker and a 2-worker proxy, paths d and e.
    """
    proxies = {1: world.proxy, 2: world.startProxy("workers2", ["--workers=2"])}
    results: dict[str, Any] = {}
    for path in "ed":
        for direction in ("down", "up"):
            for count, proxy in proxies.items():
                key = f"{path}-{direction}-{count}"
                outcome = parallelThroughput(
                    world, proxy, path, direction, STREAMS, args.runs, time.monotonic() + 600
                )
                results[key] = outcome
                print(
                    f"  {STREAMS} x {path} {direction}, {count} worker(s): "
                    f"{report.mbps(outcome.sample)} "
                    f"(logins per process: {report.spread(outcome.servedBy)})",
                    flush=True,
                )
    return results


def plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    results: dict[str, Any] = {"size": args.size, "runs": args.runs, "quick": args.quick}
    size = args.size if args.sections - OWN_SERVERS else args.hostileSize
    if args.sections - {"prelogin", "footprint"}:  # which transfer nothing or their own
        print(
            f"diegossh bench: {size / (1 << 20):.0f} MiB per transfer, "
            f"{args.runs} run(s) per figure, loopback",
            flush=True,
        )
    if args.sections - OWN_SERVERS:
        measureWorld(results, args)
    if "hostile" in args.sections:
        # Fresh servers of its own for every attack, once the world is gone.
        results["hostile"] = hostileClients(args.hostileSize, args.hostileHold, args.runs)
    if "prelogin" in args.sections:
        # Fresh servers with the default pre-login settings for every scenario.
        results["prelogin"] = beforeLogin(3 if args.quick else 5)
    if "footprint" in args.sections:
        # Fresh servers of its own: the daemon's RSS and start-up (issue 15).
        results["footprint"] = measureFootprint(args.size, 3 if args.quick else 5)
    return finish(results, args, started)


def measureWorld(results: dict[str, Any], args: argparse.Namespace) -> None:
    """
    The sections measured on one world: stock sshd, diego-sshd and the proxy.
    """
    world = startWorld(args.size, args.proxy_arg)
    try:
        if "throughput" in args.sections:
            results["throughput"] = {}
            for path in "abcde":
                for direction in ("down", "up"):
                    sample = throughput(world, path, direction, args.runs, time.monotonic() + 300)
                    results["throughput"][f"{path}-{direction}"] = sample
                    print(f"  {path} {direction}: {report.mbps(sample)}", flush=True)
        if "files" in args.sections:
            results["files"] = {}
            for tool in ("sftp", "scp"):
                for path in "bd":
                    for direction in ("down", "up"):
                        sample = fileTransfer(
                            world, tool, path, direction, args.runs, time.monotonic() + 300
                        )
                        results["files"][f"{tool}-{path}-{direction}"] = sample
                        print(f"  {tool} {path} {direction}: {report.mbps(sample)}", flush=True)
        if "latency" in args.sections:
            results["latency"] = {}
            for path in "abd":
                sample = loginLatency(world, path, args.logins, time.monotonic() + 120)
                results["latency"][path] = sample
                print(f"  login {path}: {report.ms(sample)}", flush=True)
        if "rate" in args.sections:
            rate = loginRate(world, "d", 32, args.rateTotal, 180)
            results["rate"] = rate
            print(f"  logins/s through the proxy: {rate.perSecond:.1f}", flush=True)
        if "slow" in args.sections:
            results["slow"] = slowReader(world, args.slowSeconds)
            print(f"  slow reader: proxy +{results['slow'].growthKiB} KiB", flush=True)
        if "profile" in args.sections:
            results["profile"] = {}
            for direction in ("down", "up"):
                out = Path(tempfile.gettempdir()) / f"diegossh-bench-pyspy-{direction}.txt"
                prof = profileProxy(world, direction, args.profileSeconds, out)
                results["profile"][direction] = prof
                print(
                    f"  profile {direction}: {prof.samples} samples {prof.error or ''}", flush=True
                )
        if "idle" in args.sections:
            results["idle"] = idleSessions(world, args.stages, 420)
        if "workers" in args.sections:
            results["workers"] = workersAvailable()
            if results["workers"]:
                results["parallel"] = parallelWorkers(world, args)
    finally:
        world.stop()


def finish(results: dict[str, Any], args: argparse.Namespace, started: float) -> int:
    results["seconds"] = round(time.monotonic() - started)
    print()
    print(report.render(results))
    if args.json:
        args.json.write_text(json.dumps(plain(results), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
