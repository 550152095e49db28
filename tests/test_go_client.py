"""
The proxy as the cf CLI meets it: a client on golang.org/x/crypto/ssh, the
library the CLI is built on, runs a C{cf ssh}-like session through a real
C{twistd diego-ssh-proxy} to a real C{twistd diego-sshd} (issue 14).

The client is tests/go/cfssh/main.go, built once per test session from
Debian's C{golang-go} and C{golang-golang-x-crypto-dev} with no network
(GOPATH mode over /usr/share/gocode, GOPROXY=off). It prints one JSON line
per step; these tests assert each step. Without a Go toolchain they fail,
saying so: C{make system-deps} installs both packages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.support.daemon import Daemon, startDaemon
from tests.support.keys import key
from tests.support.proxy import CREDENTIALS, Proxy, fingerprintOf, lrp, startProxy

pytestmark = pytest.mark.interop

SOURCE = Path(__file__).parent / "go" / "cfssh" / "main.go"
GOPATH = Path("/usr/share/gocode")
X_CRYPTO = GOPATH / "src" / "golang.org" / "x" / "crypto" / "ssh"
INSTALL = "make system-deps (apt-get install golang-go golang-golang-x-crypto-dev)"
TRANSFER = 64 * 1024 * 1024
FORWARD_BYTES = 1024 * 1024


def goToolchain() -> str:
    """
    The C{go} command and Debian's x/crypto sources, which C{make test}
    installs: without them the tests fail, saying how to install them.
    """
    go = shutil.which("go")
    if go is None:
        pytest.fail(f"Go toolchain unavailable: no `go` on PATH; {INSTALL}")
    if not X_CRYPTO.is_dir():
        pytest.fail(f"Go toolchain unavailable: no golang.org/x/crypto in {GOPATH}; {INSTALL}")
    return go


def buildEnvironment(cache: Path) -> dict[str, str]:
    """
    An offline GOPATH build against Debian's packaged sources: no module
    proxy, no toolchain download, no cgo, a build cache of our own.
    """
    return {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOPATH),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOCACHE": str(cache),
    }


@pytest.fixture(scope="session")
def cfssh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The client, built once per session into the session's temporary
    directory under the hash of its source and of the toolchain.
    """
    go = goToolchain()
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(SOURCE.read_bytes() + version.encode()).hexdigest()[:16]
    root = tmp_path_factory.getbasetemp() / "go-cfssh"
    binary = root / f"cfssh-{digest}"
    if binary.exists():
        return binary
    root.mkdir(exist_ok=True)
    partial = root / f"{binary.name}.partial"
    built = subprocess.run(
        [go, "build", "-o", str(partial), str(SOURCE)],
        env=buildEnvironment(root / "gocache"), cwd=str(root), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, f"go build failed:\n{built.stdout}{built.stderr}"
    partial.rename(binary)
    return binary


# -- the deployment


class EchoServer:
    """
    The TCP service the forward reaches: echoes what it reads and writes
    down how many bytes each connection brought.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[int] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        total = 0
        with conn:
            try:
                while chunk := conn.recv(65536):
                    total += len(chunk)
                    conn.sendall(chunk)
            except OSError:
                pass  # the client closes once it has its bytes back, as cf ssh -L does
        with self._lock:
            self.received.append(total)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Deployment:
    proxy: Proxy
    daemon: Daemon
    echo: EchoServer
    hostKeyBlob: bytes
    """The proxy's public host key, as the wire carries it."""
    lrps: list[dict[str, Any]]


def keyBlob(pubKeyPath: Path) -> bytes:
    return base64.b64decode(pubKeyPath.read_text().split()[1])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("goclient")
    daemonKey, proxyKey = tmp / "daemon_host_key", tmp / "proxy_host_key"
    for path in (daemonKey, proxyKey):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                       check=True)  # fmt: skip
    daemon = startDaemon(tmp, extraArgs=(f"--hostKey={daemonKey}",))
    route = {
        "container_port": 2222,
        "host_fingerprint": fingerprintOf(Path(f"{daemonKey}.pub")),
        "user": "vcap",
        "private_key": key("ed25519").toString("openssh").decode(),
    }
    lrps = [lrp("app", "127.0.0.1", daemon.port, route)]
    proxy = startProxy(tmp, lrps, extraArgs=(f"--hostKey={proxyKey}",))
    echo = EchoServer()
    yield Deployment(proxy, daemon, echo, keyBlob(Path(f"{proxyKey}.pub")), lrps)
    echo.close()
    proxy.stop()
    daemon.stop()


# -- running the client


@dataclass
class Run:
    returncode: int
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    stderr: str = ""

    def __getitem__(self, step: str) -> dict[str, Any]:
        assert step in self.steps, f"no {step!r} line: {self}"
        return self.steps[step]


