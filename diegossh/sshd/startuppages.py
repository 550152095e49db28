# -*- test-case-name: tests.test_sshd_startuppages -*-
"""
Once the daemon listens, give back the pages of code and read-only data that
only its start-up touched (issue 15).

Why: of the idle daemon's 35 MiB resident, about 13 MiB were the shared
libraries' code and constants (cryptography's Rust extension, libpython,
libc): importing Twisted, Conch and cryptography runs code that never runs
again, and the kernel maps a file's pages 64 KiB around each fault. They are
clean copies of files, so they count against the app instance's memory
(RSS) for nothing. Released, the idle daemon is at about 24 MiB; the pages a
login uses come back on their next use (about 5 MiB by the end of a first
login), by minor faults from the page cache, where the released pages stay
until the kernel needs the memory.

How: C{madvise(MADV_DONTNEED)} on every mapping that is a file's, private
and not writable, and holds no page of its own: no anonymous page (a page
written before it was made read-only, as the dynamic linker does for
relocations: dropping it would bring the file's unrelocated bytes back) and
none swapped out (the same, on swap). What may be written, the heap, Python's
objects, the stack, shared mappings and the kernel's own (C{[vdso]}) are
never touched. The mappings come from C{/proc/self/smaps}; without it, or
without C{ctypes} (refused at start, L{diegossh.sshd.script.REFUSED_MODULES},
and imported here for the call alone, then refused again), nothing is
released and the daemon runs as before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

__all__ = ["Mapping", "releasable", "releaseStartupPages"]

SMAPS = "/proc/self/smaps"

# Madvise(start, length) -> whether it took.
Advise = Callable[[int, int], bool]


class Mapping:
    """
    One mapping of C{/proc/self/smaps}: where, its permissions, its path
    (empty for anonymous memory) and the kibibytes of it that are its own.
    """

    __slots__ = ("end", "ownKiB", "path", "perms", "start")

    def __init__(self, start: int, end: int, perms: str, path: str) -> None:
        self.start = start
        self.end = end
        self.perms = perms
        self.path = path
        self.ownKiB = 0

    def releasable(self) -> bool:
        """
        A file's clean, private, read-only pages, every one of which the
        file itself can give back.
        """
        readOnly = self.perms[1:2] == "-" and self.perms[3:4] == "p"
        return readOnly and self.path.startswith("/") and self.ownKiB == 0


# The smaps fields that count a mapping's own pages, not the file's.
_OWN = frozenset({"Anonymous:", "Swap:", "SwapPss:"})


def mappings(lines: Iterable[str]) -> Iterator[Mapping]:
    """
    The mappings described by the lines of C{/proc/self/smaps}.
    """
    current: Mapping | None = None
    for line in lines:
        fields = line.split(None, 5)
        if not fields:
            continue
        head = fields[0]
        if head.endswith(":"):
            if current is not None and head in _OWN and len(fields) > 1:
                current.ownKiB += int(fields[1])
            continue
        if current is not None:
            yield current
        start, _, end = head.partition("-")
        path = fields[5].rstrip("\n") if len(fields) > 5 else ""
        current = Mapping(int(start, 16), int(end, 16), fields[1], path)
    if current is not None:
        yield current


def releasable(lines: Iterable[str]) -> list[tuple[int, int]]:
    """
    The (start, length) of each mapping in C{lines} whose pages may be
    released.
    """
    return [(m.start, m.end - m.start) for m in mappings(lines) if m.releasable()]


def releaseStartupPages(
    smaps: str = SMAPS,
    advising: Callable[[], Any] | None = None,
) -> int:
    """
    Release the start-up's pages (see the module); the bytes of the mappings
    released, 0 when nothing could be. C{advising} is a context manager
    giving an L{Advise} or C{None} (by default C{madvise} through C{ctypes}).
    """
    with (advising or _madvising)() as advise:
        if advise is None:
            return 0
        try:
            with open(smaps) as f:
                ranges = releasable(f)
        except (OSError, ValueError):
            return 0
        return sum(length for start, length in ranges if advise(start, length))


@contextmanager
def _madvising(modules: MutableMapping[str, Any] = sys.modules) -> Iterator[Advise | None]:
    """
    C{madvise(MADV_DONTNEED)} through C{ctypes}, imported for the while
    (its own pages then among those released) and refused again after.
    """
    refused = {name for name in ("ctypes", "_ctypes") if name in modules and modules[name] is None}
    for name in refused:
        del modules[name]
    advise: Advise | None = None
    try:
        import ctypes
        from mmap import MADV_DONTNEED

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.madvise
        call.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        call.restype = ctypes.c_int

        def advise(start: int, length: int) -> bool:
            return bool(call(start, length, MADV_DONTNEED) == 0)

    except (ImportError, OSError, AttributeError):
        advise = None
    try:
        yield advise
    finally:
        advise = None
        for name in refused:
            for loaded in [n for n in modules if n == name or n.startswith(name + ".")]:
                del modules[loaded]
            modules[name] = None
