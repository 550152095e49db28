"""
A real C{twistd diego-sshd} in a subprocess, for tests that drive it with
OpenSSH's clients over real sockets.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.eventually import eventuallyBlocking
from tests.support.keys import authorizedKeyLine, key, writePrivateKey
from tests.support.openssh import BASE_OPTIONS

TWISTD = str(Path(sys.executable).with_name("twistd"))


def exemptTestClients(extraArgs: Sequence[str]) -> list[str]:
    """
    C{--perSourcePenaltyExemptList=127.0.0.1} (the address every test's
    client connects from), unless the test gives its own, so that tests that
    fail logins on purpose are not locked out by per-source penalties
    (docs/prelogin.md); tests of the penalties attack from other loopback
    addresses. Not with another checkout's code (C{PYTHONPATH}), which may not
    know the flag.
    """
    if os.environ.get("PYTHONPATH") or any(
        arg.startswith("--perSourcePenalt") for arg in extraArgs
    ):
        return []
    return ["--perSourcePenaltyExemptList=127.0.0.1"]


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(address: str, port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Whether C{proc}'s server takes connections on C{port}; an error once it has exited."""
    if proc.poll() is not None:
        raise RuntimeError(f"server exited with {proc.returncode}")
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def waitForPort(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    eventuallyBlocking(lambda: listening("127.0.0.1", port, proc), f"a listener on {port}", timeout)


@dataclass
class Daemon:
    port: int
    identity: Path
    home: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extraEnv: dict[str, str] = field(default_factory=dict)

    def ssh(self, *command: str, options: tuple[str, ...] = (), user: str = "vcap") -> list[str]:
        argv = ["ssh", *BASE_OPTIONS, "-p", str(self.port), "-i", str(self.identity)]
        for option in options:
            argv += ["-o", option]
        return [*argv, f"{user}@127.0.0.1", *command]

    def sshOptions(self) -> list[str]:
        return [*BASE_OPTIONS, "-i", str(self.identity)]

    def scp(self, *args: str, legacy: bool = False) -> list[str]:
        argv = ["scp", *self.sshOptions(), "-P", str(self.port)]
        if legacy:
            argv.append("-O")
        return [*argv, *args]

    def sftp(self, *args: str) -> list[str]:
        return ["sftp", *self.sshOptions(), "-P", str(self.port), *args]

    def rsh(self) -> str:
        """The -e argument for rsync."""
        return " ".join(["ssh", *self.sshOptions(), "-p", str(self.port)])

    def target(self, path: str = "") -> str:
        return f"vcap@127.0.0.1:{path}"

    def rssKiB(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def startDaemon(
    tmp: Path, extraArgs: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Daemon:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    identity = writePrivateKey(key("ed25519"), tmp / "id_ed25519")
    port = freePort()
    log = tmp / "sshd.log"
    childEnv = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "USER": "vcap",
        "SSHD_AUTHKEY": authorizedKeyLine(key("ed25519")),
        **(env or {}),
    }
    argv = [
        TWISTD, "-n", "--pidfile=", "--logfile", str(log), "diego-sshd",
        f"--address=127.0.0.1:{port}", *exemptTestClients(extraArgs), *extraArgs,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=childEnv, cwd=str(tmp), stdin=subprocess.DEVNULL)
    try:
        waitForPort(port, proc)
    except Exception:
        proc.kill()
        raise
    return Daemon(port, identity, home, proc, log)


def runClient(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run an OpenSSH client to completion, output captured, no stdin unless given."""
    kwargs.setdefault("timeout", 300)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def sha256File(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
