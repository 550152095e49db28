# -*- test-case-name: tests.test_bastion_authorizedkeys -*-
"""
Reading keys: what a target publishes (a C{.pub} file's lines) and the
operator-kept C{authorized_keys_cache} file (OpenSSH's C{authorized_keys}
format, with C{permitopen} naming the targets a key opens).

A restriction we do not understand must never be dropped silently: a line
whose options we cannot honour is skipped, and the caller logs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.conch.ssh import keys

MAX_KEYS_TEXT = 64 * 1024

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


def _isKeyType(token: str) -> bool:
    return token.startswith(("ssh-", "ecdsa-sha2-", "sk-", "rsa-sha2-"))


def parsePublishedKeys(data: bytes) -> list[keys.Key]:
    """
    Every public key in C{data} (one per line, C{#} comments and blank lines
    allowed); lines that are not keys are ignored, as OpenSSH ignores them.
    """
    found: list[keys.Key] = []
    for raw in data[:MAX_KEYS_TEXT].splitlines():
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        try:
            key = keys.Key.fromString(line)
        except (keys.BadKeyError, ValueError, IndexError):
            key = None  # not a key line: ignored, as sshd ignores it
        if key is not None and key.isPublic():
            found.append(key)
    return found


def _splitOptions(line: str) -> tuple[list[str], str]:
    """
    C{opt1,opt2="a,b" ssh-ed25519 AAAA...} into the options and the rest.
    """
    options: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quoted and i + 1 < len(line):
            current.append(line[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == ",":
            options.append("".join(current))
            current = []
        elif not quoted and ch in " \t":
            options.append("".join(current))
            return options, line[i:].strip()
        else:
            current.append(ch)
        i += 1
    raise UnsupportedLine("options without a key")


def parseAuthorizedKeyLine(line: str) -> AuthorizedKey | None:
    """
    One line of the operator's file: L{None} for blanks and comments;
    L{UnsupportedLine} for what cannot be honoured.
    """
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    options: list[str] = []
    rest = line
    if not _isKeyType(line.split(None, 1)[0]):
        options, rest = _splitOptions(line)
    try:
        key = keys.Key.fromString(rest.encode())
    except Exception:
        raise UnsupportedLine("not a public key") from None
    permitOpen: list[tuple[str, str]] = []
    for option in options:
        name, equals, value = option.partition("=")
        name = name.lower()
        if name == "permitopen" and equals:
            host, colon, port = value.rpartition(":")
            if not colon or not host or not port:
                raise UnsupportedLine(f"permitopen={value!r} is not host:port")
            permitOpen.append((host.strip("[]"), port))
        elif name == "no-port-forwarding":
            raise UnsupportedLine("no-port-forwarding: the key could open nothing")
        elif name in _HARMLESS and not equals:
            continue
        else:
            raise UnsupportedLine(f"option {name!r} is not supported by the bastion")
    return AuthorizedKey(key, tuple(permitOpen) if permitOpen else None)
