"""
A real C{twistd diego-ssh-proxy} in a subprocess, with helpers for OpenSSH
clients logging in through it with a password (sshpass).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.daemon import (
    TWISTD,
    Daemon,
    exemptTestClients,
    freePort,
    startDaemon,
    waitForPort,
)
from tests.support.keys import key

CREDENTIALS = "diego-secret"
# sshpass answers the password prompt, so no BatchMode here; LogLevel stays
# at its default so the proxy's banners (the reason for a denial) are shown.
CLIENT_OPTIONS = [
    "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=10",
]  # fmt: skip


def fingerprintOf(pubKeyPath: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(pubKeyPath)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


def daemonBehindRoute(tmp: Path) -> tuple[Daemon, dict[str, Any]]:
    """
    A real daemon with a host key of its own, and the C{diego-ssh} route a
    proxy logs into it with: its host key's fingerprint, user C{vcap} and a
    private key.
    """
    hostKey = tmp / "daemon_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}",))
    route = {
        "container_port": 2222,
        "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
        "user": "vcap",
        "private_key": key("ed25519").toString("openssh").decode(),
    }
    return daemon, route


def lrp(
    guid: str, host: str, port: int, route: Mapping[str, Any], index: int = 0
) -> dict[str, Any]:
    return {
        "process_guid": guid,
        "routes": {"diego-ssh": dict(route)},
        "instances": [
            {"index": index, "instance_guid": f"{guid}-{index}", "host": host, "port": port}
        ],
    }


def readAccessLog(path: Path) -> list[dict[str, Any]]:
    """
    The events of a C{--accessLog} file (JSON records, RS-separated).
    """
    if not path.exists():
        return []
    text = path.read_text().replace("\x1e", "\n")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class Proxy:
    port: int
    healthPort: int
    proc: subprocess.Popen[bytes]
    log: Path
    accessLog: Path

    def env(self, password: str = CREDENTIALS) -> dict[str, str]:
        return {**os.environ, "SSHPASS": password}

    def ssh(self, user: str, *command: str, options: Sequence[str] = ()) -> list[str]:
        argv = ["sshpass", "-e", "ssh", *CLIENT_OPTIONS,
                "-o", "PubkeyAuthentication=no", "-p", str(self.port)]  # fmt: skip
        for option in options:
            argv += ["-o", option]
        return [*argv, f"{user}@127.0.0.1", *command]

    def clientOptions(self, user: str) -> list[str]:
        return [*CLIENT_OPTIONS, "-o", "PubkeyAuthentication=no",
                "-o", f"User={user}"]  # fmt: skip

    def scp(self, user: str, *args: str, legacy: bool = False) -> list[str]:
        return ["sshpass", "-e", "scp", *self.clientOptions(user), "-P", str(self.port),
                *(["-O"] if legacy else []), *args]  # fmt: skip

    def sftp(self, user: str, *args: str) -> list[str]:
        return ["sshpass", "-e", "sftp", *self.clientOptions(user), "-P", str(self.port), *args]

    def rsh(self, user: str) -> str:
        return " ".join(["sshpass", "-e", "ssh", *self.clientOptions(user), "-p", str(self.port)])

    def rssKiB(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def accessEvents(self) -> list[dict[str, Any]]:
        return readAccessLog(self.accessLog)

    def stop(self) -> None:
        # SIGINT stops at once; SIGTERM would drain (at least a second)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(20)


def startProxy(tmp: Path, lrps: list[dict[str, Any]] | None = None,
               extraArgs: Sequence[str] = (), port: int | None = None,
               health: int | None = None) -> Proxy:  # fmt: skip
    port, health = port or freePort(), health or freePort()
    args = [f"--address=127.0.0.1:{port}", f"--healthCheckAddress=127.0.0.1:{health}",
            "--enableDiegoAuth", f"--diegoCredentials={CREDENTIALS}",
            f"--accessLog={tmp / 'access.json'}", *exemptTestClients(extraArgs)]  # fmt: skip
    if lrps is not None:
        table = tmp / "lrps.json"
        table.write_text(json.dumps({"lrps": lrps}))
        args.append(f"--lrpDirectory={table}")
    log = tmp / "proxy.log"
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile", str(log), "diego-ssh-proxy", *args, *extraArgs],
        stdin=subprocess.DEVNULL, cwd=str(tmp),
    )  # fmt: skip
    try:
        waitForPort(port, proc)
    except Exception:
        proc.kill()
        raise
    return Proxy(port, health, proc, log, tmp / "access.json")
