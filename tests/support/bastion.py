"""
The container bastion under test: real OpenSSH sshd targets on their own
loopback addresses (127.0.0.2, 127.0.0.3, ...), each with a key pair whose
public half it publishes, a real proxy with C{--realm bastion}, and OpenSSH
clients going through it with C{-J} or C{ProxyCommand}.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import threads
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.support.daemon import TWISTD, exemptTestClients, freePort, listening, waitForPort
from tests.support.eventually import eventuallyBlocking
from tests.support.proxy import readAccessLog
from tests.support.stocksshd import SSHD, USER, ensureUser

BASE_OPTIONS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
]  # fmt: skip


def keyPair(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / f"{name}_id_ed25519"
    if not private.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f",
             str(private)], check=True,
        )  # fmt: skip
    return private, Path(f"{private}.pub")


def portFreeOn(addresses: Sequence[str]) -> int:
    """
    One port free on every address, so a single C{SSH_PERMIT_TARGET_PORT}
    fits all targets.
    """
    for _ in range(50):
        port = freePort()
        try:
            for address in addresses:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on all target addresses")


@dataclass
class Target:
    name: str
    address: str
    port: int
    key: Path
    pub: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def startTarget(tmp: Path, name: str, address: str, port: int) -> Target:
    """
    A real sshd on C{address:port} that lets in the holder of its own key.
    """
    home = ensureUser()
    Path("/run/sshd").mkdir(exist_ok=True)
    here = tmp / name
    key, pub = keyPair(here, name)
    hostKey = here / "host_key"
    if not hostKey.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)],
                       check=True)  # fmt: skip
    # sshd reads authorized_keys as the user: it must live where they can read
    authorized = home / f"authorized_keys-{address}-{port}"
    authorized.write_text(pub.read_text())
    authorized.chmod(0o644)
    config = here / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {hostKey}\nPidFile none\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nAuthorizedKeysFile {authorized}\nStrictModes no\n"
        f"AllowUsers {USER}\nPermitRootLogin no\nSubsystem sftp internal-sftp\n"
        "LogLevel ERROR\nAllowTcpForwarding yes\nMaxStartups 100\n"
    )
    config.chmod(0o600)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL)
    _waitFor(address, port, proc)
    return Target(name, address, port, key, pub, proc)


def _waitFor(address: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    eventuallyBlocking(lambda: listening(address, port, proc), f"sshd on {address}:{port}", 20)


class _PublicKey(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
        self.requests = 0

    def render_GET(self, request: Any) -> bytes:
        self.requests += 1
        request.setHeader(b"content-type", b"text/plain")
        return self.body


class PublicKeyServer:
    """
    A target's C{GET /publickey}, served from the test's reactor.
    """

    def __init__(self, reactor: Any, address: str, port: int, body: bytes) -> None:
        self.resource = _PublicKey(body)
        self.listening = reactor.listenTCP(port, Site(self.resource), interface=address)

    async def stop(self) -> None:
        await self.listening.stopListening()


@dataclass
class Bastion:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    accessLog: Path
    tmp: Path

    def clientConfig(self, key: Path, user: str = "limited") -> Path:
        """
        An ssh_config naming the bastion as C{bastion}: C{-J bastion} uses
        it, and so does the C{ssh -W} in a ProxyCommand.
        """
        path = self.tmp / f"ssh_config_{key.name}"
        path.write_text(
            f"Host bastion\n  HostName 127.0.0.1\n  Port {self.port}\n  User {user}\n"
            f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  ConnectTimeout 10\n"
        )
        return path

    def jump(self, key: Path, host: str, port: int, *command: str) -> list[str]:
        return ["ssh", "-F", str(self.clientConfig(key)), "-J", "bastion", "-p", str(port),
                f"{USER}@{host}", *command]  # fmt: skip

    def proxyCommand(self, key: Path, host: str, port: int, *command: str) -> list[str]:
        config = self.clientConfig(key)
        inner = f"ssh -F {config} -W %h:%p bastion"
        return ["ssh", "-F", str(config), "-o", f"ProxyCommand={inner}", "-p", str(port),
                f"{USER}@{host}", *command]  # fmt: skip

    def direct(self, key: Path, *args: str) -> list[str]:
        """
        ssh to the bastion itself.
        """
        return ["ssh", "-F", str(self.clientConfig(key)), *args, "bastion"]

    def accessEvents(self) -> list[dict[str, Any]]:
        return readAccessLog(self.accessLog)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def startBastion(tmp: Path, env: Mapping[str, str], extraArgs: Sequence[str] = ()) -> Bastion:
    """
    C{twistd diego-ssh-proxy --realm bastion}, configured by environment
    variables as a container deployment would be.
    """
    port = freePort()
    log = tmp / "bastion.log"
    accessLog = tmp / "bastion-access.json"
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile", str(log), "diego-ssh-proxy",
         f"--address=127.0.0.1:{port}", "--disableHealthCheckServer", "--realm", "bastion",
         f"--accessLog={accessLog}", *exemptTestClients(extraArgs), *extraArgs],
        stdin=subprocess.DEVNULL, cwd=str(tmp), env={**os.environ, **env},
    )  # fmt: skip
    try:
        waitForPort(port, proc)
    except Exception:
        proc.kill()
        raise
    return Bastion(port, proc, log, accessLog, tmp)


async def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """
    A client, off the reactor thread (the stand-in APIs run on the reactor).
    """
    kwargs.setdefault("timeout", 60)
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)

    def call() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(argv, capture_output=True, check=False, **kwargs)

    return await threads.deferToThread(call)
