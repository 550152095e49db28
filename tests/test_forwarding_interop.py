"""
Port forwarding against the real OpenSSH client over real sockets: C{-L},
C{-W}, C{-D}, C{-R} (allocated and fixed ports), refusals, half-close, and
backpressure with a slow reader at either end, asserted on the server's state.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from diegossh.ssh.tcpip_relay import RelayChannel
from tests.support.forwardserver import (
    Client,
    PeerFactory,
    SSHProcess,
    canListen,
    forwardServerFactory,
    freePort,
    sshArgv,
)
from tests.support.keys import key, writePrivateKey
from tests.support.openssh import run

pytestmark = pytest.mark.interop

MiB = 1024 * 1024
WAIT = 60


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def within(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    from twisted.internet import reactor

    return d.addTimeout(WAIT, reactor)


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return writePrivateKey(key("ed25519"), tmp_path_factory.mktemp("id") / "id_ed25519")


class Harness:
    def __init__(self, tmp: Path, identity: Path) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.tmp = tmp
        self.identity = identity
        factory, self.realm = forwardServerFactory(key("ed25519"), key("ed25519"), reactor)
        self.observed = self.realm.observed
        self.listening = [reactor.listenTCP(0, factory, interface="127.0.0.1")]
        self.sshPort = self.listening[0].getHost().port
        self.peers: list[PeerFactory] = []
        self.procs: list[SSHProcess] = []
        self.clients: list[Client] = []

    def peer(
        self, kind: str, payload: bytes = b"", paused: bool = False
    ) -> tuple[PeerFactory, int]:
        factory = PeerFactory(kind, payload, paused)
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.listening.append(port)
        self.peers.append(factory)
        return factory, port.getHost().port

    def argv(
        self,
        flags: list[str],
        command: list[str] | None = None,
        options: list[str] | None = None,
        logLevel: str = "ERROR",
    ) -> list[str]:
        return sshArgv(self.sshPort, self.identity, flags, command or [], options or [], logLevel)

    async def ssh(
        self,
        args: list[str],
        options: list[str] | None = None,
        logLevel: str = "ERROR",
        env: dict[str, str] | None = None,
    ) -> SSHProcess:
        """
        Start ssh with the C{ready} session; return once its forwards are up.
        """
        argv = self.argv(args, ["ready"], options, logLevel)
        proc = SSHProcess(argv, self.tmp / f"ssh{len(self.procs)}.err", env)
        self.procs.append(proc)
        line = await within(threads.deferToThread(proc.waitReady))
        assert line == b"ready\n", proc.stderr()
        return proc

    async def finish(self, proc: SSHProcess) -> int:
        return int(await within(threads.deferToThread(proc.finish)))

    async def connect(self, port: int, client: Client) -> Client:
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", port)
        await within(connectProtocol(endpoint, client))
        self.clients.append(client)
        return client

    async def loggedOut(self) -> None:
        await within(defer.gatherResults(list(self.realm.loggedOut)))

    async def close(self) -> None:
        for proc in self.procs:
            await threads.deferToThread(proc.close)
        for client in self.clients:
            if client.transport.connected:
                client.transport.abortConnection()
        for peer in self.peers:
            for conn in peer.connections:
                if conn.transport is not None and conn.transport.connected:
                    conn.transport.abortConnection()
        await self.loggedOut()
        for port in self.listening:
            await port.stopListening()


@pytest_twisted.async_yield_fixture
async def h(tmp_path: Path, identity: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, identity)
    try:
        yield harness
    finally:
        await harness.close()


def lastChannel(h: Harness) -> RelayChannel:
    assert h.observed.channels
    return h.observed.channels[-1]


@pytest_twisted.ensureDeferred
async def test_local_forward_echo_16mib(h: Harness) -> None:
    """
    C{ssh -L}: 16 MiB through an echo server and back, by hash; the client's
    half-close reaches the echo server, whose close comes back as EOF.
    """
    _, echoPort = h.peer("echo")
    local = freePort()
    proc = await h.ssh(["-L", f"127.0.0.1:{local}:127.0.0.1:{echoPort}"])
    payload = os.urandom(16 * MiB)
    client = await h.connect(local, Client(payload))
    digest, count, _ = await within(client.done)
    assert (count, digest) == (len(payload), sha(payload))
    assert await h.finish(proc) == 0, proc.stderr()
    channel = lastChannel(h)
    assert channel.name == b"direct-tcpip"
    assert channel.localClosed and channel.remoteClosed
    assert channel.socket is None


@pytest_twisted.ensureDeferred
async def test_stdio_forward_half_close(h: Harness) -> None:
    """
    C{ssh -W}: stdin's EOF reaches the peer as EOF, and its reply, sent after
    that, still comes back.
    """
    digest, digestPort = h.peer("digest")
    payload = os.urandom(3 * MiB + 17)
    argv = h.argv(["-W", f"127.0.0.1:{digestPort}"])
    result = await within(threads.deferToThread(run, argv, payload))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == f"{sha(payload)} {len(payload)}\n".encode()
    assert digest.sawEOF == 1


def socks5Connect(port: int, host: str, destPort: int, payload: bytes) -> bytes:
    """
    A minimal SOCKS5 client (no auth, CONNECT by name): send, half-close,
    read to EOF.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        name = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", destPort))
        reply = b""
        while len(reply) < 10:
            chunk = s.recv(10 - len(reply))
            assert chunk, "SOCKS server closed during the reply"
            reply += chunk
        if reply[1] != 0:
            return b"SOCKS error %d" % reply[1]
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
        return bytes(data)


