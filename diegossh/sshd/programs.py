"""
Which commands and subsystems the daemon serves in Python instead of exec'ing.
"""

from __future__ import annotations


def buildProgram(argv: list[str], environ: dict[str, str]) -> object | None:
    """
    Return a protocol serving C{argv} (C{["sftp"]} for the subsystem, C{["scp",
    ...]} for an scp exec request), or L{None} to exec it as a shell command.
    """
    return None
