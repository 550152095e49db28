# -*- test-case-name: tests.test_bastion_keycache -*-
"""
The operator-kept C{authorized_keys_cache} file, as the bastion reads it:
OpenSSH's C{authorized_keys} lines (parsed by L{diegossh.ssh.keys}), with
C{permitopen} naming the targets a key opens.

A restriction we do not understand must never be dropped silently: a line
whose options we cannot honour is skipped, and the caller logs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.conch.ssh import keys

from diegossh.ssh.keys import BadKey, parseAuthorizedKeyLine

# options that restrict what a bastion never offers anyway
_HARMLESS = frozenset({"no-pty", "no-x11-forwarding", "no-agent-forwarding", "no-user-rc", "pty"})


class UnsupportedLine(ValueError):
    """
    A line we will not use; the message says why (never the key material).
    """


@dataclass(frozen=True)
class AuthorizedKey:
    """
    A key from the operator's file, and the C{host:port} patterns it may
    open (L{None}: any target the proxy permits).
    """

    key: keys.Key
    permitOpen: tuple[tuple[str, str], ...] | None


def operatorKey(line: str) -> AuthorizedKey | None:
    """
    One line of the operator's file: L{None} for blanks and comments;
    L{UnsupportedLine} for what cannot be honoured.
    """
    try:
        parsed = parseAuthorizedKeyLine(line)
    except BadKey as e:
        raise UnsupportedLine(str(e)) from None
    if parsed is None:
        return None
    permitOpen: list[tuple[str, str]] = []
    for name, value in parsed.options:
        if name == "permitopen" and value is not None:
            host, colon, port = value.rpartition(":")
            if not colon or not host or not port:
                raise UnsupportedLine(f"permitopen={value!r} is not host:port")
            permitOpen.append((host.strip("[]"), port))
        elif name == "no-port-forwarding":
            raise UnsupportedLine("no-port-forwarding: the key could open nothing")
        elif name in _HARMLESS and value is None:
            continue
        else:
            raise UnsupportedLine(f"option {name!r} is not supported by the bastion")
    return AuthorizedKey(parsed.key, tuple(permitOpen) if permitOpen else None)
