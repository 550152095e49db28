"""
A lightweight scripted client (asyncssh) that holds many idle sessions open
through the proxy. Each is an authenticated connection (both legs of the proxy
up) with one open session channel; by default the channel runs no program
(asyncssh has no public call for that, so its channel's C{_open} is used), so
the backend needs no process, pipe or pty per session: this machine allows
20,000 descriptors per process and 4,096 ptys. C{--command CMD} runs CMD in
it instead; C{--command none} holds the bare connection. Run as a child
process by L{bench.idle}:

    python -m bench.idleclient --port P --user U --password X --stages 1000,2000,5000

After each stage it prints one JSON line (sessions open, failures, seconds)
and waits for a line on stdin before opening more; EOF on stdin or the
deadline closes everything and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

import asyncssh


async def openOne(args: argparse.Namespace, held: list[Any]) -> None:
    conn = await asyncssh.connect(
        "127.0.0.1",
        args.port,
        username=args.user,
        password=args.password,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        encryption_algs=["aes128-gcm@openssh.com"],
        keepalive_interval=0,
        login_timeout=60,
        config=None,
    )
    held.append(conn)
    if args.command == "none":
        return
    if args.command:
        held.append(await conn.create_process(args.command, stdin=asyncssh.DEVNULL))
        return
    loop = asyncio.get_running_loop()
    chan: Any = asyncssh.SSHClientChannel(conn, loop, "strict", None, "strict", 1 << 21, 32768)
    await chan._open(b"session")
    held.append(chan)


async def stage(args: argparse.Namespace, held: list[Any], want: int, deadline: float) -> int:
    """Open sessions until C{want} are up, at most C{args.concurrency} handshakes at once."""
    failures = 0
    gate = asyncio.Semaphore(args.concurrency)
    have = sum(1 for h in held if isinstance(h, asyncssh.SSHClientConnection))

    async def guarded() -> None:
        nonlocal failures
        async with gate:
            if time.monotonic() > deadline:
                failures += 1
                return
            try:
                await asyncio.wait_for(openOne(args, held), 90)
            except (TimeoutError, OSError, asyncssh.Error) as e:
                failures += 1
                if failures <= 3:
                    print(f"open failed: {e!r}", file=sys.stderr)

    await asyncio.gather(*(guarded() for _ in range(want - have)))
    return failures


async def main(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held: list[Any] = []
    deadline = time.monotonic() + args.deadline
    loop = asyncio.get_running_loop()
    for want in [int(s) for s in args.stages.split(",")]:
        t0 = time.monotonic()
        failures = await stage(args, held, want, deadline)
        count = sum(1 for h in held if isinstance(h, asyncssh.SSHClientConnection))
        print(
            json.dumps(
                {
                    "want": want,
                    "open": count,
                    "failures": failures,
                    "seconds": round(time.monotonic() - t0, 2),
                }
            ),
            flush=True,
        )
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or failures or time.monotonic() > deadline:
            break
    for h in held:
        if isinstance(h, asyncssh.SSHClientConnection):
            h.close()
    await asyncio.sleep(0.5)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--stages", default="1000,2000,5000")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--deadline", type=float, default=300)
    parser.add_argument("--command", default="")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
