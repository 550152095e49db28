"""
How daemon sessions end, end to end with OpenSSH's ssh: programs do not
outlive sessions dropped right after they start, a backed-up session's
descriptors are closed when its connection dies, C{ssh host yes | head -n 1}
ends, and a program that cannot start is one line on stderr.
"""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conchConnection
from twisted.cred.portal import Portal
from twisted.internet import threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.factory import SSHServerFactory
from diegossh.ssh.keys import loadAuthorizedKey
from diegossh.sshd.auth import AuthorizedKeyChecker, DaemonUserAuthServer
from diegossh.sshd.avatar import DaemonRealm
from diegossh.sshd.environment import baseEnvironment
from diegossh.sshd.programs import buildProgram
from diegossh.sshd.session import SessionConfig, defaultShell
from diegossh.sshd.tap import VERSION
from tests.support.daemon import Daemon, runClient, startDaemon
from tests.support.eventually import eventually, eventuallyBlocking
from tests.support.keys import authorizedKeyLine, key, writePrivateKey
from tests.support.openssh import BASE_OPTIONS
from tests.support.proxy import Proxy, daemonBehindRoute, lrp, startProxy
from tests.support.sshclient import LoginClient, RawConnection

pytestmark = pytest.mark.interop

SESSIONS = 20
# How long the daemon may take to clean up after a client vanished
# (KILL_GRACE plus reaping); a bound on a wait, not an expected duration.
CLEANUP_BOUND = 20.0


def marked(tag: str) -> list[int]:
    """Processes whose environment holds MARK=tag."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if f"MARK={tag}".encode() in environ:
            found.append(int(entry))
    return found


def zombieChildren(pid: int) -> list[int]:
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == pid:
            zombies.append(int(entry))
    return zombies


# /proc/net/tcp states of a connection a process still holds a descriptor of.
_HELD = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT


def openConnections(port: int) -> int:
    """Connections to local C{port} a process still holds (what /proc/net/tcp lists)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in _HELD:
                count += 1
    return count


def idle(port: int) -> None:
    """Wait until nothing is connected to the server on C{port}: its descriptors are its own."""
    eventuallyBlocking(lambda: openConnections(port) == 0, f"the connections to {port} to end")


def pipeBlocked(tag: str) -> bool:
    """The marked program waits to write into a full pipe: nobody reads it."""
    for pid in marked(tag):
        try:
            return Path(f"/proc/{pid}/wchan").read_text().endswith("pipe_write")
        except OSError:
            return False
    return False


