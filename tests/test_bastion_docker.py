# -*- test-case-name: tests.test_bastion_docker -*-
"""
L{DockerEngine} against the fake Docker Engine API on a real unix socket,
and the multiplexed-stream parser on plain bytes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface.verify import verifyObject

from diegossh.bastion._docker_stream import (
    STDERR,
    STDOUT,
    SYSTEMERR,
    MultiplexedStream,
    readExecStream,
)
from diegossh.bastion._engineapi import MAX_FILE_SIZE, CommandFailed, ExecOutput, catCommand
from diegossh.bastion.docker import DockerEngine
from diegossh.bastion.targets import EngineError, EngineTarget
from diegossh.interfaces import IContainerEngine
from tests.engine_contract import EngineContract, EngineUnderTest, failure
from tests.fakes.docker import FakeDockerEngine, frame

LABELS = {"diegossh.bastion": "true", "team": "blue"}
KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0p0cvRrVZ0c3OvnjDJHoTjp7dNE4RBh0DTt1dGjtnO web\n"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def socketDir() -> Iterator[Path]:
    """A short directory: a unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="dk", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_twisted.async_yield_fixture
async def docker(socketDir: Path) -> AsyncIterator[FakeDockerEngine]:
    fake = FakeDockerEngine(_reactor(), socketDir / "docker.sock")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def engine(docker: FakeDockerEngine) -> Callable[..., DockerEngine]:
    def make(labels: dict[str, str] = LABELS, timeout: float = 5.0, **kw: Any) -> DockerEngine:
        return DockerEngine(_reactor(), docker.socketPath, labels, timeout, **kw)

    return make


@pytest.fixture
def contract(docker: FakeDockerEngine, engine: Callable[..., DockerEngine]) -> EngineUnderTest:
    return EngineUnderTest(
        add=lambda name, files: docker.add(name, "172.17.0.2", LABELS, files=files),
        engine=engine,
        commands=lambda: docker.execCommands,
    )


class TestDockerContract(EngineContract):
    pass


def test_provides_interface(engine: Callable[..., DockerEngine]) -> None:
    e = engine()
    assert verifyObject(IContainerEngine, e)
    assert e.kind == "docker"


def test_label_key_with_equals_refused(docker: FakeDockerEngine) -> None:
    with pytest.raises(ValueError):
        DockerEngine(_reactor(), docker.socketPath, {"a=b": "c"}, 1.0)


