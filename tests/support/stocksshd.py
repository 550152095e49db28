"""
A stock OpenSSH sshd on loopback, as a second backend for the proxy: password
login for a dedicated test user, created (as root) when missing.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import freePort, waitForPort

USER = "diegossh-test"
PASSWORD = "stock-sshd-password"
SSHD = "/usr/sbin/sshd"


def ensureUser() -> Path:
    """The test user with a known password; its home is returned."""
    home = Path("/tmp") / USER
    if subprocess.run(["id", USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh", USER],
            check=True, capture_output=True,
        )  # fmt: skip
    subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}".encode(), check=True)
    home.mkdir(exist_ok=True)
    subprocess.run(["chown", f"{USER}:", str(home)], check=True)
    return home


@dataclass
class StockSSHD:
    port: int
    hostKeyPub: Path
    home: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def startStockSSHD(tmp: Path, extraConfig: str = "") -> StockSSHD:
    """
    Start one; C{extraConfig} (lines of C{sshd_config}) goes first, so it
    wins over the defaults below (sshd takes a keyword's first value).
    """
    home = ensureUser()
    Path("/run/sshd").mkdir(exist_ok=True)
    hostKey = tmp / "stock_host_key"
    if not hostKey.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True
        )
    port = freePort()
    config = tmp / "sshd_config"
    config.write_text(
        extraConfig + f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostKey}\nPidFile none\n"
        "UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication no\nAllowUsers {USER}\nPermitRootLogin no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\nAllowTcpForwarding yes\n"
        "MaxStartups 100\nMaxSessions 50\n"
    )
    os.chmod(config, 0o600)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL)
    waitForPort(port, proc)
    return StockSSHD(port, Path(f"{hostKey}.pub"), home, proc)
