"""
Running the real OpenSSH client against our servers.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

BASE_OPTIONS = [
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
]


def sshCommand(
    port: int,
    identity: Path,
    user: str,
    command: Sequence[str],
    options: Sequence[str] = (),
    host: str = "127.0.0.1",
) -> list[str]:
    argv = ["ssh", *BASE_OPTIONS, "-p", str(port), "-i", str(identity)]
    for option in options:
        argv += ["-o", option]
    return [*argv, f"{user}@{host}", *command]


def run(
    argv: list[str],
    stdin: Path | bytes | None = None,
    stdout: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    """
    Run a client to completion (call it in a thread when a reactor must keep running).
    """
    stdinFile = open(stdin, "rb") if isinstance(stdin, Path) else None
    stdoutFile = open(stdout, "wb") if stdout is not None else None
    try:
        return subprocess.run(
            argv,
            stdin=stdinFile if stdinFile else (subprocess.DEVNULL if stdin is None else None),
            input=stdin if isinstance(stdin, bytes) else None,
            stdout=stdoutFile if stdoutFile else subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    finally:
        if stdinFile:
            stdinFile.close()
        if stdoutFile:
            stdoutFile.close()