@pytest_twisted.ensureDeferred
async def test_dynamic_forward_socks(h: Harness) -> None:
    """
    C{ssh -D}: a SOCKS5 CONNECT to "localhost" (resolved by the server) reaches
    the echo server.
    """
    _, echoPort = h.peer("echo")
    socksPort = freePort()
    proc = await h.ssh(["-D", f"127.0.0.1:{socksPort}"])
    payload = os.urandom(MiB)
    echoed = await within(
        threads.deferToThread(socks5Connect, socksPort, "localhost", echoPort, payload)
    )
    assert sha(echoed) == sha(payload)
    assert lastChannel(h).host == "localhost"
    assert await h.finish(proc) == 0, proc.stderr()


@pytest_twisted.ensureDeferred
async def test_remote_forward_allocated_port(h: Harness) -> None:
    """
    C{ssh -R 0:...}: the allocated port comes back in the reply ("Allocated
    port N"), connections to it reach the client's side, and the listener
    closes when the connection ends.
    """
    _, echoPort = h.peer("echo")
    proc = await h.ssh(
        ["-R", f"0:127.0.0.1:{echoPort}"], ["ExitOnForwardFailure=yes"], logLevel="INFO"
    )
    found = re.search(r"Allocated port (\d+) for remote forward", proc.stderr())
    assert found, proc.stderr()
    allocated = int(found.group(1))
    (forwards,) = [a.remoteForwards for a in h.realm.avatars]
    assert [port for _, port in forwards.listeners] == [allocated]
    assert not canListen(allocated)

    payload = os.urandom(2 * MiB)
    client = await h.connect(allocated, Client(payload))
    digest, count, _ = await within(client.done)
    assert (count, digest) == (len(payload), sha(payload))
    assert lastChannel(h).name == b"forwarded-tcpip"

    assert await h.finish(proc) == 0, proc.stderr()
    await h.loggedOut()
    assert canListen(allocated)


@pytest_twisted.ensureDeferred
async def test_remote_forward_fixed_port(h: Harness) -> None:
    """
    C{ssh -R port:...} on a free port, with the half-close reaching the
    client-side peer.
    """
    digest, digestPort = h.peer("digest")
    fixed = freePort()
    proc = await h.ssh(["-R", f"{fixed}:127.0.0.1:{digestPort}"], ["ExitOnForwardFailure=yes"])
    payload = os.urandom(MiB + 3)
    client = await h.connect(fixed, Client(payload))
    _, _, reply = await within(client.done)
    assert reply == f"{sha(payload)} {len(payload)}\n".encode()
    assert digest.sawEOF == 1
    assert await h.finish(proc) == 0, proc.stderr()
    await h.loggedOut()
    assert canListen(fixed)


@pytest_twisted.ensureDeferred
async def test_remote_forward_port_in_use_refused(h: Harness) -> None:
    _, busy = h.peer("echo")
    argv = h.argv(["-N", "-R", f"{busy}:127.0.0.1:{busy}"], [], ["ExitOnForwardFailure=yes"])
    result = await within(threads.deferToThread(run, argv))
    assert result.returncode == 255
    assert f"remote port forwarding failed for listen port {busy}" in result.stderr.decode()
    await h.loggedOut()
    (avatar,) = h.realm.avatars
    assert avatar.requests.count(b"tcpip-forward") == 1
    assert avatar._remoteForwards is None  # stopped at logout


@pytest_twisted.ensureDeferred
async def test_refused_connect_reported(h: Harness) -> None:
    """
    A refused connect is a refused channel open, with the reason.
    """
    closed = freePort()
    argv = h.argv(["-W", f"127.0.0.1:{closed}"], logLevel="INFO")
    result = await within(threads.deferToThread(run, argv, b"x"))
    assert result.returncode == 255
    assert "open failed: connect failed: Connection refused" in result.stderr.decode()
    assert h.observed.channels == []


@pytest_twisted.ensureDeferred
async def test_refused_connect_then_session_goes_on(h: Harness) -> None:
    """
    With C{-L}, a failed connect closes that one local connection only.
    """
    closed = freePort()
    local = freePort()
    proc = await h.ssh(["-L", f"127.0.0.1:{local}:127.0.0.1:{closed}"], logLevel="INFO")
    client = await h.connect(local, Client(b"hello"))
    _, count, _ = await within(client.done)
    assert count == 0
    assert await h.finish(proc) == 0
    assert "connect failed: Connection refused" in proc.stderr()