def fdCount(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def dropRightAfterStart(
    argv: list[str], command: str, waitForOutput: bool, env: dict[str, str] | None = None
) -> None:
    """
    Run C{command} and kill the client as soon as the exec request is on the
    wire (or, with C{waitForOutput}, once the command said something).
    """
    proc = subprocess.Popen(
        [*argv[:-1], "-v", argv[-1], command],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        if waitForOutput:
            proc.stdout.readline()
        else:
            for line in proc.stderr:
                if b"Sending command" in line:
                    break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("pty", [False, True], ids=["pipes", "pty"])
def test_programs_do_not_outlive_dropped_sessions(daemon: Daemon, pty: bool) -> None:
    tag = uuid.uuid4().hex
    options = ("RequestTTY=force",) if pty else ()
    argv = daemon.ssh(options=options)
    for i in range(SESSIONS):
        if i % 2:
            # The leader leaves at once; its child holds the session's output.
            dropRightAfterStart(argv, f"MARK={tag} sleep 1000 & echo started", True)
        else:
            dropRightAfterStart(argv, f"MARK={tag} exec sleep 1000", False)
    eventuallyBlocking(lambda: not marked(tag), f"programs marked {tag} to end", CLEANUP_BOUND)
    assert zombieChildren(daemon.proc.pid) == []


async def rawLogin(daemon: Daemon) -> tuple[LoginClient, RawConnection]:
    """Our own client, logged in, speaking raw connection-layer messages."""
    client = LoginClient()
    client.key = key("ed25519")
    client.connection = RawConnection()
    client.clock = reactor()
    client.policy = AlgorithmPolicy.everything()
    await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", daemon.port), client)
    conn = await client.connection.started.addTimeout(30, reactor())
    return client, conn


@pytest_twisted.ensureDeferred
async def test_malformed_requests_are_refused_and_the_session_goes_on(daemon: Daemon) -> None:
    client, conn = await rawLogin(daemon)
    try:
        conn.send(
            conchConnection.MSG_CHANNEL_OPEN,
            common.NS(b"session") + struct.pack(">3L", 0, 1 << 20, 32768),
        )
        confirmation = await conn.waitFor(conchConnection.MSG_CHANNEL_OPEN_CONFIRMATION).addTimeout(
            30, reactor()
        )
        channel = struct.pack(">L", struct.unpack(">2L", confirmation[:8])[1])
        malformed = [
            (b"pty-req", common.NS(b"xterm") + struct.pack(">3L", 80, 24, 0)),
            (b"window-change", struct.pack(">2L", 80, 24)),
            (b"env", common.NS(b"FOO") + b"\0\0\0\x09bar"),
            (b"exec", b"\0\0\1\0echo"),
            (b"exec", common.NS(b"echo") + b"junk"),
            (b"subsystem", b"\0\0"),
            (b"signal", b""),
            (b"shell", b"\0"),
            (b"\xff\xfe", b""),
        ]
        for wantReply in (b"\0", b"\1"):
            for name, payload in malformed:
                message = channel + common.NS(name) + wantReply + payload
                conn.send(conchConnection.MSG_CHANNEL_REQUEST, message)
                if wantReply == b"\1":
                    await conn.waitFor(conchConnection.MSG_CHANNEL_FAILURE).addTimeout(
                        30, reactor()
                    )
        # The session is still usable.
        message = channel + common.NS(b"exec") + b"\1" + common.NS(b"echo fine")
        conn.send(conchConnection.MSG_CHANNEL_REQUEST, message)
        await conn.waitFor(conchConnection.MSG_CHANNEL_SUCCESS).addTimeout(30, reactor())
        data = await conn.waitFor(conchConnection.MSG_CHANNEL_DATA).addTimeout(30, reactor())
        assert data[8:] == b"fine\n"
        await conn.waitFor(conchConnection.MSG_CHANNEL_CLOSE).addTimeout(30, reactor())
    finally:
        client.transport.loseConnection()
    await eventually(lambda: openConnections(daemon.port) == 0, "the daemon to close its end")
    assert b"Traceback" not in daemon.log.read_bytes()


@pytest.mark.parametrize("pty", [False, True], ids=["pipes", "pty"])
@pytest_twisted.ensureDeferred
async def test_channel_closed_with_its_exec_request_leaves_no_process(
    daemon: Daemon, pty: bool
) -> None:
    # Our own client sends exec and close in one write, so the daemon sees
    # the close right after the fork, before the child's setsid(); the
    # connection stays up, so only the channel's end can clean up.
    client, conn = await rawLogin(daemon)
    tag = uuid.uuid4().hex
    command = common.NS(f"MARK={tag} exec sleep 1000".encode())
    ptyReq = common.NS(b"xterm") + struct.pack(">4L", 80, 24, 0, 0) + common.NS(b"")
    try:
        for i in range(SESSIONS):
            opening = common.NS(b"session") + struct.pack(">3L", i, 1 << 20, 32768)
            conn.send(conchConnection.MSG_CHANNEL_OPEN, opening)
            confirmation = await conn.waitFor(
                conchConnection.MSG_CHANNEL_OPEN_CONFIRMATION
            ).addTimeout(30, reactor())
            channel = struct.pack(">L", struct.unpack(">2L", confirmation[:8])[1])
            request = conchConnection.MSG_CHANNEL_REQUEST
            if pty:
                conn.send(request, channel + common.NS(b"pty-req") + b"\0" + ptyReq)
            conn.send(request, channel + common.NS(b"exec") + b"\0" + command)
            conn.send(conchConnection.MSG_CHANNEL_CLOSE, channel)
            await conn.waitFor(conchConnection.MSG_CHANNEL_CLOSE).addTimeout(30, reactor())
        await eventually(lambda: not marked(tag), f"programs marked {tag} to end", CLEANUP_BOUND)
        assert b"Traceback" not in daemon.log.read_bytes()
    finally:
        client.transport.loseConnection()


def test_backed_up_session_gives_back_its_descriptors(daemon: Daemon) -> None:
    idle(daemon.port)
    baseline = fdCount(daemon.proc.pid)
    tag = uuid.uuid4().hex
    # Nobody reads the client's stdout: its window closes, the daemon's
    # queue fills and the program's pipes are paused.
    proc = subprocess.Popen(
        daemon.ssh(f"MARK={tag} exec head -c 2000000000 /dev/zero"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventuallyBlocking(lambda: pipeBlocked(tag), "the program to block on its full pipe", 60)
        assert fdCount(daemon.proc.pid) > baseline
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    eventuallyBlocking(
        lambda: fdCount(daemon.proc.pid) <= baseline and not marked(tag),
        f"the program to end and the daemon to be back to {baseline} descriptors",
        CLEANUP_BOUND,
    )


# -- the same through the proxy (its leg to the daemon is what ends)


@dataclass
class BehindProxy:
    daemon: Daemon
    lrps: list[dict[str, Any]]
    tmp: Path

    def proxy(self) -> Proxy:
        return startProxy(self.tmp, self.lrps)


@pytest.fixture(scope="module")
def behindProxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BehindProxy]:
    tmp = tmp_path_factory.mktemp("behind-proxy")
    daemon, route = daemonBehindRoute(tmp)
    try:
        yield BehindProxy(daemon, [lrp("app", "127.0.0.1", daemon.port, route)], tmp)
    finally:
        daemon.stop()


@pytest.mark.parametrize("pty", [False, True], ids=["pipes", "pty"])
def test_programs_do_not_outlive_sessions_dropped_at_the_proxy(
    behindProxy: BehindProxy, pty: bool
) -> None:
    proxy = behindProxy.proxy()
    try:
        tag = uuid.uuid4().hex
        argv = proxy.ssh("diego:app/0", options=("RequestTTY=force",) if pty else ())
        for i in range(SESSIONS):
            if i % 2:
                command = f"MARK={tag} sleep 1000 & echo started"
                dropRightAfterStart(argv, command, True, proxy.env())
            else:
                dropRightAfterStart(argv, f"MARK={tag} exec sleep 1000", False, proxy.env())
        eventuallyBlocking(lambda: not marked(tag), f"programs marked {tag} to end", CLEANUP_BOUND)
        assert zombieChildren(behindProxy.daemon.proc.pid) == []
    finally:
        proxy.stop()


def test_proxy_restarted_mid_transfer_gives_back_the_descriptors(
    behindProxy: BehindProxy,
) -> None:
    daemonPid = behindProxy.daemon.proc.pid
    proxy = behindProxy.proxy()
    idle(behindProxy.daemon.port)
    baseline = fdCount(daemonPid)
    tag = uuid.uuid4().hex
    client = subprocess.Popen(
        proxy.ssh("diego:app/0", f"MARK={tag} exec head -c 2000000000 /dev/zero"),
        env=proxy.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventuallyBlocking(lambda: pipeBlocked(tag), "the program to block on its full pipe", 60)
        assert fdCount(daemonPid) > baseline
        # The proxy goes away at once, as a crash or a redeploy would have it.
        proxy.proc.kill()
        proxy.proc.wait()
        eventuallyBlocking(
            lambda: fdCount(daemonPid) <= baseline and not marked(tag),
            f"the program to end and the daemon to be back to {baseline} descriptors",
            CLEANUP_BOUND,
        )
    finally:
        client.kill()
        client.wait()
        assert client.stdout is not None
        client.stdout.close()
        proxy.stop()


def test_a_missing_home_directory_is_one_line(tmp_path: Path) -> None:
    d = startDaemon(tmp_path, env={"HOME": str(tmp_path / "no-such-home")})
    try:
        result = runClient(d.ssh("pwd"), timeout=60)
    finally:
        d.stop()
    assert result.returncode == 0
    assert result.stdout == b"/\n"
    assert (
        result.stderr
        == (
            f"diego-sshd: could not chdir to home directory {tmp_path / 'no-such-home'}: "
            "No such file or directory\n"
        ).encode()
    )


# -- an in-process daemon, for what the shipped one cannot be made to do


@dataclass
class InProcess:
    port: int
    identity: Path

    def ssh(self, *command: str) -> list[str]:
        return [
            "ssh", *BASE_OPTIONS, "-p", str(self.port), "-i", str(self.identity),
            "vcap@127.0.0.1", *command,
        ]  # fmt: skip


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield writePrivateKey(key("ed25519"), tmp_path_factory.mktemp("id") / "id_ed25519")


async def _listen(identity: Path, shell: str, version: bytes) -> AsyncIterator[InProcess]:
    home = identity.parent
    config = SessionConfig(baseEnvironment(False), str(home), shell, buildProgram)
    checker = AuthorizedKeyChecker(loadAuthorizedKey(authorizedKeyLine(key("ed25519"))))
    portal = Portal(DaemonRealm(config, reactor()), [checker])
    factory = SSHServerFactory(
        portal, [key("p256")], AlgorithmPolicy.fromOptions(), reactor(), version
    )
    factory.services = {**factory.services, b"ssh-userauth": DaemonUserAuthServer}
    port = reactor().listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield InProcess(port.getHost().port, identity)
    finally:
        await port.stopListening()


@pytest_twisted.async_yield_fixture
async def openSSHBanner(identity: Path) -> AsyncIterator[InProcess]:
    # OpenSSH's client sends eow@openssh.com only to a server whose banner
    # starts with "OpenSSH" (compat.c): the shipped banner does.
    async for server in _listen(identity, defaultShell(), VERSION):
        yield server


@pytest_twisted.async_yield_fixture
async def noShell(identity: Path) -> AsyncIterator[InProcess]:
    async for server in _listen(identity, "/bin/nosuch", VERSION):
        yield server


def pipeline(shell: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        shell, shell=True, executable="/bin/bash", capture_output=True, timeout=60, check=False
    )


@pytest_twisted.ensureDeferred
async def test_yes_into_head_ends(openSSHBanner: InProcess) -> None:
    tag = uuid.uuid4().hex
    command = " ".join(openSSHBanner.ssh(f"'MARK={tag} exec yes'"))
    result = await threads.deferToThread(
        pipeline, f"{command} | head -n 1; echo status ${{PIPESTATUS[0]}}"
    )
    # As against sshd: yes dies of SIGPIPE, which ssh reports as 255.
    assert result.stdout == b"y\nstatus 255\n", result.stderr
    assert marked(tag) == []


@pytest_twisted.ensureDeferred
async def test_a_program_that_cannot_start_is_one_line(noShell: InProcess) -> None:
    result = await threads.deferToThread(runClient, noShell.ssh("echo hi"), timeout=60)
    assert result.returncode == 127
    assert result.stdout == b""
    assert result.stderr == b"diego-sshd: cannot run /bin/nosuch: No such file or directory\n"
