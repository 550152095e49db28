# -*- test-case-name: tests.test_goflags -*-
"""
Command lines in Go's C{flag} syntax, as upstream's C{ssh-proxy} and
C{diego-sshd} take them and as Cloud Controller and the BOSH job write them.

Go accepts C{-name=value}, C{--name=value}, C{-name value} (not for
booleans), and booleans bare (C{-name}) or as C{-name=true} / C{=false}
(also C{1}, C{0}, C{t}, C{f}, C{T}, C{F}, C{TRUE}, C{FALSE}, C{True},
C{False}). The last occurrence of a flag wins; a bare C{--} or the first
argument that is not a flag ends the flags. Twisted's L{usage.Options} takes
none of the single-dash forms, so the console scripts parse here and hand
Twisted plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


class FlagError(ValueError):
    """
    A command line Go would refuse; the message is Go's wording, which
    operators grep for.
    """


class ParsedFlags:
    """
    What a Go-style command line set: C{values} by flag name (C{str} for
    value flags, C{bool} for booleans; flags not given are absent), and the
    arguments left after the flags.

    A plain class, not a dataclass: the C{diego-sshd} script's first process
    imports this module, and C{dataclasses} (with C{inspect}) would cost it
    about 15 ms of start-up (issue 15).
    """

    __slots__ = ("arguments", "values")

    def __init__(self, values: dict[str, str | bool], arguments: list[str]) -> None:
        self.values = values
        self.arguments = arguments

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParsedFlags):
            return NotImplemented
        return (self.values, self.arguments) == (other.values, other.arguments)

    __hash__ = None  # type: ignore[assignment]  # mutable contents, as the dataclass's

    def __repr__(self) -> str:
        return f"ParsedFlags(values={self.values!r}, arguments={self.arguments!r})"


def parseGoFlags(
    argv: Sequence[str], valueFlags: Iterable[str], booleanFlags: Iterable[str]
) -> ParsedFlags:
    """
    Parse C{argv} (without the program name) as Go's C{flag} package does.

    @raise FlagError: an unknown flag, a value flag without its value, or a
        boolean with a value Go does not read as one.
    """
    values = set(valueFlags)
    booleans = set(booleanFlags)
    given: dict[str, str | bool] = {}
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument == "--":
            index += 1
            break
        if len(argument) < 2 or not argument.startswith("-"):
            break
        body = argument[2:] if argument.startswith("--") else argument[1:]
        if not body or body.startswith("-") or body.startswith("="):
            raise FlagError(f"bad flag syntax: {argument}")
        name, equals, value = body.partition("=")
        index += 1
        if name in booleans:
            if not equals:
                given[name] = True
            elif value in _TRUE:
                given[name] = True
            elif value in _FALSE:
                given[name] = False
            else:
                raise FlagError(f'invalid boolean value "{value}" for -{name}')
        elif name in values:
            if not equals:
                if index >= len(argv):
                    raise FlagError(f"flag needs an argument: -{name}")
                value = argv[index]
                index += 1
            given[name] = value
        else:
            raise FlagError(f"flag provided but not defined: -{name}")
    return ParsedFlags(given, list(argv[index:]))


def twistedArguments(parsed: ParsedFlags) -> list[str]:
    """
    The same settings as a command line L{usage.Options} reads: C{--name=value}
    and bare C{--name} for a true boolean (a false one is the default, so it is
    left out).
    """
    arguments: list[str] = []
    for name, value in parsed.values.items():
        if value is True:
            arguments.append(f"--{name}")
        elif value is not False:
            arguments.append(f"--{name}={value}")
    return arguments + parsed.arguments
