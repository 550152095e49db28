# -*- test-case-name: tests.test_scp_interop,tests.test_sftp_interop -*-
"""
Run one of the daemon's Python-served programs (scp, sftp) on this process's
stdin and stdout, the way a session channel would.

This lets OpenSSH's own clients talk to those programs with no SSH in between:
C{sftp -D "python -m diegossh.sshd.localrun sftp"}, or C{scp -S} pointing at a
script that execs C{python -m diegossh.sshd.localrun scp -t DIR}. The tests use
it to check the protocols against the real binaries in isolation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from zope.interface import implementer

from diegossh.interfaces import ISessionTransport


@implementer(ISessionTransport)
class _StdioSession:
    """
    Wrap L{twisted.internet.stdio.StandardIO} and add C{exit}.
    """

    def __init__(self, stdio: object, reactor: object) -> None:
        self._stdio = stdio
        self._reactor = reactor
        self.status: int | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._stdio, name)

    def exit(self, status: int) -> None:
        self.status = status
        self._stdio.loseConnection()  # type: ignore[attr-defined]


def main(argv: list[str], buildProgram: Callable[[list[str], dict[str, str]], object]) -> int:
    """
    Serve C{argv} with the protocol C{buildProgram} returns, until it exits.
    """
    from twisted.internet import reactor, stdio
    from twisted.internet.protocol import Protocol

    program = buildProgram(argv, dict(os.environ))
    if program is None:
        sys.stderr.write(f"localrun: nothing serves {argv!r}\n")
        return 127

    holder: dict[str, _StdioSession] = {}

    class _Bridge(Protocol):
        """Hand the wrapped transport to the program and relay to it."""

        def makeConnection(self, transport: object) -> None:
            session = _StdioSession(transport, reactor)
            holder["s"] = session
            program.makeConnection(session)  # type: ignore[attr-defined]

        def dataReceived(self, data: bytes) -> None:
            program.dataReceived(data)  # type: ignore[attr-defined]

        def readConnectionLost(self) -> None:
            handler = getattr(program, "readConnectionLost", None)
            if handler is not None:
                handler()

        def writeConnectionLost(self) -> None:
            pass

        def connectionLost(self, reason: object = None) -> None:
            program.connectionLost(reason)  # type: ignore[attr-defined]
            reactor.stop()

    from twisted.internet.interfaces import IHalfCloseableProtocol
    from zope.interface import classImplements

    classImplements(_Bridge, IHalfCloseableProtocol)
    stdio.StandardIO(_Bridge(), reactor=reactor)
    reactor.run()
    session = holder.get("s")
    return session.status if session is not None and session.status is not None else 0


if __name__ == "__main__":  # pragma: no cover - exercised by the interop tests
    from diegossh.sshd.programs import buildProgram

    sys.exit(main(sys.argv[1:], buildProgram))
