"""
A py-spy profile of the proxy while bulk data flows through it (path d), folded
into self time per function and per file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.world import World

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def pySpy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    direction: str
    samples: int = 0
    selfByFunction: Counter[str] = field(default_factory=Counter)
    selfByFile: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    error: str | None = None

    def share(self, n: int) -> float:
        return 100.0 * n / self.samples if self.samples else 0.0


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def fold(text: str, direction: str) -> Profile:
    profile = Profile(direction)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = []
        for raw in stack.split(";"):
            m = _FRAME.match(raw.strip())
            frames.append((m["func"], _short(m["file"])) if m else (raw.strip(), "?"))
        if not frames:
            continue
        profile.samples += n
        func, file = frames[-1]
        profile.selfByFunction[f"{file}:{func}"] += n
        profile.selfByFile[file] += n
        for key in {f"{fl}:{fn}" for fn, fl in frames}:
            profile.inclusive[key] += n
    return profile


def profileProxy(world: World, direction: str, seconds: float, out: Path) -> Profile:
    return profileServer(world, "d", world.proxy.proc.pid, direction, seconds, out)


def profileServer(
    world: World, path: str, pid: int, direction: str, seconds: float, out: Path
) -> Profile:
    """
    py-spy on process C{pid} while path C{path} moves data in C{direction}.
    """
    spy = pySpy()
    if spy is None:
        return Profile(direction, error="py-spy not installed (.venv/bin/pip install py-spy)")
    stop = time.monotonic() + seconds + 2
    command = ["cat", "bench.bin"] if direction == "down" else ["cat > /dev/null"]
    argv = world.sshArgv(path, command)

    def load() -> None:
        while time.monotonic() < stop:
            stdin = open(world.data, "rb") if direction == "up" else subprocess.DEVNULL
            try:
                subprocess.run(
                    argv,
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=world.env(),
                    timeout=max(1.0, stop - time.monotonic()),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pass
            finally:
                if not isinstance(stdin, int):
                    stdin.close()

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(1.0)  # past the handshake
    result = subprocess.run(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    thread.join(seconds + 30)
    if result.returncode != 0 or not out.exists():
        return Profile(direction, error=(result.stderr or result.stdout).strip()[-300:])
    return fold(out.read_text(), direction)
