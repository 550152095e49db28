# -*- test-case-name: tests.test_twisted_contract -*-
"""
Every private name of Twisted proper (not Conch) that diegossh relies on: the
reactor's process and listening-port internals.

A leaf module beside L{diegossh.ssh._conch} rather than inside it: these serve
the daemon's child processes (L{diegossh.sshd.process}) and the proxy's shared
listening socket (L{diegossh.proxy.workers}), not the SSH protocol layer, and
a leaf module is one every package may import. As there, each private name is
reached here only, under a name of ours, and C{tests/test_twisted_contract.py}
checks each against the installed Twisted; C{docs/twisted.md} lists them.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

from twisted.internet import tcp

_Port = TypeVar("_Port", bound=tcp.Port)


class ProcessInternals:
    """
    Twisted's process classes start a child in private steps, with no public
    hook between C{fork} and C{exec}: C{_fork} (fork and, in the child, set up
    and exec), C{_setupChild} (descriptors, session), C{_execChild}, and
    C{_trySpawnInsteadOfFork} (C{posix_spawn} where it can, skipping the two
    before). This mixin, placed before Twisted's class, forwards each to a
    public name; a subclass overrides that and calls Twisted's step with
    C{super()}.
    """

    def _fork(self, *args: Any, **kwargs: Any) -> None:
        self.forkChild(*args, **kwargs)

    def forkChild(self, *args: Any, **kwargs: Any) -> None:
        """
        Fork, and in the child set up and exec. Twisted passes C{path, uid,
        gid, executable, args, environment} and, as keywords, what the
        process class's C{setUpChild} takes (a pty's C{masterfd} and
        C{slavefd}; pipes' C{fdmap}).
        """
        super()._fork(*args, **kwargs)  # type: ignore[misc]

    def _setupChild(self, *args: Any, **kwargs: Any) -> None:
        self.setUpChild(*args, **kwargs)

    def setUpChild(self, *args: Any, **kwargs: Any) -> None:
        """
        In the child, after C{fork}: arrange its descriptors (and, for a pty,
        its session and controlling terminal).
        """
        super()._setupChild(*args, **kwargs)  # type: ignore[misc]

    def _execChild(self, *args: Any, **kwargs: Any) -> NoReturn:
        self.execChild(*args, **kwargs)

    def execChild(self, *args: Any, **kwargs: Any) -> NoReturn:
        """
        In the child, last: change directory and user, then exec. Twisted
        passes C{path, uid, gid, executable, args, environment}.
        """
        super()._execChild(*args, **kwargs)  # type: ignore[misc]
        raise AssertionError("exec returned")  # pragma: no cover

    def _trySpawnInsteadOfFork(self, *args: Any, **kwargs: Any) -> bool:
        return self.trySpawn(*args, **kwargs)

    def trySpawn(self, *args: Any, **kwargs: Any) -> bool:
        """
        Start the child with C{posix_spawn} if Twisted can; C{False} means it
        did not, and the fork path runs instead.
        """
        spawned: bool = super()._trySpawnInsteadOfFork(*args, **kwargs)  # type: ignore[misc]
        return spawned


def adoptListeningPort(
    portClass: type[_Port], reactor: Any, fd: int, family: int, factory: Any
) -> _Port:
    """
    A C{portClass} (L{tcp.Port} or a subclass) on the already listening socket
    C{fd}, not yet started: what C{reactor.adoptStreamPort} does, but with our
    port class. Twisted takes its own duplicate of C{fd}.
    """
    port: _Port = portClass._fromListeningDescriptor(reactor, fd, family, factory)
    return port
