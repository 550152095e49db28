# -*- test-case-name: tests.test_target -*-
"""
The one error the proxy's login path raises on purpose.

A login can be refused for many reasons deep inside a lookup (no such
instance, a BBS that timed out, a route without a port mapping). The SSH layer
needs to tell them apart from programming errors, and needs a message it may
show the user without leaking secrets or internals: that is L{LoginDenied}.
"""

from __future__ import annotations

__all__ = ["LoginDenied"]


class LoginDenied(Exception):
    """
    A login was refused; C{reason} is safe to show the user.

    Details meant for operators only (addresses, raw BBS messages) belong in
    the log, never in C{reason}. C{credentials} says the user's secret was
    refused (a one-time code UAA did not take), as opposed to a lookup that
    failed: the metrics count the two apart (docs/operations.md, "Metrics").
    """

    def __init__(self, reason: str, credentials: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.credentials = credentials

    def __str__(self) -> str:
        return self.reason
