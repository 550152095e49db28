"""
The results as plain-text tables, with the issue's targets met or missed.
"""

from __future__ import annotations

from typing import Any

from bench.footprint import IDLE_AGAIN_AFTER, Footprint, mib, rate
from bench.hostile import (
    ATTACKS,
    GROWTH_TARGET_MIB,
    SLOWDOWN_TARGET,
    HostileResult,
    growth,
    seconds,
)
from bench.idle import IdleResult
from bench.measure import Parallel, Rate, Sample, SlowReader, percentile
from bench.prelogin import SCENARIOS, PreloginResult, attacker, held, latency
from bench.profile import Profile

PATHS = {
    "a": "ssh -> OpenSSH sshd",
    "b": "ssh -> diego-sshd",
    "c": "ssh -J sshd -> sshd (OpenSSH jump host)",
    "d": "ssh -> diego-ssh-proxy -> diego-sshd",
    "e": "ssh -> diego-ssh-proxy -> sshd (password route)",
}


def mbps(sample: Sample) -> str:
    if sample.median is None:
        return f"failed: {sample.error}"
    spread = ""
    if len(sample.values) > 1:
        spread = f" ({min(sample.values):.0f}-{max(sample.values):.0f})"
    return f"{sample.median:.0f}{spread}"


def ms(sample: Sample) -> str:
    if not sample.values:
        return f"failed: {sample.error}"
    return (
        f"median {1000 * (sample.median or 0):.0f} ms, "
        f"p95 {1000 * percentile(sample.values, 95):.0f} ms, n={len(sample.values)}"
    )


def spread(pids: list[int]) -> str:
    """How many logins each process served, busiest first: C{3+1}."""
    counts: dict[int, int] = {}
    for pid in pids:
        counts[pid] = counts.get(pid, 0) + 1
    return "+".join(str(n) for n in sorted(counts.values(), reverse=True)) or "-"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _ratio(num: Sample | None, den: Sample | None) -> float | None:
    if num is None or den is None or num.median is None or den.median is None:
        return None
    return num.median / den.median