@pytest_twisted.ensureDeferred
async def test_slow_reader_bounded(h: Harness) -> None:
    """
    Socket -> channel with a reader that does not read: the server stops
    reading the socket once the window is used up (holding at most one read
    it could not send) instead of buffering; once the reader reads, every
    byte arrives.
    """
    payload = os.urandom(48 * MiB)
    _, sourcePort = h.peer("source", payload)
    local = freePort()
    proc = await h.ssh(["-L", f"127.0.0.1:{local}:127.0.0.1:{sourcePort}"])
    paused = h.observed.when("readPaused")
    client = await h.connect(local, Client(paused=True, halfClose=False))
    await within(paused)
    channel = lastChannel(h)
    assert 0 < channel.bufferedBytes <= channel.highWater
    assert channel.remoteWindowLeft == 0
    client.resume()
    digest, count, _ = await within(client.done)
    assert (count, digest) == (len(payload), sha(payload))
    assert h.observed.maxBuffered <= channel.highWater
    assert await h.finish(proc) == 0


@pytest_twisted.ensureDeferred
async def test_slow_socket_bounded(h: Harness) -> None:
    """
    Channel -> socket with a peer that does not read: the server stops
    granting window once the socket's buffer is full, so what it holds stays
    under one window; once the peer reads, every byte arrives and its reply
    after EOF comes back.
    """
    digest, digestPort = h.peer("digest", paused=True)
    local = freePort()
    proc = await h.ssh(["-L", f"127.0.0.1:{local}:127.0.0.1:{digestPort}"])
    paused = h.observed.when("writePaused")
    payload = os.urandom(48 * MiB)
    client = await h.connect(local, Client(payload))
    await within(paused)
    windowClosed = h.observed.when("windowClosed")
    await within(windowClosed)
    channel = lastChannel(h)
    assert channel.sinkPaused
    # everything since the pause is held, ungranted: at most one window
    assert channel.localWindowLeft == 0
    assert 0 < channel.owed <= channel.localWindowSize
    (peer,) = digest.connections
    peer.resume()  # type: ignore[attr-defined]
    _, _, reply = await within(client.done)
    assert reply == f"{sha(payload)} {len(payload)}\n".encode()
    assert h.observed.maxOwed <= channel.localWindowSize
    assert await h.finish(proc) == 0


@pytest_twisted.ensureDeferred
async def test_agent_and_x11_refused_session_goes_on(h: Harness, tmp_path: Path) -> None:
    """
    C{-A} and C{-X} ask; the server refuses; the session works.
    """
    agentSocket = str(tmp_path / "agent.sock")
    agent = await within(
        threads.deferToThread(run, ["ssh-agent", "-a", agentSocket, "-s"], None, None, 30)
    )
    assert agent.returncode == 0, agent.stderr
    pid = int(re.search(rb"SSH_AGENT_PID=(\d+)", agent.stdout).group(1))  # type: ignore[union-attr]
    try:
        env = {"SSH_AUTH_SOCK": agentSocket, "DISPLAY": "127.0.0.1:55"}
        argv = h.argv(["-A", "-X"], ["echo"])
        result = await within(threads.deferToThread(_runEnv, argv, b"still here\n", env))
    finally:
        os.kill(pid, 15)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"still here\n"
    (avatar,) = h.realm.avatars
    assert b"x11-req" in avatar.requests
    assert b"auth-agent-req@openssh.com" in avatar.requests


def _runEnv(argv: list[str], stdin: bytes, env: dict[str, str]) -> Any:
    import subprocess

    return subprocess.run(
        argv, input=stdin, capture_output=True, env={**os.environ, **env}, timeout=WAIT, check=False
    )


@pytest_twisted.ensureDeferred
async def test_streamlocal_refused_session_goes_on(h: Harness, tmp_path: Path) -> None:
    """
    C{-R /path} (streamlocal-forward) and C{-L port:/path}
    (direct-streamlocal) are refused; the session goes on.
    """
    _, echoPort = h.peer("echo")
    local = freePort()
    proc = await h.ssh(
        [
            "-R",
            f"{tmp_path / 'remote.sock'}:127.0.0.1:{echoPort}",
            "-L",
            f"127.0.0.1:{local}:{tmp_path / 'nowhere.sock'}",
        ],
        ["ExitOnForwardFailure=no"],
        logLevel="INFO",
    )
    client = await h.connect(local, Client(b"hello"))
    _, count, _ = await within(client.done)
    assert count == 0
    assert await h.finish(proc) == 0
    stderr = proc.stderr()
    assert "remote port forwarding failed for listen path" in stderr
    assert "administratively prohibited" in stderr
    assert not (tmp_path / "remote.sock").exists()
    (avatar,) = h.realm.avatars
    assert b"streamlocal-forward@openssh.com" in avatar.requests
