# -*- test-case-name: tests.test_sshd_heap -*-
"""
glibc's malloc settings for the daemon's process: given through the
environment of the script's re-exec, taken out of it again at once.

Why: without pyOpenSSL loaded (L{diegossh.sshd.script.REFUSED_MODULES}) the
daemon spent 25-45% more CPU per byte of a download, in page faults: glibc
gives the top of its heap back to the kernel whenever the free space there
passes C{M_TRIM_THRESHOLD} (128 KiB by default) and faults it in again as
the next packet buffers (256 KiB reads, 1 MiB pipes) are allocated; what
pyOpenSSL allocated happened to keep the top of the heap busy. A 1 MiB pad
on every heap extension and a 4 MiB trim threshold stop that churn for the
daemon's buffer sizes (docs/performance.md, "Footprint").

How: glibc reads C{MALLOC_TOP_PAD_} and C{MALLOC_TRIM_THRESHOLD_} once, when
a process starts (the same two values set later with C{mallopt} through
ctypes did not bring the throughput back). The script's first process
re-executes itself anyway (to take the keys off its command line), so it
adds the settings the caller did not set to the re-exec's environment
(L{withSettings}) and names them in L{ADDED}; the re-executed daemon removes
exactly those (L{forgetSettings}) before anything reads its environment, so
no session (C{-inheritDaemonEnv}) and none of its programs inherit them. A
caller who set one of them keeps it, for the daemon and its sessions alike.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

__all__ = ["ADDED", "SETTINGS", "forgetSettings", "missing", "withSettings"]

SETTINGS = {
    "MALLOC_TOP_PAD_": str(1 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(4 << 20),
}

# The settings the script added (comma separated), for the daemon to remove.
ADDED = "DIEGOSSH_MALLOC_ADDED"


def missing(environ: Mapping[str, str]) -> bool:
    """
    Whether a process started with C{environ} would run without one of the
    settings (so the script re-executes itself to give it them).
    """
    return any(name not in environ for name in SETTINGS)


def withSettings(environ: Mapping[str, str]) -> dict[str, str]:
    """
    C{environ} with the settings the caller did not set, and L{ADDED} naming them.
    """
    env = dict(environ)
    env.pop(ADDED, None)
    added = [name for name in SETTINGS if name not in env]
    env.update((name, SETTINGS[name]) for name in added)
    if added:
        env[ADDED] = ",".join(added)
    return env


def forgetSettings(environ: MutableMapping[str, str]) -> None:
    """
    Remove from C{environ} the settings L{withSettings} added (never a
    caller's own), and L{ADDED}.
    """
    for name in environ.pop(ADDED, "").split(","):
        if name in SETTINGS:
            environ.pop(name, None)
