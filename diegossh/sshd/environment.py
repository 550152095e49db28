# -*- test-case-name: tests.test_sshd_session,tests.test_sshd_interop -*-
"""
The environment a session's process starts with.

As upstream diego-sshd: C{PATH=/bin:/usr/bin} and C{LANG=en_US.UTF8} by default
(a client's C{env} may change them), C{HOME} and C{USER} from the daemon's
user (a client may not), and with C{--inheritDaemonEnv} the daemon's own
environment underneath, less C{PATH} and the key variables.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping

KEY_VARIABLES = ("SSHD_HOSTKEY", "SSHD_AUTHKEY")
DEFAULTS = {"PATH": "/bin:/usr/bin", "LANG": "en_US.UTF8"}
PROTECTED = frozenset({"HOME", "USER"})
MAX_VARIABLES = 256
MAX_VARIABLE_BYTES = 64 * 1024


def currentUser() -> tuple[str, str]:
    """
    The daemon's user name and home directory (the container's app user).
    """
    try:
        entry = pwd.getpwuid(os.getuid())
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:
        name, home = str(os.getuid()), "/"
    return os.environ.get("USER", name), os.environ.get("HOME", home)


class SessionEnvironment:
    """
    One session's variables: those the client sent, on top of the base.

    A plain class, not a dataclass: the C{diego-sshd} script's first process
    imports this module (for L{KEY_VARIABLES}), and C{dataclasses} (with
    C{inspect}) would cost it about 15 ms of start-up (issue 15).
    """

    def __init__(self, base: dict[str, str], requested: dict[str, str] | None = None) -> None:
        self.base = base
        self.requested: dict[str, str] = {} if requested is None else requested

    def request(self, name: str, value: str) -> bool:
        """
        Apply a client's C{env} request; refuse what must not change.
        """
        if not name or "=" in name or "\0" in name or "\0" in value:
            return False
        if name in PROTECTED or name in KEY_VARIABLES:
            return False
        if len(self.requested) >= MAX_VARIABLES and name not in self.requested:
            return False
        if len(name) + len(value) > MAX_VARIABLE_BYTES:
            return False
        self.requested[name] = value
        return True

    def build(self, term: str | None = None) -> dict[str, str]:
        env = dict(self.base)
        env.update(self.requested)
        if term:
            env["TERM"] = term
        return env


def baseEnvironment(
    inheritDaemonEnv: bool, daemonEnv: Mapping[str, str] | None = None
) -> dict[str, str]:
    """
    The variables every session starts from.
    """
    env: dict[str, str] = {}
    if inheritDaemonEnv:
        source = os.environ if daemonEnv is None else daemonEnv
        env.update((k, v) for k, v in source.items() if k != "PATH" and k not in KEY_VARIABLES)
    env.update(DEFAULTS)
    user, home = currentUser()
    env["USER"] = user
    env["HOME"] = home
    return env