def runClient(binary: Path, port: int, user: str, password: str, fingerprint: str,
              *args: str, timeout: float = 60) -> Run:  # fmt: skip
    result = subprocess.run(
        [str(binary), f"-address=127.0.0.1:{port}", f"-user={user}", f"-password={password}",
         f"-fingerprint={fingerprint}", f"-timeout={int(timeout)}s", *args],
        capture_output=True, text=True, timeout=timeout + 10, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip
    run = Run(result.returncode, stderr=result.stderr)
    for line in result.stdout.splitlines():
        record = json.loads(line)
        run.steps[record["step"]] = record
    return run


def sha256Base64(blob: bytes) -> str:
    """What Cloud Controller publishes as app_ssh_host_key_fingerprint, unpadded base64."""
    return base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def colonHex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def diego(deployment: Deployment, cfssh: Path, *args: str, fingerprint: str | None = None) -> Run:
    return runClient(
        cfssh, deployment.proxy.port, "diego:app/0", CREDENTIALS,
        fingerprint if fingerprint is not None else sha256Base64(deployment.hostKeyBlob), *args,
    )  # fmt: skip


def until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def sessionArgs(echo: EchoServer) -> list[str]:
    return [f"-forwardTo=127.0.0.1:{echo.port}", f"-transfer={TRANSFER}",
            f"-forwardBytes={FORWARD_BYTES}"]  # fmt: skip


def assertSession(run: Run, hostKeyBlob: bytes, echo: EchoServer) -> None:
    """
    Every step of a whole session passed, and said what we expect.
    """
    assert run.returncode == 0, run
    connect = run["connect"]
    assert connect["ok"] and connect["hostKey"] == "ssh-ed25519 " + sha256Base64(hostKeyBlob)
    assert connect["serverVersion"].startswith("SSH-2.0-")
    shell = run["shell"]
    assert shell["exitStatus"] == 7, shell
    # the window change reached the terminal, and so did the CLI's ECHO mode
    assert "size=30 100 " in shell["output"], shell
    assert " mode=echo " in shell["output"], shell
    assert "term=xterm" in shell["output"], shell
    execStep = run["exec"]
    assert execStep["exitStatus"] == 0
    assert execStep["sent"] == execStep["received"] == TRANSFER
    assert execStep["receivedSha256"] == execStep["sentSha256"]
    for connection in run["forward"]["connections"]:
        assert connection == {"sent": FORWARD_BYTES, "received": FORWARD_BYTES, "match": True}
    keepalive = run["keepalive"]
    assert keepalive["ok"] and not keepalive["errors"], keepalive
    # every request had its reply: the connection was never left hanging
    assert keepalive["answered"] == keepalive["sent"] >= 2, keepalive
    assert run["done"]["ok"]
    # the bytes crossed the forward (the server sees its connections end a
    # moment after the client has its echo)
    assert until(lambda: echo.received.count(FORWARD_BYTES) >= 2), echo.received


# -- the tests


def test_a_cf_ssh_session(cfssh: Path, deployment: Deployment) -> None:
    """
    Password login as a C{diego:} user, the host key checked against the
    published fingerprint, keepalives every second, a pty shell with a
    window change and an exit status, 64 MiB through C{cat} and back, and
    two forwarded connections at once to an echo server.
    """
    run = diego(deployment, cfssh, *sessionArgs(deployment.echo))
    assertSession(run, deployment.hostKeyBlob, deployment.echo)
    logins = [e for e in deployment.proxy.accessEvents() if e.get("outcome") == "success"]
    assert logins and logins[-1]["realm"] == "diego" and logins[-1]["process_guid"] == "app"


def test_terminal_modes_reach_the_terminal(cfssh: Path, deployment: Deployment) -> None:
    """
    The modes in the pty request are applied: with ECHO off the shell's
    terminal says so (the session test sees it on, as the CLI asks).
    """
    run = diego(deployment, cfssh, "-steps=shell", "-echo=0")
    assert run.returncode == 0, run
    assert " mode=-echo " in run["shell"]["output"], run["shell"]


@pytest.mark.parametrize(
    "form",
    ["sha256-base64", "sha256-hex", "sha1-colons", "md5-colons"],
)
def test_each_published_fingerprint_form_verifies(
    cfssh: Path, deployment: Deployment, form: str
) -> None:
    """
    The CLI tells the API's fingerprint formats apart by length; whichever
    one a deployment publishes, the proxy's key matches it.
    """
    blob = deployment.hostKeyBlob
    fingerprint = {
        "sha256-base64": sha256Base64(blob),
        "sha256-hex": hashlib.sha256(blob).hexdigest(),
        "sha1-colons": colonHex(hashlib.sha1(blob).digest()),
        "md5-colons": colonHex(hashlib.md5(blob).digest()),
    }[form]
    run = diego(deployment, cfssh, "-steps=", fingerprint=fingerprint)
    assert run.returncode == 0, run
    assert run["connect"]["ok"] and run["done"]["ok"]


def test_a_wrong_fingerprint_stops_the_client_before_login(
    cfssh: Path, deployment: Deployment
) -> None:
    before = len(deployment.proxy.accessEvents())
    wrong = sha256Base64(b"not the proxy's key")
    run = diego(deployment, cfssh, "-steps=", fingerprint=wrong)
    assert run.returncode == 1, run
    assert not run["connect"]["ok"]
    assert "host key verification failed" in run["connect"]["error"]
    assert "done" not in run.steps
    logins = [e for e in deployment.proxy.accessEvents()[before:] if e.get("event") == "login"]
    assert logins == []


def test_a_wrong_password_is_refused(cfssh: Path, deployment: Deployment) -> None:
    run = runClient(cfssh, deployment.proxy.port, "diego:app/0", "wrong",
                    sha256Base64(deployment.hostKeyBlob), "-steps=")  # fmt: skip
    assert run.returncode == 1, run
    assert "unable to authenticate" in run["connect"]["error"]


# -- an RSA host key, as the BOSH property diego.ssh_proxy.host_key holds


@pytest.fixture(scope="module")
def rsaProxy(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Proxy, bytes]]:
    tmp = tmp_path_factory.mktemp("goclient-rsa")
    hostKey = tmp / "proxy_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(hostKey)],
                   check=True)  # fmt: skip
    proxy = startProxy(tmp, deployment.lrps, extraArgs=(f"--hostKey={hostKey}",))
    yield proxy, keyBlob(Path(f"{hostKey}.pub"))
    proxy.stop()


