# -*- test-case-name: tests.test_secrets_args,tests.test_secrets -*-
"""
Secrets given as flags, moved off the command line at start-up.

C{/proc/PID/cmdline} (what C{ps} shows) is readable by every local user;
C{/proc/PID/environ} only by the process's own user and root. So when a secret
flag is on the command line, the process re-executes itself (same PID, same
interpreter and interpreter options, from C{sys.orig_argv}) with the flag and
its value removed, and the value carried in a private environment variable
(L{carrier}). The re-executed process takes the values back
(L{takeMoved}) and removes the variables, so no child inherits them.

Both taps use this: C{diego-sshd} for its keys, C{diego-ssh-proxy} for every
secret setting. Only what follows the tap's name on the command line is
looked at (twistd's own options come before it), and a flag is recognised as
C{getopt} (which Twisted's option parser uses) would: its full name, or an
unambiguous prefix of it, in the C{--flag value} and C{--flag=value} forms.
Nothing happens when the tap's name is not on the command line: options parsed
from a list in a test, or rebuilt in a proxy worker from its stdin.

The C{diego-sshd} console script does as upstream's binary: it re-executes
itself (L{reexec}, L{programPrefix}) with its Go-style flags rewritten and the
keys in upstream's own variables, C{SSHD_HOSTKEY} and C{SSHD_AUTHKEY}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, MutableMapping, Sequence

__all__ = [
    "REEXEC_MARK",
    "carrier",
    "moveOffCommandLine",
    "programPrefix",
    "reexec",
    "splitSecrets",
    "takeMoved",
]

REEXEC_MARK = "DIEGOSSH_REEXECED"
_CARRIER_PREFIX = "DIEGOSSH_SECRET_"


def carrier(flag: str) -> str:
    """
    The private environment variable that carries C{--flag}'s value across the re-exec.
    """
    return _CARRIER_PREFIX + flag


def _resolve(name: str, secrets: Sequence[str], longOptions: Sequence[str]) -> str | None:
    """
    The secret flag C{--name} means, by getopt's rule (an exact name, else a
    unique prefix of all the long options), or None.
    """
    if name in longOptions:
        return name if name in secrets else None
    matches = [option for option in longOptions if option.startswith(name)]
    if len(matches) == 1 and matches[0] in secrets:
        return matches[0]
    return None


def splitSecrets(
    argv: Sequence[str], subcommand: str, secrets: Iterable[str], longOptions: Iterable[str]
) -> tuple[list[str], dict[str, str]]:
    """
    C{argv} without the secret flags that follow C{subcommand}, and their
    values by flag. A secret flag given twice keeps the last value, as getopt.
    """
    secretNames = list(secrets)
    options = [option.rstrip("=") for option in longOptions]
    try:
        start = list(argv).index(subcommand) + 1
    except ValueError:
        return list(argv), {}
    kept = list(argv[:start])
    moved: dict[str, str] = {}
    i = start
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            kept += argv[i:]
            break
        flag = None
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            flag = _resolve(name, secretNames, options)
        if flag is None:
            kept.append(arg)
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                kept.append(arg)  # getopt will say the value is missing
                break
            value = argv[i + 1]
            i += 1
        moved[flag] = value
        i += 1
    return kept, moved


def moveOffCommandLine(
    subcommand: str,
    secrets: Iterable[str],
    longOptions: Iterable[str],
    *,
    argv: Sequence[str] | None = None,
    environ: MutableMapping[str, str] | None = None,
    execve: Callable[[str, list[str], dict[str, str]], object] | None = None,
) -> None:
    """
    Re-exec without the secret flags that follow C{subcommand} on the command
    line, their values carried in the environment. Returns when there is
    nothing to move, or when this process is the re-executed one.
    """
    environ = os.environ if environ is None else environ
    if environ.get(REEXEC_MARK):
        return
    command = list(sys.orig_argv if argv is None else argv)
    kept, moved = splitSecrets(command, subcommand, secrets, longOptions)
    if not moved:
        return
    env = dict(environ)
    env.update((carrier(flag), value) for flag, value in moved.items())
    reexec(kept, env, execve)


def programPrefix(
    origArgv: Sequence[str] | None = None, argv: Sequence[str] | None = None
) -> list[str]:
    """
    How this program was started, without its own arguments: the interpreter,
    its options and the script or C{-m module} (C{sys.orig_argv} less the
    arguments C{sys.argv} holds after its first).
    """
    origArgv = sys.orig_argv if origArgv is None else origArgv
    argv = sys.argv if argv is None else argv
    return list(origArgv[: len(origArgv) - len(argv) + 1])


def reexec(
    command: Sequence[str],
    environ: dict[str, str],
    execve: Callable[[str, list[str], dict[str, str]], object] | None = None,
) -> None:
    """
    Replace this process (same PID) with C{command} run by this interpreter,
    in C{environ} plus the re-exec mark, output flushed first. Returns only
    when C{execve} is a test's stand-in.
    """
    env = dict(environ)
    env[REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    (execve or os.execve)(sys.executable, list(command), env)


def takeMoved(
    secrets: Iterable[str], environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """
    The values L{moveOffCommandLine} carried, by flag; the carrier variables
    and the re-exec mark are removed from the environment.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for flag in secrets:
        value = environ.pop(carrier(flag), None)
        if value is not None:
            values[flag] = value
    environ.pop(REEXEC_MARK, None)
    return values
