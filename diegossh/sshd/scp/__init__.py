# -*- test-case-name: tests.test_scp_options,tests.test_scp_interop -*-
"""
The server side of the SCP/RCP protocol (what C{scp -O} talks to), in Python.

A container may have no C{scp} binary, so the daemon answers C{scp -t} (upload)
and C{scp -f} (download) exec requests itself, with the behaviour and messages
of OpenSSH's C{scp}. See C{docs/scp.md}.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol

from diegossh.sshd.scp._options import SCPOptions, UsageError, parseArguments
from diegossh.sshd.scp._paths import RemotePaths, readUmask
from diegossh.sshd.scp._program import RefusedProgram
from diegossh.sshd.scp._sender import Cooperate
from diegossh.sshd.scp._sink import SinkProtocol
from diegossh.sshd.scp._source import SourceProtocol

__all__ = ["SCPOptions", "SinkProtocol", "SourceProtocol", "buildSCP"]


def buildSCP(
    argv: list[str], environ: dict[str, str], cooperate: Cooperate | None = None
) -> Protocol | None:
    """
    Return the protocol serving C{argv} (C{["scp", "-t", "--", "dir"]}), or
    L{None} when it is not a server invocation and should be exec'd as is.

    Paths are relative to C{environ["HOME"]}. C{cooperate} schedules the file
    sender; it defaults to Twisted's global cooperator (on the running reactor).
    """
    try:
        options = parseArguments(argv)
    except UsageError as e:
        return RefusedProgram(str(e))
    if options is None:
        return None
    paths = RemotePaths.fromEnviron(environ)
    if not options.sending:
        return SinkProtocol(options, paths, umask=readUmask())
    if cooperate is None:
        from twisted.internet.task import cooperate as globalCooperate

        cooperate = globalCooperate
    return SourceProtocol(options, paths, cooperate)
