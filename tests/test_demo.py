"""
C{make demo} starts what the README promises: ssh, scp and sftp through the
proxy to the daemon with the password C{demo}.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diegossh import demo
from tests.support.daemon import freePort

pytestmark = pytest.mark.interop

OPTIONS = [
    "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
]  # fmt: skip


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = freePort()
    processes = demo.start(tmp_path / "state", port, freePort(), freePort())
    deadline = time.monotonic() + 20
    import socket

    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield tmp_path / "state", port
    for p in processes:
        p.terminate()
        p.wait(10)


def test_demo_commands_work(running: tuple[Path, int], tmp_path: Path) -> None:
    state, port = running
    env = {**os.environ, "SSHPASS": "demo"}
    ssh = subprocess.run(
        ["sshpass", "-e", "ssh", *OPTIONS, "-p", str(port), "diego:demo/0@127.0.0.1", "echo hi"],
        capture_output=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert ssh.stdout == b"hi\n", ssh.stderr
    local = tmp_path / "f.txt"
    local.write_text("via demo")
    scp = subprocess.run(
        ["sshpass", "-e", "scp", *OPTIONS, "-o", "User=diego:demo/0", "-P", str(port),
         str(local), "127.0.0.1:f.txt"],
        capture_output=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    assert (state / "home" / "f.txt").read_text() == "via demo"
    assert all(line.split()[0] in ("ssh", "scp", "sftp", "rsync") for line in demo.commands(port))
