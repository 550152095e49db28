# -*- test-case-name: tests.test_bastion_docker,tests.test_bastion_kubernetes -*-
"""
What the Docker and Kubernetes clients share: the command that reads a file
inside a target, the limits on what it may print, one deadline per call on
the clock passed in, and error wording that never carries a credential.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from diegossh.bastion.targets import EngineError

__all__ = [
    "MAX_FILE_SIZE",
    "CommandFailed",
    "EngineClient",
    "ExecOutput",
    "catCommand",
    "printable",
    "reasonText",
    "withDeadline",
]

MAX_FILE_SIZE = 64 * 1024
"""The most C{readFile} returns: public keys and host keys are far smaller."""

MAX_STDERR = 64 * 1024
"""What a command may write to stderr before we stop listening."""

_STDERR_KEPT = 512
_T = TypeVar("_T")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class CommandFailed(EngineError):
    """
    The command ran in the target and exited non-zero (a missing file, for
    one): the engine itself is fine, which a key cache may want to tell from
    an engine that is down.

    @ivar exitCode: the command's exit status.
    @ivar stderr: the start of what it wrote to stderr, made printable.
    """

    def __init__(self, message: str, exitCode: int, stderr: str) -> None:
        super().__init__(message)
        self.exitCode = exitCode
        self.stderr = stderr


def catCommand(path: str) -> list[str]:
    """
    The argv that prints C{path} inside a target.

    C{~/rest} is the target user's home: C{rest} goes to C{sh} as C{$1},
    never into the script's text, so no path can become shell code. Raises
    L{ValueError} for anything but an absolute path or C{~/something}, so a
    caller can check its configuration at start-up.
    """
    if "\x00" in path:
        raise ValueError("a path cannot contain NUL")
    if path.startswith("~/") and len(path) > 2:
        return ["sh", "-c", 'exec cat -- "$HOME/$1"', "sh", path[2:]]
    if path.startswith("/"):
        return ["cat", "--", path]
    raise ValueError(f"{path!r}: a path must be absolute or start with ~/")


def printable(data: bytes | str, limit: int = 200) -> str:
    """
    Text from a server or a container, fit for an error message and a log
    line: control characters folded, at most C{limit} characters.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = _UNPRINTABLE.sub(" ", text).strip()
    return text if len(text) <= limit else text[:limit] + "..."


def reasonText(error: BaseException | Failure) -> str:
    """
    Why a connection or request failed, in a few words: Twisted wraps the
    real reasons (refused, TLS verification) in C{ResponseNeverReceived} and
    kin, whose own text says nothing.
    """
    value = error.value if isinstance(error, Failure) else error
    reasons = getattr(value, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(reasonText(r) for r in reasons if isinstance(r, Failure | BaseException))
    text = printable(str(value))
    return text or type(value).__name__


class ExecOutput:
    """
    What one exec printed: stdout up to C{limit} bytes, and the start of
    stderr for the error message. Going past a limit raises L{EngineError},
    so the caller drops the connection rather than reading on.
    """

    def __init__(self, what: str, limit: int = MAX_FILE_SIZE) -> None:
        self._what = what
        self._limit = limit
        self._stdout: list[bytes] = []
        self._stdoutSize = 0
        self._stderr = b""
        self._stderrSize = 0

    def stdout(self, data: bytes) -> None:
        self._stdoutSize += len(data)
        if self._stdoutSize > self._limit:
            raise EngineError(f"{self._what} printed more than {self._limit} bytes")
        self._stdout.append(data)

    def stderr(self, data: bytes) -> None:
        self._stderrSize += len(data)
        if self._stderrSize > MAX_STDERR:
            raise EngineError(f"{self._what} printed more than {MAX_STDERR} bytes of errors")
        if len(self._stderr) < _STDERR_KEPT:
            self._stderr += data[: _STDERR_KEPT - len(self._stderr)]

    @property
    def output(self) -> bytes:
        return b"".join(self._stdout)

    def result(self, exitCode: int) -> bytes:
        """Stdout when the command succeeded, else L{CommandFailed}."""
        if exitCode == 0:
            return self.output
        errors = printable(self._stderr)
        detail = f": {errors}" if errors else ""
        raise CommandFailed(f"{self._what} exited with status {exitCode}{detail}", exitCode, errors)


def withDeadline(
    clock: IReactorTime, timeout: float, what: str, call: Coroutine[Any, Any, _T]
) -> Deferred[_T]:
    """
    Run C{call} as a Deferred that fails with L{EngineError} once C{timeout}
    seconds pass on C{clock}; the cancel reaches whatever C{call} is waiting
    on, so its connection is dropped, not left hanging.
    """

    def timedOut(result: object, timeout: float) -> None:
        # Whatever the cancel made of the call, the deadline is the reason.
        raise EngineError(f"{what} did not answer within {timeout:g} s")

    d = Deferred.fromCoroutine(call)
    d.addTimeout(timeout, clock, onTimeoutCancel=timedOut)
    return d


def jsonObject(value: object) -> Mapping[str, Any]:
    """C{value} if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


class EngineClient:
    """
    The part of L{diegossh.interfaces.IContainerEngine} both engines write
    the same way: each call under one deadline, the path checked first.
    Subclasses set C{_reactor} and C{_timeout} and write C{_where},
    C{_list} and C{_read}.
    """

    _reactor: Any
    _timeout: float

    def listTargets(self) -> Deferred[list[Any]]:
        """See L{diegossh.interfaces.IContainerEngine.listTargets}."""
        return withDeadline(self._reactor, self._timeout, self._where(), self._list())

    def readFile(self, target: object, path: str) -> Deferred[bytes]:
        """
        See L{diegossh.interfaces.IContainerEngine.readFile}; C{target} is an
        L{EngineTarget} from L{listTargets}. A C{path} that is neither
        absolute nor C{~/...} fails with L{ValueError} (see L{catCommand}).
        """
        from diegossh.bastion.targets import EngineTarget

        assert isinstance(target, EngineTarget)
        try:
            command = catCommand(path)
        except ValueError:
            return fail()
        return withDeadline(
            self._reactor, self._timeout, self._where(), self._read(target, path, command)
        )

    def _where(self) -> str:
        raise NotImplementedError

    async def _list(self) -> list[Any]:
        raise NotImplementedError

    async def _read(self, target: Any, path: str, command: list[str]) -> bytes:
        raise NotImplementedError
