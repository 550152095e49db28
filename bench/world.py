"""
The servers a benchmark run measures, all on 127.0.0.1: a stock OpenSSH sshd
(key login for the bench key, password login for the proxy's route), a
C{twistd diego-sshd}, and a C{twistd diego-ssh-proxy} with a local LRP table
routing C{diego:app/0} to diego-sshd and C{diego:stock/0} to the stock sshd.

Every client command uses one generated ssh_config, so each path is measured
with the same OpenSSH client, the same cipher and the same key.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon, freePort, startDaemon, waitForPort
from tests.support.proxy import CREDENTIALS, Proxy, fingerprintOf, lrp, startProxy
from tests.support.stocksshd import PASSWORD, SSHD, USER, ensureUser

CIPHER = "aes128-gcm@openssh.com"
# Common to both servers; stock sshd would pick sntrup761x25519 (+~100 ms per login).
KEX = "curve25519-sha256"
DATA_NAME = "bench.bin"
UPLOAD_NAME = "bench-upload.bin"
NOFILE = 65536


def raiseFileLimit(wanted: int = NOFILE) -> int:
    """
    Raise RLIMIT_NOFILE for this process (and so for every child it starts).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rssKiB(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpuSeconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class StockKeySSHD:
    port: int
    hostKeyPub: Path
    home: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def startStockSSHD(tmp: Path, identityPub: Path) -> StockKeySSHD:
    """
    Stock sshd as the test helper makes it, plus key login for the bench key
    (AuthorizedKeysFile outside the user's home, so StrictModes is off).
    """
    home = ensureUser()
    Path("/run/sshd").mkdir(exist_ok=True)
    hostKey = tmp / "stock_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    authorized = tmp / "stock_authorized_keys"
    shutil.copyfile(identityPub, authorized)
    os.chmod(authorized, 0o644)
    port = freePort()
    config = tmp / "stock_sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostKey}\nPidFile none\n"
        "UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nAuthorizedKeysFile {authorized}\nStrictModes no\n"
        f"AllowUsers {USER}\nPermitRootLogin no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\nAllowTcpForwarding yes\n"
        "MaxStartups 200:30:400\nMaxSessions 50\nUseDNS no\n"
    )
    os.chmod(config, 0o600)
    # -E: its log to a file (the port probe alone logs a kex_exchange_identification error).
    proc = subprocess.Popen(
        [SSHD, "-D", "-E", str(tmp / "stock_sshd.log"), "-f", str(config)],
        stdin=subprocess.DEVNULL,
    )
    waitForPort(port, proc)
    return StockKeySSHD(port, Path(f"{hostKey}.pub"), home, proc)


