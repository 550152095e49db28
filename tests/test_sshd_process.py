"""
The daemon's child processes: wide pipes read widely, one-line start failures,
and the hang-up of a whole process group with every descriptor closed.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from diegossh.sshd.process import (
    CANNOT_RUN,
    NOT_FOUND,
    PIPE_SIZE,
    SessionLeader,
    spawn,
    widenPipe,
)


def test_widen_pipe() -> None:
    r, w = os.pipe()
    try:
        widenPipe(w)
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == PIPE_SIZE
    finally:
        os.close(r)
        os.close(w)


def test_widen_pipe_refused_is_harmless() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    widenPipe(w)  # a closed descriptor: nothing raised, nothing to do


# -- starting and ending real children


class Collector(ProcessProtocol):
    def __init__(self) -> None:
        self.out: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.out[childFD] += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def within(d: defer.Deferred[Any], seconds: float = 20) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, reactor())


def openFDs() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def marked(tag: str) -> list[int]:
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


async def gone(tag: str, seconds: float = 20) -> list[int]:
    """Wait (bounded) until no process carries the marker; return the survivors."""
    for _ in range(int(seconds / 0.05)):
        if not marked(tag):
            return []
        await deferLater(reactor(), 0.05)
    return marked(tag)


@pytest.mark.interop
@pytest.mark.parametrize("usePTY", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_missing_program_is_one_line_and_status_127(usePTY: bool) -> None:
    proto = Collector()
    spawn(reactor(), proto, "/bin/nosuch", ["/bin/nosuch"], {}, "/", usePTY)
    reason = await within(proto.ended)
    assert reason.exitCode == NOT_FOUND
    said = bytes(proto.out[1 if usePTY else 2]).replace(b"\r\n", b"\n")
    assert said == b"diego-sshd: cannot run /bin/nosuch: No such file or directory\n"


@pytest.mark.interop
@pytest_twisted.ensureDeferred
async def test_a_program_that_is_not_executable_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho no\n")
    proto = Collector()
    spawn(reactor(), proto, str(script), [str(script)], {}, "/", False)
    reason = await within(proto.ended)
    assert reason.exitCode == CANNOT_RUN
    assert bytes(proto.out[2]) == f"diego-sshd: cannot run {script}: Permission denied\n".encode()


@pytest.mark.interop
@pytest_twisted.ensureDeferred
async def test_a_missing_home_directory_is_reported_and_the_program_runs_in_root() -> None:
    proto = Collector()
    spawn(reactor(), proto, "/bin/sh", ["sh", "-c", "pwd"], {}, "/nonexistent/home", False)
    reason = await within(proto.ended)
    assert reason.exitCode in (None, 0)
    assert bytes(proto.out[1]) == b"/\n"
    assert bytes(proto.out[2]) == (
        b"diego-sshd: could not chdir to home directory /nonexistent/home: "
        b"No such file or directory\n"
    )


@pytest.mark.interop
@pytest.mark.parametrize("usePTY", [False, True])
@pytest_twisted.ensureDeferred
async def test_hang_up_reaches_the_group_and_closes_paused_descriptors(usePTY: bool) -> None:
    # A program whose output is backed up (we stopped reading it) and whose
    # child holds the same output: hanging up closes every descriptor at
    # once and ends the whole group; the leader is reaped.
    tag = f"hangup-{os.getpid()}-{usePTY}"
    before = openFDs()
    proto = Collector()
    child = spawn(
        reactor(),
        proto,
        "/bin/sh",
        ["sh", "-c", "sleep 1000 & yes"],
        {"MARK": tag, "PATH": "/bin:/usr/bin"},
        "/",
        usePTY,
    )
    assert openFDs() - before
    while len(marked(tag)) < 3:
        await deferLater(reactor(), 0.05)
    child.pauseProducing()
    assert child.hangUp()
    child.closeDescriptors()
    assert openFDs() <= before
    await within(proto.ended)
    assert await gone(tag) == []
    assert child.pid is None  # reaped


@pytest.mark.interop
@pytest_twisted.ensureDeferred
async def test_kill_group_ends_what_ignores_the_hang_up() -> None:
    tag = f"nohup-{os.getpid()}"
    proto = Collector()
    child = spawn(
        reactor(),
        proto,
        "/bin/sh",
        ["sh", "-c", "trap '' HUP; sleep 1000 & echo started; wait"],
        {"MARK": tag, "PATH": "/bin:/usr/bin"},
        "/",
        False,
    )
    while b"started" not in proto.out[1]:
        await deferLater(reactor(), 0.05)
    assert child.hangUp()
    child.closeDescriptors()
    await deferLater(reactor(), 0.3)
    assert len(marked(tag)) == 2  # ignored
    assert child.killGroup()
    await within(proto.ended)
    assert await gone(tag) == []


@pytest.mark.interop
def test_signal_group_reaches_a_child_that_has_no_group_yet() -> None:
    # Between fork and setsid the child is still in our process group: no
    # group bears its number, so the leader itself is signalled.
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        leader = SessionLeader()
        leader.pid = leader.pgid = proc.pid
        assert os.getpgid(proc.pid) != proc.pid
        assert leader.signalGroup(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    leader.pid = None  # reaped: then the number is not ours to signal
    assert not leader.signalGroup(signal.SIGKILL)


@pytest.mark.interop
@pytest_twisted.ensureDeferred
async def test_terminal_fd_only_while_the_pty_is_open() -> None:
    proto = Collector()
    child = spawn(reactor(), proto, "/bin/sh", ["sh", "-c", "sleep 1000"], {}, "/", True)
    fd = child.terminalFD()
    assert fd is not None and os.isatty(fd)
    assert spawn(reactor(), Collector(), "/bin/true", ["true"], {}, "/", False).terminalFD() is None
    child.hangUp()
    child.closeDescriptors()
    assert child.terminalFD() is None
    await within(proto.ended)
