# -*- test-case-name: tests.test_sftp_server -*-
"""
The open files and directories of one SFTP session.

Worker threads open and close handles while the reactor thread may be
shutting the session down, so the table takes a lock; once closed it refuses
new entries (closing them at once) so no descriptor outlives the session.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from diegossh.sshd.sftp._constants import FX_FAILURE, MAX_HANDLES
from diegossh.sshd.sftp._errors import SFTPError


@dataclass
class FileHandle:
    path: bytes
    fd: int
    append: bool

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class DirHandle:
    path: bytes
    entries: Iterator[os.DirEntry[bytes]]
    # readdir(3) yields "." and ".." too; os.scandir does not.
    dots: list[bytes] = field(default_factory=lambda: [b".", b".."])

    def close(self) -> None:
        close = getattr(self.entries, "close", None)
        if close is not None:
            close()


Handle = FileHandle | DirHandle


class HandleTable:
    """Map opaque handle strings to open files and directories, up to a limit."""

    def __init__(self, limit: int = MAX_HANDLES) -> None:
        self._lock = threading.Lock()
        self._handles: dict[bytes, Handle] = {}
        self._counter = 0
        self._limit = limit
        self._closed = False

    def add(self, handle: Handle) -> bytes:
        with self._lock:
            refused = self._closed or len(self._handles) >= self._limit
            if not refused:
                self._counter += 1
                key = struct.pack(">Q", self._counter)
                self._handles[key] = handle
        if refused:
            handle.close()
            raise SFTPError(FX_FAILURE, "Too many open handles")
        return key

    def get(self, key: bytes) -> Handle | None:
        with self._lock:
            return self._handles.get(key)

    def file(self, key: bytes) -> FileHandle:
        handle = self.get(key)
        if not isinstance(handle, FileHandle):
            raise SFTPError(FX_FAILURE, "Invalid handle")
        return handle

    def directory(self, key: bytes) -> DirHandle:
        handle = self.get(key)
        if not isinstance(handle, DirHandle):
            raise SFTPError(FX_FAILURE, "Invalid handle")
        return handle

    def pop(self, key: bytes) -> Handle | None:
        with self._lock:
            return self._handles.pop(key, None)

    def closeTable(self) -> list[bytes]:
        """Refuse new handles from now on; return the keys still open."""
        with self._lock:
            self._closed = True
            return list(self._handles)

    def __len__(self) -> int:
        with self._lock:
            return len(self._handles)
