"""
The daemon gives back the pages only its start-up used
(L{diegossh.sshd.startuppages}): which mappings may go, and that releasing
them frees resident memory in a real process that goes on working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from diegossh.ssh.openconnections import OpenConnections
from diegossh.sshd import startuppages
from diegossh.sshd.idlerelease import IdleRelease
from diegossh.sshd.startuppages import Advise, releasable, releaseStartupPages
from tests.support.admission import AdmitAll

LIB = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def entry(
    head: str, anonymous: int = 0, swap: int = 0, rss: int = 64, swapPss: int | None = None
) -> str:
    """
    One mapping as /proc/self/smaps shows it (the fields that matter, and some that do not).
    """
    return (
        f"{head}\n"
        f"Size:                132 kB\n"
        f"Rss:                 {rss} kB\n"
        f"Anonymous:           {anonymous} kB\n"
        f"Swap:                {swap} kB\n"
        f"SwapPss:             {swap if swapPss is None else swapPss} kB\n"
        f"VmFlags: rd ex mr mw me sd\n"
    )


SMAPS = "".join([
    entry(f"7f0000000000-7f0000020000 r--p 00000000 fd:01 1001 {LIB}"),
    entry(f"7f0000020000-7f0000040000 r-xp 00020000 fd:01 1001 {LIB}"),
    entry(f"7f0000040000-7f0000041000 r--p 00040000 fd:01 1001 {LIB}", anonymous=4),  # RELRO
    entry(f"7f0000041000-7f0000042000 rw-p 00041000 fd:01 1001 {LIB}", anonymous=4),
    entry(f"7f0000050000-7f0000051000 r--p 00000000 fd:01 1002 {LIB}", swap=4),  # swapped out
    entry("7f0000060000-7f0000070000 r--s 00000000 fd:01 1003 /usr/lib/locale/shared.cache"),
    entry("7f0000070000-7f0000080000 r-xp 00000000 fd:01 1004 /tmp/_MEIx/_rust.so (deleted)"),
    entry("7f0000080000-7f0000090000 ---p 00000000 00:00 0"),
    entry("7f0000090000-7f00000a0000 rw-p 00000000 00:00 0", anonymous=64),
    entry("7f00000a0000-7f00000b0000 r--p 00000000 00:00 0 [vvar]"),
    entry("7f00000b0000-7f00000b2000 r-xp 00000000 00:00 0 [vdso]"),
    entry("55e000000000-55e000400000 rw-p 00000000 00:00 0 [heap]", anonymous=4096),
])  # fmt: skip


def test_only_a_files_clean_private_read_only_mappings_are_releasable() -> None:
    assert releasable(SMAPS.splitlines(keepends=True)) == [
        (0x7F0000000000, 0x20000),  # the library's header and constants
        (0x7F0000020000, 0x20000),  # its code
        (0x7F0000070000, 0x10000),  # code whose file was deleted: still its inode's
    ]


def test_a_mapping_with_any_page_of_its_own_is_kept() -> None:
    head = f"7f0000000000-7f0000020000 r-xp 00000000 fd:01 1001 {LIB}"
    assert releasable(entry(head).splitlines()) == [(0x7F0000000000, 0x20000)]
    assert releasable(entry(head, anonymous=4).splitlines()) == []
    assert releasable(entry(head, swap=4).splitlines()) == []
    assert releasable(entry(head, swapPss=4).splitlines()) == []


class Advised:
    def __init__(self, refuse: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.calls: list[tuple[int, int]] = []
        self.refuse = refuse

    def __call__(self, start: int, length: int) -> bool:
        self.calls.append((start, length))
        return start not in self.refuse

    @contextmanager
    def advising(self) -> Iterator[Advise | None]:
        yield self


def test_release_advises_each_releasable_mapping_and_counts_what_took(tmp_path: Path) -> None:
    smaps = tmp_path / "smaps"
    smaps.write_text(SMAPS)
    advised = Advised(refuse={0x7F0000070000})
    assert releaseStartupPages(str(smaps), advised.advising) == 0x40000
    assert advised.calls == releasable(SMAPS.splitlines())


def test_nothing_is_released_without_smaps_or_madvise(tmp_path: Path) -> None:
    advised = Advised()
    assert releaseStartupPages(str(tmp_path / "absent"), advised.advising) == 0
    assert advised.calls == []

    @contextmanager
    def unavailable() -> Iterator[Advise | None]:
        yield None

    smaps = tmp_path / "smaps"
    smaps.write_text(SMAPS)
    assert releaseStartupPages(str(smaps), unavailable) == 0


# In a fresh interpreter that refused ctypes as the daemon does and loaded
# what the daemon loads: the release, the file-backed resident memory before
# and after (smaps_rollup), and what is importable after.
RELEASING = """
import json, sys
from diegossh.sshd.script import refuseUnneeded
refuseUnneeded()
import twisted.internet.reactor, twisted.conch.ssh.transport
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

