# -*- test-case-name: tests.test_proxy_backend -*-
"""
Checking a backend's host key against the route's C{host_fingerprint}.

Upstream tells the format by length (47: MD5 colon-hex, 59: SHA-1 colon-hex,
44: padded base64 SHA-256); OpenSSH prints C{SHA256:} and unpadded base64,
which operators paste too. An empty fingerprint is not checked; one in no known
format never matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def _colonHex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def matches(expected: str, hostKeyBlob: bytes) -> bool:
    """
    Whether the host key C{hostKeyBlob} has the fingerprint C{expected}.
    """
    wanted = expected.strip()
    if not wanted:
        return True
    if wanted.startswith("SHA256:"):
        actual = base64.b64encode(hashlib.sha256(hostKeyBlob).digest()).decode().rstrip("=")
        return hmac.compare_digest(wanted[7:].rstrip("="), actual)
    if len(wanted) == 47:
        actual = _colonHex(hashlib.md5(hostKeyBlob, usedforsecurity=False).digest())
        return hmac.compare_digest(wanted.lower(), actual)
    if len(wanted) == 59:
        actual = _colonHex(hashlib.sha1(hostKeyBlob, usedforsecurity=False).digest())
        return hmac.compare_digest(wanted.lower(), actual)
    if len(wanted) == 44:
        actual = base64.b64encode(hashlib.sha256(hostKeyBlob).digest()).decode()
        return hmac.compare_digest(wanted, actual)
    return False
