# -*- test-case-name: tests.test_scp_paths -*-
"""
Remote paths as a login shell in HOME would see them.

Real OpenSSH runs C{scp} through the user's shell, started in HOME, which
expands C{~} and glob patterns first. The daemon serves scp in its own
process (whose working directory is not HOME, and must never be changed), so
it does those expansions itself, against the HOME of the session's
environment.
"""

from __future__ import annotations

import glob
import os
import pwd


class RemotePaths:
    """
    Expand and resolve the paths an scp command names.

    Each path has two spellings: the I{display} one, as a shell would have
    passed it to scp (used in messages), and the I{real} one, absolute, used
    for every file system call.
    """

    def __init__(self, home: str) -> None:
        self.home = home

    @classmethod
    def fromEnviron(cls, environ: dict[str, str]) -> RemotePaths:
        """Use C{HOME}, or the password database's home when it is unset."""
        home = environ.get("HOME")
        if not home:
            try:
                home = pwd.getpwuid(os.getuid()).pw_dir
            except KeyError:
                home = "/"
        return cls(home)

    def expand(self, path: str) -> str:
        """Replace a leading C{~} or C{~/}; C{~user} is left alone."""
        if path == "~":
            return self.home
        if path.startswith("~/"):
            return os.path.join(self.home, path[2:])
        return path

    def resolve(self, path: str) -> str:
        """The absolute path for an already expanded C{path}, relative to HOME."""
        return os.path.join(self.home, path)

    def sources(self, pattern: str) -> list[tuple[str, str]]:
        """
        The C{(display, real)} paths a source argument names.

        Like C{sh}, a glob pattern that matches nothing stands for itself, so
        the error names the pattern; hidden files match only an explicit dot.
        """
        display = self.expand(pattern)
        if any(c in display for c in "*?["):
            matches = sorted(glob.glob(display, root_dir=self.home))
            if matches:
                return [(match, self.resolve(match)) for match in matches]
        return [(display, self.resolve(display))]


def readUmask() -> int:
    """
    The process's umask, without changing it if the kernel can tell it.

    Needed to mirror OpenSSH's sink, which strips the umask from received modes
    without C{-p}.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current
