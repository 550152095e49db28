# -*- test-case-name: tests.test_onefile -*-
"""
What the one-file artifact (C{dist/diego-sshd}, docs/dist.md) must undo.

Its two self-unpacking layers, PyInstaller's and staticx's, hand the
daemon an environment with their own variables added: C{LD_LIBRARY_PATH}
pointing into the unpacked bundle, C{_PYI_*} and C{STATICX_*}. Sessions
started with C{-inheritDaemonEnv} must not get them: the container's own
programs would load the bundle's libraries instead of theirs. The
variables are needed until the daemon has re-executed itself to take the
keys off its command line (the re-executed bootloader finds its unpacked
bundle through them), so they are removed after that.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping

_PREFIXES = ("_PYI_", "STATICX_")
_LIBRARY_PATH = "LD_LIBRARY_PATH"
# PyInstaller's bootloader keeps the caller's value here when there was one.
_SAVED_LIBRARY_PATH = "LD_LIBRARY_PATH_ORIG"


def restoreCallerEnvironment(environ: MutableMapping[str, str], frozen: bool | None = None) -> None:
    """
    Give C{environ} back the variables the caller started the artifact with;
    nothing when running from an installed package (C{frozen} defaults to
    C{sys.frozen}, which PyInstaller sets).
    """
    if frozen is None:
        frozen = bool(getattr(sys, "frozen", False))
    if not frozen:
        return
    for name in [name for name in environ if name.startswith(_PREFIXES)]:
        del environ[name]
    saved = environ.pop(_SAVED_LIBRARY_PATH, None)
    if saved is not None:
        environ[_LIBRARY_PATH] = saved
    else:
        environ.pop(_LIBRARY_PATH, None)
