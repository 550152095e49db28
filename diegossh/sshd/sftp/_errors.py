# -*- test-case-name: tests.test_sftp_server -*-
"""
How failures become SSH_FXP_STATUS replies.

The errno classes follow OpenSSH's sftp-server (errno_to_portable) so clients
react the same way; the message is the system's strerror, which tells a user
more than OpenSSH's fixed "Failure".
"""

from __future__ import annotations

import errno
import os

from diegossh.sshd.sftp._constants import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
)

_STATUS_BY_ERRNO = {
    errno.ENOENT: FX_NO_SUCH_FILE,
    errno.ENOTDIR: FX_NO_SUCH_FILE,
    errno.EBADF: FX_NO_SUCH_FILE,
    errno.ELOOP: FX_NO_SUCH_FILE,
    errno.EPERM: FX_PERMISSION_DENIED,
    errno.EACCES: FX_PERMISSION_DENIED,
    errno.EFAULT: FX_PERMISSION_DENIED,
    errno.ENAMETOOLONG: FX_BAD_MESSAGE,
    errno.EINVAL: FX_BAD_MESSAGE,
    errno.ENOSYS: FX_OP_UNSUPPORTED,
}


class SFTPError(Exception):
    """A request fails with this SSH_FX_* status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fromOSError(error: OSError) -> SFTPError:
    """Classify an OSError as OpenSSH does, keeping the system's wording."""
    code = error.errno
    if code is None:
        return SFTPError(FX_FAILURE, str(error) or "Failure")
    return SFTPError(_STATUS_BY_ERRNO.get(code, FX_FAILURE), error.strerror or os.strerror(code))


def osError(code: int) -> OSError:
    return OSError(code, os.strerror(code))
