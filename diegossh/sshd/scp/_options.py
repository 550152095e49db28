# -*- test-case-name: tests.test_scp_options -*-
"""
The command line of a remote C{scp -t} / C{scp -f}, parsed as OpenSSH's getopt does.
"""

from __future__ import annotations

from dataclasses import dataclass

#: OpenSSH's option letters: those followed by ":" take an argument.
_OPTSTRING = "12346ABCTdfOpqRrstvD:F:J:M:P:S:c:i:l:o:X:"
_WITH_ARGUMENT = {c for i, c in enumerate(_OPTSTRING) if _OPTSTRING[i + 1 : i + 2] == ":"}
_FLAGS = set(_OPTSTRING.replace(":", "")) - _WITH_ARGUMENT


class UsageError(Exception):
    """An scp server command line we cannot serve (the message says why)."""


@dataclass(frozen=True)
class SCPOptions:
    """
    What a remote scp was asked to do.

    C{sending} is C{-f} (we are the source, the client receives); otherwise
    C{-t} (we are the sink). C{paths} are the sources, or the single target.
    """

    sending: bool
    recursive: bool = False
    preserve: bool = False
    targetIsDirectory: bool = False
    verbose: bool = False
    paths: tuple[str, ...] = ()


def parseArguments(argv: list[str]) -> SCPOptions | None:
    """
    Parse C{argv} (C{["scp", "-t", "--", "dir"]}), or return L{None} when it
    is not a server invocation (no C{-t} or C{-f}): a client scp to run as is.

    Options stop at C{--} or the first operand, as POSIX getopt does; client
    options OpenSSH accepts are accepted and ignored.

    @raise UsageError: for an unknown option or a missing option argument in
        what is a server invocation.
    """
    seen: set[str] = set()
    problem: str | None = None
    index = 1
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        index += 1
        for position, letter in enumerate(word[1:], start=1):
            if letter in _WITH_ARGUMENT:
                if position == len(word) - 1:
                    if index >= len(argv):
                        problem = problem or f"option requires an argument -- {letter}"
                    index += 1
                break
            if letter not in _FLAGS:
                problem = problem or f"unknown option -- {letter}"
                continue
            seen.add(letter)
    if "t" not in seen and "f" not in seen:
        return None
    if problem is not None:
        raise UsageError(problem)
    return SCPOptions(
        sending="f" in seen,
        recursive="r" in seen,
        preserve="p" in seen,
        targetIsDirectory="d" in seen,
        verbose="v" in seen,
        paths=tuple(argv[index:]),
    )