@pytest_twisted.ensureDeferred
async def test_lists_running_containers_with_every_label(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    web1 = docker.add("web-1", "172.17.0.2", {**LABELS, "extra": "x"})
    docker.add("web-2", "172.17.0.3", {"diegossh.bastion": "true"})
    docker.add("web-3", "172.17.0.4", {**LABELS, "team": "red"})
    docker.add("web-4", "172.17.0.5", LABELS, state="exited")
    docker.add("web-5", "", LABELS)
    docker.add("web-6", "172.17.0.7", LABELS)
    targets = await engine().listTargets()
    assert targets == [
        EngineTarget("web-1", web1.id, "172.17.0.2"),
        EngineTarget("web-6", docker.containers["web-6"].id, "172.17.0.7"),
    ]
    [request] = docker.requests
    assert (request.method, request.path) == ("GET", "/containers/json")
    assert json.loads(request.query["filters"][0]) == {
        "label": ["diegossh.bastion=true", "team=blue"],
        "status": ["running"],
    }


@pytest_twisted.ensureDeferred
async def test_filters_again_when_the_api_ignores_filters(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.ignoreFilters = True
    docker.add("web-1", "172.17.0.2", LABELS)
    docker.add("web-2", "172.17.0.3", {"team": "blue"})
    docker.add("web-3", "172.17.0.4", LABELS, state="paused")
    assert [t.name for t in await engine().listTargets()] == ["web-1"]


@pytest_twisted.ensureDeferred
async def test_no_labels_lists_every_running_container(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.add("a", "172.17.0.2", {})
    docker.add("b", "172.17.0.3", {"x": "y"})
    assert [t.name for t in await engine(labels={}).listTargets()] == ["a", "b"]


@pytest_twisted.ensureDeferred
async def test_address_by_network(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.add("multi", "", LABELS, networks={"zeta": "10.9.0.2", "alpha": "", "beta": "10.1.0.2"})
    [first] = await engine().listTargets()
    assert first.address == "10.1.0.2"
    [chosen] = await engine(network="zeta").listTargets()
    assert chosen.address == "10.9.0.2"
    assert await engine(network="alpha").listTargets() == []
    assert await engine(network="elsewhere").listTargets() == []


@pytest_twisted.ensureDeferred
async def test_read_from_home(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.add(
        "web-1",
        "172.17.0.2",
        LABELS,
        files={"~/.ssh/id_ed25519.pub": KEY, "/root/.ssh/id_ed25519.pub": b"root's"},
        home="/home/app",
    )
    e = engine()
    [target] = await e.listTargets()
    assert await e.readFile(target, "~/.ssh/id_ed25519.pub") == KEY
    assert docker.execCommands == [
        ["sh", "-c", 'exec cat -- "$HOME/$1"', "sh", ".ssh/id_ed25519.pub"]
    ]
    [create] = [r for r in docker.requests if r.path.endswith("/exec")]
    assert create.path == f"/containers/{target.id}/exec"
    assert json.loads(create.body) == {
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "Cmd": docker.execCommands[0],
    }


@pytest_twisted.ensureDeferred
async def test_missing_file(docker: FakeDockerEngine, engine: Callable[..., DockerEngine]) -> None:
    docker.add("web-1", "172.17.0.2", LABELS)
    e = engine()
    [target] = await e.listTargets()
    error = await failure(e.readFile(target, "~/.ssh/id_ed25519.pub"))
    assert isinstance(error, CommandFailed)
    assert error.exitCode == 1
    assert "No such file or directory" in str(error)
    assert "/root/.ssh/id_ed25519.pub" in error.stderr


@pytest_twisted.ensureDeferred
async def test_exit_code_reported_late(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.runningInspections = 2
    docker.add("web-1", "172.17.0.2", LABELS, files={"/k": b"key"})
    e = engine()
    [target] = await e.listTargets()
    assert await e.readFile(target, "/k") == b"key"
    [execId] = docker.execs
    assert docker.count(f"/exec/{execId}/json") == 3


@pytest_twisted.ensureDeferred
async def test_vanished_container(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.add("web-1", "172.17.0.2", LABELS, files={"/k": b"key"})
    e = engine()
    [target] = await e.listTargets()
    docker.remove("web-1")
    error = await failure(e.readFile(target, "/k"))
    assert "web-1 is gone" in str(error)
    assert docker.execs == {}


@pytest_twisted.ensureDeferred
async def test_stopped_container(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.add("web-1", "172.17.0.2", LABELS, files={"/k": b"key"})
    e = engine()
    [target] = await e.listTargets()
    docker.containers["web-1"].state = "exited"
    assert "not running" in str(await failure(e.readFile(target, "/k")))


@pytest_twisted.ensureDeferred
async def test_engine_down_then_back(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.add("web-1", "172.17.0.2", LABELS, files={"/k": b"key"})
    e = engine(timeout=60.0)
    [target] = await e.listTargets()
    await docker.stop()
    error = await failure(e.listTargets())
    assert "cannot reach the Docker engine at " + docker.socketPath in str(error)
    assert "cannot reach" in str(await failure(e.readFile(target, "/k")))
    await docker.start()
    assert await e.listTargets() == [target]
    assert await e.readFile(target, "/k") == b"key"


@pytest_twisted.ensureDeferred
async def test_no_socket_at_all(socketDir: Path) -> None:
    e = DockerEngine(_reactor(), str(socketDir / "nothing.sock"), LABELS, 60.0)
    assert "cannot reach" in str(await failure(e.listTargets()))


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_engine_that_never_answers(
    docker: FakeDockerEngine, engine: Callable[..., DockerEngine]
) -> None:
    docker.add("web-1", "172.17.0.2", LABELS, files={"/k": b"key"})
    e = engine(timeout=0.5)
    [target] = await e.listTargets()
    docker.hang = True
    error = await failure(e.listTargets())
    assert str(error) == f"the Docker engine at {docker.socketPath} did not answer within 0.5 s"
    assert "did not answer" in str(await failure(e.readFile(target, "/k")))
    closed = Deferred.fromCoroutine(docker.connectionsClosed())
    await closed.addTimeout(10, _reactor())


@pytest_twisted.ensureDeferred
async def test_unknown_container_id(docker: FakeDockerEngine) -> None:
    e = DockerEngine(_reactor(), docker.socketPath, {}, 5.0)
    docker.add("web-1", "172.17.0.2", {})
    [target] = await e.listTargets()
    bogus = EngineTarget("web-1", "no-such-id", target.address)
    assert "web-1 is gone" in str(await failure(e.readFile(bogus, "/k")))


# -- the multiplexed stream, as bytes -------------------------------------------


def test_frames_split_anywhere() -> None:
    stream = frame(STDOUT, b"hello ") + frame(STDERR, b"oops") + frame(STDOUT, b"") + frame(1, b"!")
    for cut in range(len(stream) + 1):
        parser = MultiplexedStream()
        frames = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert frames == [(1, b"hello "), (2, b"oops"), (1, b""), (1, b"!")]
        assert parser.pending == 0


def test_frames_byte_by_byte() -> None:
    parser = MultiplexedStream()
    frames = []
    for byte in frame(STDOUT, b"x" * 300):
        frames += parser.feed(bytes([byte]))
    assert frames == [(STDOUT, b"x" * 300)]


def test_partial_frame_pending() -> None:
    parser = MultiplexedStream()
    assert parser.feed(frame(STDOUT, b"abc")[:-1]) == []
    assert parser.pending == 10


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x00\x01\x00\x00\x00\x00\x01x",  # padding not zero
        b"\x07\x00\x00\x00\x00\x00\x00\x01x",  # no such stream
        b"\x01\x00\x00\x00\x7f\x00\x00\x00",  # 2 GiB frame
        b"ssh-ed25519 AAAA",  # a raw (TTY) stream
    ],
)
def test_not_a_multiplexed_stream(data: bytes) -> None:
    with pytest.raises(EngineError):
        MultiplexedStream().feed(data)


class _Response:
    """Just enough of an IResponse to hand its body to a protocol."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.transport = StringTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


def _read(chunks: list[bytes], end: Failure) -> tuple[list[Any], ExecOutput, _Response]:
    output = ExecOutput("cat /k")
    response = _Response()
    box: list[Any] = []
    readExecStream(response, output).addBoth(box.append)
    for chunk in chunks:
        response.protocol.dataReceived(chunk)
    response.protocol.connectionLost(end)
    return box, output, response


def test_stream_read_to_close() -> None:
    data = frame(STDOUT, b"ab") + frame(STDERR, b"warn") + frame(STDOUT, b"cd")
    box, output, _ = _read([data[:5], data[5:]], Failure(PotentialDataLoss()))
    assert box == [None]
    assert output.output == b"abcd"
    with pytest.raises(CommandFailed) as info:
        output.result(2)
    assert info.value.stderr == "warn"


def test_stream_cut_mid_frame() -> None:
    box, _, _ = _read([frame(STDOUT, b"abcdef")[:-2]], Failure(ResponseDone()))
    [result] = box
    assert "cut short" in str(result.value)


def test_stream_daemon_error() -> None:
    box, _, response = _read(
        [frame(SYSTEMERR, b"exec failed: no such file")], Failure(ResponseDone())
    )
    [result] = box
    assert isinstance(result.value, EngineError)
    assert "exec failed: no such file" in str(result.value)
    assert response.transport.disconnecting


def test_stream_too_large() -> None:
    chunks = [frame(STDOUT, b"x" * 32768)] * 3
    box, _, response = _read(chunks, Failure(ResponseDone()))
    [result] = box
    assert f"more than {MAX_FILE_SIZE} bytes" in str(result.value)
    assert response.transport.disconnecting


def test_cat_command() -> None:
    assert catCommand("~/.ssh/k") == ["sh", "-c", 'exec cat -- "$HOME/$1"', "sh", ".ssh/k"]
    assert catCommand("/etc/k") == ["cat", "--", "/etc/k"]
    for bad in ("k", "", "~", "~/", "~root/k", "./k", "/a\x00"):
        with pytest.raises(ValueError):
            catCommand(bad)
