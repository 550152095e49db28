# -*- test-case-name: tests.test_sftp_server -*-
"""
The daemon's own SFTP server (protocol version 3 with OpenSSH's extensions).

Conch's stock Unix backend switches euid per call and cannot setstat; this
one runs as the container's unprivileged user, does its file I/O in a thread
pool, and ends with an exit status so that OpenSSH's C{scp} reports success.
"""

from __future__ import annotations

import os
import pwd

from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.protocol import Protocol
from twisted.python.threadpool import ThreadPool

from diegossh.sshd.sftp._filesystem import UserFileSystem
from diegossh.sshd.sftp._lanes import Lanes, ThreadRunner
from diegossh.sshd.sftp._server import SFTPServer

__all__ = ["SFTPServer", "buildSFTP", "homeFromEnviron"]


def homeFromEnviron(environ: dict[str, str]) -> bytes:
    """The session's HOME, else the account's home directory, else C{/}."""
    home = environ.get("HOME")
    if not home:
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            home = "/"
    return os.fsencode(home)


def buildSFTP(
    environ: dict[str, str],
    *,
    reactor: IReactorFromThreads | None = None,
    threadpool: ThreadPool | None = None,
) -> Protocol:
    """
    Build the protocol serving the C{sftp} subsystem for a session whose
    environment is C{environ}. The global reactor and its thread pool are
    used only when none are given.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor  # type: ignore[assignment]
    if threadpool is None:
        threadpool = reactor.getThreadPool()  # type: ignore[union-attr]
    assert reactor is not None and threadpool is not None
    fs = UserFileSystem(homeFromEnviron(environ))
    return SFTPServer(fs, Lanes(ThreadRunner(reactor, threadpool)))
