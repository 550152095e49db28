# -*- test-case-name: tests.test_sftp_wire -*-
"""
Numbers of SFTP version 3 (draft-ietf-secsh-filexfer-02) and the limits this
server keeps, in one place so the codec, the server and the docs agree.
"""

from __future__ import annotations

from typing import Final

VERSION: Final = 3

FXP_INIT: Final = 1
FXP_VERSION: Final = 2
FXP_OPEN: Final = 3
FXP_CLOSE: Final = 4
FXP_READ: Final = 5
FXP_WRITE: Final = 6
FXP_LSTAT: Final = 7
FXP_FSTAT: Final = 8
FXP_SETSTAT: Final = 9
FXP_FSETSTAT: Final = 10
FXP_OPENDIR: Final = 11
FXP_READDIR: Final = 12
FXP_REMOVE: Final = 13
FXP_MKDIR: Final = 14
FXP_RMDIR: Final = 15
FXP_REALPATH: Final = 16
FXP_STAT: Final = 17
FXP_RENAME: Final = 18
FXP_READLINK: Final = 19
FXP_SYMLINK: Final = 20
FXP_STATUS: Final = 101
FXP_HANDLE: Final = 102
FXP_DATA: Final = 103
FXP_NAME: Final = 104
FXP_ATTRS: Final = 105
FXP_EXTENDED: Final = 200
FXP_EXTENDED_REPLY: Final = 201

FX_OK: Final = 0
FX_EOF: Final = 1
FX_NO_SUCH_FILE: Final = 2
FX_PERMISSION_DENIED: Final = 3
FX_FAILURE: Final = 4
FX_BAD_MESSAGE: Final = 5
FX_NO_CONNECTION: Final = 6
FX_CONNECTION_LOST: Final = 7
FX_OP_UNSUPPORTED: Final = 8

FXF_READ: Final = 0x01
FXF_WRITE: Final = 0x02
FXF_APPEND: Final = 0x04
FXF_CREAT: Final = 0x08
FXF_TRUNC: Final = 0x10
FXF_EXCL: Final = 0x20

ATTR_SIZE: Final = 0x01
ATTR_UIDGID: Final = 0x02
ATTR_PERMISSIONS: Final = 0x04
ATTR_ACMODTIME: Final = 0x08
ATTR_EXTENDED: Final = 0x80000000

STATVFS_ST_RDONLY: Final = 0x1
STATVFS_ST_NOSUID: Final = 0x2

# OpenSSH's SFTP_MAX_MSG_LENGTH: the largest packet we send, and what clients
# are told through limits@openssh.com.
MAX_PACKET: Final = 256 * 1024
MAX_READ: Final = MAX_PACKET - 1024
MAX_WRITE: Final = MAX_PACKET - 1024
# Accepted on input: a little more than advertised, for clients that put a
# full MAX_PACKET of data behind a WRITE header. Beyond this the peer is broken.
MAX_INCOMING_PACKET: Final = MAX_PACKET + 4096

MAX_HANDLES: Final = 512
READDIR_BATCH: Final = 100
COPY_CHUNK: Final = 256 * 1024

# Backpressure. No new request is started while this much work is in flight
# (or while the client's window is closed); client data is read on until this
# many bytes of requests wait unparsed. Reading must go on while replies are
# blocked: OpenSSH's sftp client writes its requests blocking and reads
# replies only afterwards, so refusing its requests then would deadlock.
MAX_INFLIGHT_REQUESTS: Final = 128
MAX_INFLIGHT_BYTES: Final = 8 * 1024 * 1024
MAX_BUFFERED_INPUT: Final = 16 * 1024 * 1024

# The SSH_FXP_VERSION advertisement, in OpenSSH sftp-server's order.
EXTENSIONS: Final = (
    (b"posix-rename@openssh.com", b"1"),
    (b"statvfs@openssh.com", b"2"),
    (b"fstatvfs@openssh.com", b"2"),
    (b"hardlink@openssh.com", b"1"),
    (b"fsync@openssh.com", b"1"),
    (b"lsetstat@openssh.com", b"1"),
    (b"limits@openssh.com", b"1"),
    (b"expand-path@openssh.com", b"1"),
    (b"copy-data", b"1"),
    (b"home-directory", b"1"),
    (b"users-groups-by-id@openssh.com", b"1"),
)