def targets(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    tp: dict[str, Sample] = results.get("throughput", {})
    for num, den, goal in (("b", "a", 0.8), ("d", "c", 1.0)):
        for direction in ("down", "up"):
            r = _ratio(tp.get(f"{num}-{direction}"), tp.get(f"{den}-{direction}"))
            name = f"{num} >= {goal} x {den} ({direction}load)"
            if r is None:
                continue
            else:
                rows.append(
                    [name, f"{r:.2f} x", f"{r / goal:.2f}", "met" if r >= goal else "MISSED"]
                )
    idle: IdleResult | None = results.get("idle")
    if idle and idle.stages:
        last = idle.stages[-1]
        per = idle.perSessionKiB(last)
        login = last.loginSeconds
        ok = last.open >= 5000 and per <= 64 and login is not None and login < 1
        rows.append(
            [
                ">= 5000 idle sessions, <= 64 KiB each, new login < 1 s",
                f"{last.open} sessions, {per:.0f} KiB each, login "
                + (f"{login:.2f} s" if login is not None else "failed"),
                f"{last.open / 5000:.2f} / {64 / per if per else 0:.2f} / "
                + (f"{1 / login:.2f}" if login else "-"),
                "met" if ok else "MISSED",
            ]
        )
    slow: SlowReader | None = results.get("slow")
    if slow:
        mib = slow.growthKiB / 1024
        rows.append(
            [
                "slow reader grows the proxy <= 16 MiB",
                f"+{mib:.1f} MiB",
                f"{16 / mib if mib > 0 else float('inf'):.1f}",
                "met" if mib <= 16 else "MISSED",
            ]
        )
    if "workers" in results and not results.get("parallel"):
        rows.append(
            [
                "--workers N",
                "available" if results["workers"] else "not available",
                "-",
                "met" if results["workers"] else "MISSED",
            ]
        )
    rows += _hostileTargets(results.get("hostile"))
    parallel: dict[str, Parallel] = results.get("parallel", {})
    for key in sorted(parallel):
        path, direction, count = key.split("-")
        if count != "2":
            continue
        one = parallel.get(f"{path}-{direction}-1")
        r = _ratio(parallel[key].sample, one.sample if one else None)
        if r is not None:
            rows.append(
                [
                    f"4 x {path} {direction}load: 2 workers > 1",
                    f"{r:.2f} x",
                    f"{r:.2f}",
                    "met" if r > 1 else "MISSED",
                ]
            )
    return rows


def _hostileTargets(hostile: HostileResult | None) -> list[list[str]]:
    if hostile is None or not hostile.runs:
        return []
    rows = []
    worst: tuple[float, str] | None = None
    for run in hostile.runs:
        for name, usage in run.usage.items():
            if worst is None or usage.growthMiB > worst[0]:
                worst = (usage.growthMiB, f"{name}, {run.attack} -> {run.path}")
    if worst is not None:
        over = sum(
            1
            for run in hostile.runs
            for usage in run.usage.values()
            if usage.growthMiB >= GROWTH_TARGET_MIB
        )
        rows.append(
            [
                f"hostile client grows a server < {GROWTH_TARGET_MIB} MiB",
                f"worst +{worst[0]:.1f} MiB ({worst[1]}); {over} over",
                f"{GROWTH_TARGET_MIB / worst[0] if worst[0] > 0 else float('inf'):.2f}",
                "met" if worst[0] < GROWTH_TARGET_MIB else "MISSED",
            ]
        )
    slow = [(run.slowdown, run) for run in hostile.runs if run.slowdown is not None]
    if slow:
        factor, run = max(slow, key=lambda pair: pair[0])
        over = sum(1 for f, _ in slow if f >= SLOWDOWN_TARGET)
        rows.append(
            [
                f"ordinary transfer during an attack < {SLOWDOWN_TARGET} x alone",
                f"worst {factor:.2f} x ({run.attack} -> {run.path}); {over} over",
                f"{SLOWDOWN_TARGET / factor:.2f}",
                "met" if factor < SLOWDOWN_TARGET else "MISSED",
            ]
        )
    failed = [run for run in hostile.runs if run.error]
    if failed:
        rows.append(
            [
                "every hostile run completed",
                f"{len(failed)} with errors (first: {failed[0].attack} -> {failed[0].path})",
                "-",
                "MISSED",
            ]
        )
    return rows


def _hostileTable(hostile: HostileResult) -> str:
    rows = []
    for run in hostile.runs:
        cpu = {n: run.attackCPU(n) for n in ("proxy", "daemon")}
        rows.append(
            [
                f"{run.attack} {ATTACKS[run.attack]}",
                run.path,
                growth(run, "proxy"),
                growth(run, "daemon"),
                f"{cpu['proxy']:.2f}" if cpu["proxy"] is not None else "-",
                f"{cpu['daemon']:.2f}" if cpu["daemon"] is not None else "-",
                seconds(run.alone),
                seconds(run.during),
                f"{run.slowdown:.2f}" if run.slowdown else "-",
                run.seen + (f" [{run.error}]" if run.error else ""),
            ]
        )
    return table(
        [
            "attack",
            "on",
            "proxy RSS MiB",
            "daemon RSS MiB",
            "proxy CPU s",
            "daemon CPU s",
            "alone s",
            "during s",
            "slowdown",
            "seen by the attacker",
        ],
        rows,
    )


def _parallelTable(parallel: dict[str, Parallel]) -> str:
    rows = []
    for path in "ed":
        for direction in ("down", "up"):
            one, two = parallel.get(f"{path}-{direction}-1"), parallel.get(f"{path}-{direction}-2")
            if one is None or two is None:
                continue
            r = _ratio(two.sample, one.sample)
            rows.append(
                [
                    f"{path} {direction}load",
                    f"{mbps(one.sample)} [{spread(one.servedBy)}]",
                    f"{mbps(two.sample)} [{spread(two.servedBy)}]",
                    f"{r:.2f}" if r is not None else "-",
                ]
            )
    return table(["4 at once", "1 worker", "2 workers", "2 / 1"], rows)


def _preloginTable(prelogin: PreloginResult) -> str:
    rows = [
        [
            SCENARIOS[run.scenario],
            latency(run),
            held(run, "proxy"),
            held(run, "daemon"),
            attacker(run) + (f" [{run.error}]" if run.error else ""),
        ]
        for run in prelogin.runs
    ]
    return table(["attack", "login ms", "proxy", "daemon", "the attacker's connections"], rows)


def _footprintTable(footprint: list[Footprint], size: int) -> str:
    rows = []
    for f in footprint:
        if f.skipped or f.error:
            why = f"skipped: {f.skipped}" if f.skipped else f"failed: {f.error}"
            rows.append([f.name, why, "", "", "", "", ""])
            continue
        start = f.startMedian or 0.0
        spread = f"{1000 * min(f.startSeconds):.0f}-{1000 * max(f.startSeconds):.0f}"
        rows.append(
            [
                f.name,
                mib(f.idleKiB),
                mib(f.loginKiB),
                mib(f.transferKiB),
                rate(f, size),
                mib(f.idleAgainKiB),
                f"{1000 * start:.0f} ms ({spread})",
            ]
        )
    header = [
        "server",
        "idle",
        "after a login",
        "during the download",
        "download",
        f"idle {IDLE_AGAIN_AFTER:.0f} s after it",
        "exec to accepting",
    ]
    return table(header, rows)


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    runs, size = results["runs"], results["size"]
    basis = f"median of {runs}, {size / (1 << 20):.0f} MiB, aes128-gcm@openssh.com"
    tp: dict[str, Sample] = results.get("throughput", {})
    if tp:
        out.append(f"Throughput, MB/s ({basis}; min-max in brackets)")
        rows = []
        for path, name in PATHS.items():
            down, up = tp.get(f"{path}-down"), tp.get(f"{path}-up")
            rows.append([path, name, mbps(down) if down else "-", mbps(up) if up else "-"])
        out += [table(["", "path", "download (cat file)", "upload (cat > /dev/null)"], rows), ""]
    files: dict[str, Sample] = results.get("files", {})
    if files:
        out.append(f"File transfer, MB/s ({basis})")
        rows = []
        for tool in ("sftp", "scp"):
            for path in "bd":
                down, up = files.get(f"{tool}-{path}-down"), files.get(f"{tool}-{path}-up")
                rows.append(
                    [
                        tool,
                        f"{path}  {PATHS[path]}",
                        mbps(down) if down else "-",
                        mbps(up) if up else "-",
                    ]
                )
        out += [table(["tool", "path", "get", "put"], rows), ""]
    lat: dict[str, Sample] = results.get("latency", {})
    if lat:
        out.append("Login latency of `ssh ... true` (whole client run, sequential)")
        rows = [[p, PATHS[p], ms(s)] for p, s in lat.items()]
        out += [table(["", "path", "latency"], rows), ""]
    rate: Rate | None = results.get("rate")
    if rate:
        perLogin = 1000 * rate.proxyCPU / rate.logins if rate.logins else 0
        out.append(
            f"Logins through the proxy, 32 concurrent clients: {rate.perSecond:.1f}/s "
            f"({rate.logins} in {rate.seconds:.1f} s, {rate.failures} failed; "
            f"proxy CPU {perLogin:.1f} ms per login)"
        )
        if rate.firstError:
            out.append(f"  first failure: {rate.firstError}")
        out.append("")
    idle: IdleResult | None = results.get("idle")
    if idle:
        out.append(f"Idle sessions through one proxy (baseline RSS {idle.baseKiB} KiB)")
        rows = []
        for s in idle.stages:
            rows.append(
                [
                    str(s.want),
                    str(s.open),
                    str(s.failures),
                    f"{s.openSeconds:.0f}",
                    f"{s.proxyKiB / 1024:.0f}",
                    f"{idle.perSessionKiB(s):.1f}",
                    f"{(s.backendKiB - idle.backendBaseKiB) / max(s.open, 1):.1f}",
                    f"{s.loginSeconds:.2f}"
                    if s.loginSeconds is not None
                    else f"failed: {s.loginError}",
                ]
            )
        out.append(
            table(
                [
                    "wanted",
                    "open",
                    "failed",
                    "open s",
                    "proxy MiB",
                    "KiB/session",
                    "daemon KiB/session",
                    "new login s",
                ],
                rows,
            )
        )
        if idle.error:
            out.append(f"  client stderr: {idle.error}")
        out.append("")
    slow: SlowReader | None = results.get("slow")
    if slow:
        out.append(
            f"Slow reader (1 MB/s) behind the proxy, backend `cat /dev/zero`, "
            f"{slow.seconds:.0f} s, {slow.bytesRead / 1e6:.1f} MB read"
        )
        marks = slow.series[:: max(1, len(slow.series) // 8)]
        out.append(
            "  proxy RSS: start "
            + f"{slow.proxyBaseKiB / 1024:.1f} MiB; "
            + ", ".join(f"{t:.0f}s {k / 1024:.1f}" for t, k in marks)
            + f"; peak {slow.proxyMaxKiB / 1024:.1f} MiB (+{slow.growthKiB / 1024:.1f})"
        )
        out.append(
            f"  diego-sshd RSS: start {slow.backendBaseKiB / 1024:.1f} MiB, "
            f"peak {slow.backendMaxKiB / 1024:.1f} MiB"
        )
        out.append("")
    profiles: dict[str, Profile] = results.get("profile", {})
    for direction, prof in profiles.items():
        if prof.error:
            out += [f"Profile ({direction}): {prof.error}", ""]
            continue
        out.append(
            f"Proxy profile, path d {direction}load, {prof.samples} py-spy samples "
            "(self time, top 12)"
        )
        rows = [[f"{prof.share(n):.1f}%", name] for name, n in prof.selfByFunction.most_common(12)]
        out.append(table(["self", "function"], rows))
        rows = [[f"{prof.share(n):.1f}%", name] for name, n in prof.selfByFile.most_common(8)]
        out.append(table(["self", "file"], rows))
        out.append("")
    parallel: dict[str, Parallel] = results.get("parallel", {})
    if parallel:
        out.append(
            "Proxy --workers: 4 transfers at once, aggregate MB/s [logins served per process]"
        )
        out += [_parallelTable(parallel), ""]
    hostile: HostileResult | None = results.get("hostile")
    if hostile is not None:
        out.append(
            f"Hostile clients: fresh proxy + diego-sshd per attack; RSS = peak growth, CPU = "
            f"over the attack less the ordinary transfers' own; ordinary transfer = "
            f"`head -c {hostile.size >> 20}M /dev/zero` through the proxy, median alone and "
            f"during the attack; each attack held >= {hostile.hold:g} s "
            f"({hostile.seconds:.0f} s in all)"
        )
        out += [_hostileTable(hostile), ""]
    prelogin: PreloginResult | None = results.get("prelogin")
    if prelogin is not None:
        out.append(
            "Before login: an ordinary login through the proxy from 127.0.0.2 (`ssh ... true`, "
            "ms, median (min-max)) during each attack; servers' RSS and descriptors before -> "
            f"peak during; fresh servers with the defaults per scenario ({prelogin.seconds:.0f} s)"
        )
        out += [_preloginTable(prelogin), ""]
    footprint: list[Footprint] | None = results.get("footprint")
    if footprint is not None:
        out.append(
            "Footprint (issue 15): VmRSS idle after start, after one `ssh ... true`, peak during "
            f"`head -c {results['size'] >> 20}M /dev/zero` (and its rate), idle again "
            f"{IDLE_AGAIN_AFTER:.0f} s after that download ends; exec to accepting, "
            "median of 5 (min-max); stock sshd counts its listener and its per-connection sshd "
            "processes"
        )
        out += [_footprintTable(footprint, results["size"]), ""]
    rows = targets(results)
    if rows:
        out.append("Targets")
        out.append(table(["target", "figure", "ratio to target", ""], rows))
    out.append(f"\n(bench took {results.get('seconds', 0)} s)")
    return "\n".join(out)
