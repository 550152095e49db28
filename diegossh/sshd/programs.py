# -*- test-case-name: tests.test_malformed_login,tests.test_sshd_lifecycle_interop -*-
"""
Which commands and subsystems the daemon serves in Python instead of exec'ing.

A container may have no C{scp} or C{sftp-server} binary, so the daemon serves
both itself.
"""

from __future__ import annotations


def buildProgram(argv: list[str], environ: dict[str, str]) -> object | None:
    """
    Return a protocol serving C{argv} (C{["sftp"]} for the subsystem, C{["scp",
    ...]} for an scp exec request), or L{None} to exec it as a shell command.
    """
    if argv == ["sftp"]:
        from diegossh.sshd.sftp import buildSFTP

        return buildSFTP(environ)
    if argv and argv[0] == "scp":
        from diegossh.sshd.scp import buildSCP

        return buildSCP(argv, environ)
    return None