def fileBacked():
    fields = dict(line.split()[:2] for line in open("/proc/self/smaps_rollup")
                  if line.split()[0] in ("Rss:", "Anonymous:"))
    return int(fields["Rss:"]) - int(fields["Anonymous:"])

from diegossh.sshd.startuppages import releaseStartupPages
before = fileBacked()
released = releaseStartupPages()
after = fileBacked()
try:
    import ctypes
    ctypesImportable = True
except ImportError:
    ctypesImportable = False
# what was released comes back when used
sealed = ChaCha20Poly1305(bytes(32)).encrypt(bytes(12), b"still works", b"")
print(json.dumps({
    "released": released, "before": before, "after": after,
    "ctypes": ctypesImportable, "ctypesModules": sorted(n for n in sys.modules if "ctypes" in n
                                                        and sys.modules[n] is not None),
    "works": len(sealed) == 27,
}))
"""


@pytest.mark.slow  # a fresh interpreter that imports Twisted: about a second
def test_releasing_frees_resident_file_pages_of_a_live_process() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RELEASING], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout)
    assert result["released"] > 1 << 20
    # the interpreter's, cryptography's and libc's code: several MiB before,
    # the few pages used since after
    assert result["before"] > 4096
    assert result["after"] < result["before"] / 2
    assert result["works"]
    # ctypes, imported for the call, is refused again and its modules gone
    assert not result["ctypes"]
    assert result["ctypesModules"] in ([], ["_ctypes"])


def test_the_release_keeps_a_callers_own_ctypes() -> None:
    # a process that imported ctypes itself (tests, twistd) keeps it
    import ctypes

    with startuppages._madvising() as advise:
        assert advise is not None
    assert sys.modules["ctypes"] is ctypes


# -- released again once idle after logins


def idleWorld() -> tuple[OpenConnections, Clock, list[None], IdleRelease]:
    connections = OpenConnections(AdmitAll())
    clock = Clock()
    released: list[None] = []
    service = IdleRelease(connections, clock, lambda: released.append(None), every=30)
    service.startService()
    return connections, clock, released, service


def test_released_again_once_connections_came_and_none_is_open() -> None:
    connections, clock, released, _ = idleWorld()
    clock.advance(30)
    assert released == []  # never used since the start-up's release
    first, second = object(), object()
    connections.opened(first)
    connections.opened(second)
    connections.closed(first)
    clock.advance(30)
    assert released == []  # one still open
    connections.closed(second)
    clock.advance(29)
    assert released == []  # at the next check, not before
    clock.advance(1)
    assert released == [None]
    clock.advance(60)
    assert released == [None]  # nothing came since
    third = object()
    connections.opened(third)
    connections.closed(third)
    clock.advance(30)
    assert released == [None, None]


def test_no_check_after_stop() -> None:
    connections, clock, released, service = idleWorld()
    service.stopService()
    transport = object()
    connections.opened(transport)
    connections.closed(transport)
    clock.advance(300)
    assert released == []
    assert clock.getDelayedCalls() == []


def test_a_connection_ends_once_however_often_closed_is_reported() -> None:
    connections = OpenConnections(AdmitAll())
    transport = object()
    connections.closed(transport)  # never opened: not counted
    connections.opened(transport)
    connections.closed(transport)
    connections.closed(transport)
    assert connections.ended == 1