def test_a_current_client_with_an_rsa_host_key(
    cfssh: Path, deployment: Deployment, rsaProxy: tuple[Proxy, bytes]
) -> None:
    """Today's x/crypto verifies an RSA host key with rsa-sha2-*."""
    proxy, blob = rsaProxy
    run = runClient(cfssh, proxy.port, "diego:app/0", CREDENTIALS, sha256Base64(blob),
                    "-steps=shell")  # fmt: skip
    assert run.returncode == 0, run
    assert run["connect"]["hostKey"] == "ssh-rsa " + sha256Base64(blob)
    assert run["shell"]["exitStatus"] == 7


def test_an_old_cf_cli_with_an_rsa_host_key(
    cfssh: Path, deployment: Deployment, rsaProxy: tuple[Proxy, bytes]
) -> None:
    """
    The client offers only C{ssh-rsa} for host keys, as cf CLI 8.0's pinned
    x/crypto (a769d52) does: it must still log in and run a session.
    """
    proxy, blob = rsaProxy
    run = runClient(cfssh, proxy.port, "diego:app/0", CREDENTIALS, sha256Base64(blob),
                    "-steps=shell", "-hostKeyAlgorithms=ssh-rsa")  # fmt: skip
    assert run["connect"]["ok"], run["connect"]
    assert run.returncode == 0, run
    assert run["shell"]["exitStatus"] == 7


# -- the cf realm: a one-time code from the stand-in UAA, the app from the stand-in Cloud Controller


def scannedHostKey(port: int) -> bytes:
    """
    The proxy's host key as a client sees it on the wire (C{ssh-keyscan}),
    for a proxy that generated its own.
    """
    out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    (line,) = [line for line in out.splitlines() if not line.startswith("#")]
    return base64.b64decode(line.split()[2])


@pytest_twisted.ensureDeferred
async def test_a_cf_user_session(cfssh: Path, tmp_path: Path) -> None:
    """
    The whole session as C{cf ssh} runs it: the user is C{cf:APP-GUID/0},
    the password a one-time code, and the fingerprint in MD5 colon form
    (what C{app_ssh_host_key_fingerprint} often holds).
    """
    from tests.test_proxy_cf import APP, CFWorld

    world = CFWorld(tmp_path)
    echo = EchoServer()
    try:
        proxy = await world.start()
        blob = await threads.deferToThread(scannedHostKey, proxy.port)
        md5 = colonHex(hashlib.md5(blob).digest())
        code = world.uaa.issueCode("alice")
        run = await threads.deferToThread(
            runClient, cfssh, proxy.port, f"cf:{APP}/0", code, md5, *sessionArgs(echo)
        )
        assertSession(run, blob, echo)
        logins = [e for e in proxy.accessEvents() if e.get("outcome") == "success"]
        assert logins[-1]["realm"] == "cf" and logins[-1]["user_name"] == "alice"
    finally:
        echo.close()
        await world.stop()