@dataclass
class World:
    tmp: Path
    config: Path
    identity: Path
    data: Path
    size: int
    stock: StockKeySSHD
    daemon: Daemon
    proxy: Proxy
    lrps: list[dict[str, Any]] = field(default_factory=list)
    extraProxies: list[Proxy] = field(default_factory=list)

    def startProxy(self, name: str, args: Sequence[str]) -> Proxy:
        """
        Another proxy with the same routes (e.g. C{--workers=2}); stopped with the world.
        """
        home = self.tmp / name
        home.mkdir()
        proxy = startProxy(home, self.lrps, extraArgs=("--idleConnectionTimeout=1h", *args))
        self.extraProxies.append(proxy)
        return proxy

    # --- client command lines -------------------------------------------------
    def _ssh(self) -> list[str]:
        return ["ssh", "-F", str(self.config)]

    def _proxyPrefix(self) -> list[str]:
        return ["sshpass", "-e"]

    def _proxyOptions(self, user: str) -> list[str]:
        return ["-o", "BatchMode=no", "-o", "PubkeyAuthentication=no", "-o", f"User={user}"]

    def sshArgv(self, path: str, command: Sequence[str], proxy: Proxy | None = None) -> list[str]:
        """
        ssh for one of the measured paths: a (stock), b (diego-sshd),
        c (stock via stock ProxyJump), d (proxy -> diego-sshd), e (proxy -> stock);
        d and e through C{proxy} when given, else the world's proxy.
        """
        if path == "a":
            return [*self._ssh(), "-p", str(self.stock.port), f"{USER}@127.0.0.1", *command]
        if path == "b":
            return [*self._ssh(), "-p", str(self.daemon.port), "vcap@127.0.0.1", *command]
        if path == "c":
            # "localhost": the same host name twice is refused as a jump host loop.
            jump = f"{USER}@localhost:{self.stock.port}"
            return [
                *self._ssh(),
                "-J",
                jump,
                "-p",
                str(self.stock.port),
                f"{USER}@127.0.0.1",
                *command,
            ]
        if path in ("d", "e"):
            user = "diego:app/0" if path == "d" else "diego:stock/0"
            return [
                *self._proxyPrefix(),
                *self._ssh(),
                *self._proxyOptions(user),
                "-p",
                str((proxy or self.proxy).port),
                "127.0.0.1",
                *command,
            ]
        raise ValueError(path)

    def fileArgv(self, tool: str, path: str, direction: str, local: str) -> list[str]:
        """
        scp or sftp for path b or d; C{direction} is "down" or "up".
        """
        if path == "b":
            prefix, port, user = [], self.daemon.port, "vcap"
            options: list[str] = []
        elif path == "d":
            prefix, port, user = self._proxyPrefix(), self.proxy.port, "diego:app/0"
            options = self._proxyOptions(user)
        else:
            raise ValueError(path)
        base = [*prefix, tool, "-F", str(self.config), *options, "-P", str(port)]
        if tool == "scp":
            remoteData = (
                f"{user}@127.0.0.1:{DATA_NAME}" if path == "b" else f"127.0.0.1:{DATA_NAME}"
            )
            remoteUp = remoteData.replace(DATA_NAME, UPLOAD_NAME)
            if direction == "down":
                return [*base, remoteData, local]
            return [*base, str(self.data), remoteUp]
        batch = self.tmp / f"sftp-{direction}.batch"
        if direction == "down":
            batch.write_text(f"get {DATA_NAME} {local}\n")
        else:
            batch.write_text(f"put {self.data} {UPLOAD_NAME}\n")
        target = f"{user}@127.0.0.1" if path == "b" else "127.0.0.1"
        return [*base, "-b", str(batch), target]

    def env(self) -> dict[str, str]:
        return {**os.environ, "SSHPASS": CREDENTIALS}

    def removeUploads(self) -> None:
        for home in (self.daemon.home, self.stock.home):
            (home / UPLOAD_NAME).unlink(missing_ok=True)

    def stop(self) -> None:
        for server in (*self.extraProxies, self.proxy, self.daemon, self.stock):
            try:
                server.stop()
            except Exception as e:  # keep stopping the others
                print(f"stopping {server}: {e}")
        self.removeUploads()
        self.data.unlink(missing_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def makeData(path: Path, size: int) -> None:
    """
    C{size} bytes of incompressible data, then read once so it is in the page cache.
    """
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def writeClientConfig(path: Path, identity: Path) -> None:
    path.write_text(
        "Host *\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 10\n"
        f"  Ciphers {CIPHER}\n"
        f"  KexAlgorithms {KEX}\n"
        "  AddressFamily inet\n"
        "  Compression no\n"
        f"  IdentityFile {identity}\n"
        "  IdentitiesOnly yes\n"
        "  ControlMaster no\n"
        "  ControlPath none\n"
    )


def startWorld(size: int, proxyArgs: Sequence[str] = ()) -> World:
    raiseFileLimit()
    tmp = Path(tempfile.mkdtemp(prefix="diegossh-bench-"))
    os.chmod(tmp, 0o755)
    hostKey = tmp / "daemon_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}",))
    identityPub = tmp / "id_ed25519.pub"
    subprocess.run(
        ["ssh-keygen", "-y", "-f", str(daemon.identity)], check=True, stdout=identityPub.open("wb")
    )
    stock = startStockSSHD(tmp, identityPub)
    # One copy of the data, in the stock user's home, readable by all; diego-sshd's
    # home links to it, so both servers read the same page-cache pages.
    data = stock.home / DATA_NAME
    makeData(data, size)
    os.chmod(data, 0o644)
    link = daemon.home / DATA_NAME
    link.unlink(missing_ok=True)
    link.symlink_to(data)
    config = tmp / "ssh_config"
    writeClientConfig(config, daemon.identity)
    route = {
        "container_port": 2222,
        "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
        "user": "vcap",
        "private_key": daemon.identity.read_text(),
    }
    stockRoute = {
        "container_port": 2222,
        "host_fingerprint": fingerprintOf(stock.hostKeyPub),
        "user": USER,
        "password": PASSWORD,
    }
    lrps = [
        lrp("app", "127.0.0.1", daemon.port, route),
        lrp("stock", "127.0.0.1", stock.port, stockRoute),
    ]
    proxy = startProxy(tmp, lrps, extraArgs=("--idleConnectionTimeout=1h", *proxyArgs))
    return World(tmp, config, daemon.identity, data, size, stock, daemon, proxy, lrps)


TWISTD_PLUGIN_HELP = [str(Path(sys.executable).with_name("twistd")), "diego-ssh-proxy", "--help"]
