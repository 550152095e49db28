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
from twisted.python.failure import Failure

from diegossh.sshd.process import (
    CANNOT_RUN,
    NOT_FOUND,
    PIPE_SIZE,
    SessionLeader,
    spawn,
    widenPipe,
)
from tests.support.eventually import eventually


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


def gone(tag: str) -> defer.Deferred[bool]:
    """Fires once no process carries the marker."""
    return eventually(lambda: not marked(tag), f"every process marked {tag} to end")


def ignoresHangUp(pid: int) -> bool:
    """Whether SIGHUP is in the process's ignored set (/proc/PID/status, SigIgn)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


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
    await eventually(lambda: len(marked(tag)) >= 3, "sh, sleep and yes to start")
    child.pauseProducing()
    assert child.hangUp()
    child.closeDescriptors()
    assert openFDs() <= before
    await within(proto.ended)
    await gone(tag)
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
    await eventually(lambda: b"started" in proto.out[1], "the shell to start its child")
    assert child.hangUp()
    child.closeDescriptors()
    # An ignored signal is dropped when sent: nothing is left to arrive.
    survivors = marked(tag)
    assert len(survivors) == 2 and all(ignoresHangUp(pid) for pid in survivors)
    assert child.killGroup()
    await within(proto.ended)
    await gone(tag)


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
    other = Collector()
    assert spawn(reactor(), other, "/bin/true", ["true"], {}, "/", False).terminalFD() is None
    child.hangUp()
    child.closeDescriptors()
    assert child.terminalFD() is None
    await within(proto.ended)
    await within(other.ended)
