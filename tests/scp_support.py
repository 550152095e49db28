"""
Helpers for the scp tests: a fake session transport for unit tests, and a fake
C{ssh} that lets the real OpenSSH C{scp -O} talk to our server with no SSH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from twisted.internet.task import CooperativeTask, Cooperator
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from diegossh.interfaces import ISessionTransport

REPO = Path(__file__).resolve().parent.parent


@implementer(ISessionTransport)
class FakeSession(StringTransport):
    """A StringTransport that records the exit status, as a session channel would."""

    def __init__(self) -> None:
        super().__init__()
        self.status: int | None = None

    def exit(self, status: int) -> None:
        assert self.status is None, "exit called twice"
        self.status = status
        self.loseConnection()


class _Scheduled:
    """The one IDelayedCall method a Cooperator uses."""

    def __init__(self, pending: list[_Scheduled], function: Callable[[], None]) -> None:
        self.function = function
        self._pending = pending

    def cancel(self) -> None:
        self._pending.remove(self)


class ManualCooperator:
    """
    A Cooperator run by hand, one work unit per task per C{step()}; C{pump()}
    steps until nothing is scheduled.
    """

    def __init__(self) -> None:
        self._pending: list[_Scheduled] = []
        self._cooperator = Cooperator(
            scheduler=self._schedule,  # type: ignore[arg-type]
            terminationPredicateFactory=lambda: lambda: True,
        )

    def _schedule(self, function: Callable[[], None]) -> _Scheduled:
        call = _Scheduled(self._pending, function)
        self._pending.append(call)
        return call

    def cooperate(self, iterator: Iterator[None]) -> CooperativeTask:
        return self._cooperator.cooperate(iterator)

    def step(self) -> None:
        due, self._pending[:] = list(self._pending), []
        for call in due:
            call.function()

    def pump(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self._pending:
                return
            self.step()
        raise AssertionError("cooperator never went idle")


FAKE_SSH = """#!{python}
# A stand-in for ssh: skip ssh's options and the host, run the remote command
# (one string or several words, as sshd would receive it) with localrun.
import os, shlex, sys

WITH_ARGUMENT = set("BbcDEeFIiJLlmOoPpQRSWw")
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(repr(args) + "\\n")
i = 0
while i < len(args):
    word = args[i]
    if word == "--":
        i += 1
        break
    if not word.startswith("-") or word == "-":
        break
    i += 1
    for position, letter in enumerate(word[1:], start=1):
        if letter in WITH_ARGUMENT:
            if position == len(word) - 1:
                i += 1
            break
words = shlex.split(" ".join(args[i + 1:]))
os.execv({python!r}, [{python!r}, "-m", "diegossh.sshd.localrun", *words])
"""


def writeFakeSSH(directory: Path) -> Path:
    """Write the fake ssh into C{directory}; it logs its argv to C{ssh-argv.log}."""
    script = directory / "fake-ssh"
    script.write_text(FAKE_SSH.format(python=sys.executable, log=str(directory / "ssh-argv.log")))
    script.chmod(0o755)
    return script


def runSCP(
    args: list[str], home: Path, cwd: Path, fakeSSH: Path
) -> subprocess.CompletedProcess[str]:
    """
    Run the real C{scp -O -S fakeSSH args...} with HOME set to C{home} for the
    remote side; the local side runs in C{cwd}, never HOME, so relative remote
    paths are shown to resolve against HOME.
    """
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run(
        ["scp", "-O", "-q", "-S", str(fakeSSH), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
