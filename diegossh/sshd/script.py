# -*- test-case-name: tests.test_sshd_dropin -*-
"""
C{diego-sshd}: the daemon as Cloud Controller starts it in every app
instance, a drop-in for upstream's C{/tmp/lifecycle/diego-sshd}::

    diego-sshd -address=0.0.0.0:2222 -hostKey=<PEM> -authorizedKey=<line> \\
        -inheritDaemonEnv -logLevel=fatal

What upstream's binary does with the same arguments, this does:

  - Flags in Go's syntax (L{diegossh.goflags}); a flag Go's C{flag} package
    refuses ends the process with Go's message, the usage and exit code 2.
    The flags are those of C{twistd diego-sshd} (L{diegossh.sshd.tap.Options}),
    one set of options for both; upstream's have upstream's wording and
    defaults in the usage.
  - The keys never stay on the command line: given as flags, the process
    re-executes itself (same PID) with the other flags as C{--name=value} and
    the keys in C{SSHD_HOSTKEY} / C{SSHD_AUTHKEY}. Those variables, when the
    caller sets them, win over the flags. An empty C{-hostKey=} generates a key.
  - The algorithm lists left out are upstream's, in its order
    (L{diegossh.ssh.algorithms.PINNED_UPSTREAM_DEFAULTS}, cmd/sshd/main.go at
    e96542ec, the diego-ssh that diego-release pins).
  - Logs are lager JSON lines on stdout (L{diegossh.lager}), source C{sshd}:
    C{sshd.started} once listening, upstream's refusals
    (C{sshd.failed-to-parse-host-key}, C{sshd.authorized-key-required}, then
    C{sshd.configure-failed}) at error level and exit code 1.
    C{-logLevel} (C{info} by default; Cloud Controller gives C{fatal}) and
    C{-timeFormat} are honoured, C{-debugAddr} serves C{/log-level}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence

from diegossh import secretargs
from diegossh.goflags import FlagError, ParsedFlags, parseGoFlags, twistedArguments
from diegossh.sshd import heap
from diegossh.sshd.environment import KEY_VARIABLES
from diegossh.sshd.onefile import restoreCallerEnvironment
from diegossh.sshd.optiontable import FLAGS, PARAMETERS

# Not typing's (see GoFlag); type checkers read the name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn, TextIO

SOURCE = "sshd"

# flag -> the variable upstream moves it into, which wins when the caller sets it
KEY_FLAGS = dict(zip(("hostKey", "authorizedKey"), KEY_VARIABLES, strict=True))

# lagerflags.New panics on any other spelling
_GO_LOG_LEVELS = ("debug", "info", "error", "fatal")
_GO_TIME_FORMATS = ("unix-epoch", "0", "rfc3339", "1")


class GoFlag:
    """
    One flag as Go's C{flag.PrintDefaults} shows it: its type word
    (C{string}, C{int}, C{value}; none for a boolean), its default (shown
    unless it is the zero value) and its usage.

    This module's classes are plain ones, not dataclasses: the script's first
    process only reads the flags and re-executes itself, and C{dataclasses}
    (with C{inspect}) and C{typing} would be most of its imports (issue 15).
    """

    __slots__ = ("default", "name", "typeWord", "usage")

    def __init__(self, name: str, typeWord: str, default: str, usage: str) -> None:
        self.name = name
        self.typeWord = typeWord
        self.default = default
        self.usage = usage

    def _fields(self) -> tuple[str, str, str, str]:
        return (self.name, self.typeWord, self.default, self.usage)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GoFlag):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "GoFlag({!r}, {!r}, {!r}, {!r})".format(*self._fields())


# Upstream's flags, with upstream's wording and defaults (cmd/sshd/main.go,
# lagerflags, debugserver); C{typeWord} "" is a boolean.
UPSTREAM_FLAGS = {
    flag.name: flag
    for flag in (
        GoFlag("address", "string", "127.0.0.1:2222", "listen address for ssh daemon"),
        GoFlag("hostKey", "string", "", "PEM encoded RSA host key"),
        GoFlag("authorizedKey", "string", "", "Public key in the OpenSSH authorized_keys format"),
        GoFlag("allowUnauthenticatedClients", "", "", "Allow access to unauthenticated clients"),
        GoFlag("inheritDaemonEnv", "", "", "Inherit daemon's environment"),
        GoFlag(
            "allowedCiphers",
            "string",
            "",
            "Limit cipher algorithms to those provided (comma separated)",
        ),
        GoFlag(
            "allowedMACs", "string", "", "Limit MAC algorithms to those provided (comma separated)"
        ),
        GoFlag(
            "allowedKeyExchanges",
            "string",
            "",
            "Limit key exchanges algorithms to those provided (comma separated)",
        ),
        GoFlag("debugAddr", "string", "", "host:port for serving pprof debugging info"),
        GoFlag("logLevel", "string", "info", "log level: debug, info, error or fatal"),
        GoFlag(
            "redactSecrets",
            "",
            "",
            "use a redacting log sink to scrub sensitive values from data being logged",
        ),
        GoFlag(
            "redactPatterns",
            "value",
            "",
            "Regex patterns to use to determine sensitive values for redaction",
        ),
        GoFlag(
            "timeFormat",
            "value",
            "",
            'Format for timestamp in component logs. Valid values are "unix-epoch" and "rfc3339".',
        ),
    )
}


def goFlags() -> dict[str, GoFlag]:
    """
    Every flag the script takes: L{Options}' (those upstream also has with
    upstream's wording), by name.
    """
    flags: dict[str, GoFlag] = {}
    parameters: list[Any] = list(PARAMETERS)
    for parameter in parameters:
        name, default, doc = str(parameter[0]), parameter[2], str(parameter[3])
        typeWord = "int" if len(parameter) > 4 and parameter[4] is int else "string"
        shown = "" if default is None else str(default)
        flags[name] = UPSTREAM_FLAGS.get(name, GoFlag(name, typeWord, shown, doc))
    booleans: list[Any] = list(FLAGS)
    for flagName, _, flagDoc in booleans:
        flags[flagName] = UPSTREAM_FLAGS.get(flagName, GoFlag(flagName, "", "", flagDoc))
    return flags


def usageText(program: str, flags: Mapping[str, GoFlag]) -> str:
    """
    The usage Go's C{flag} package prints, flags sorted by name.
    """
    lines = [f"Usage of {program}:"]
    for name in sorted(flags):
        flag = flags[name]
        head = f"  -{name}" + (f" {flag.typeWord}" if flag.typeWord else "")
        text = flag.usage.replace("\n", "\n    \t")
        if flag.default:
            shown = f'"{flag.default}"' if flag.typeWord == "string" else flag.default
            text += f" (default {shown})"
        lines.append(head + "\n    \t" + text)
    return "\n".join(lines) + "\n"


class UsageExit(Exception):
    """
    The command line ends the process before it starts, as Go's would:
    C{message} for stderr (usage included), and the exit code.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Command:
    """
    A command line read: the flags given (Go's names and values), and
    whether the keys among them are to be moved off the command line by a
    re-exec (L{reexecArguments}).
    """

    __slots__ = ("flags", "given")

    def __init__(self, given: dict[str, str | bool], flags: dict[str, GoFlag]) -> None:
        self.given = given
        self.flags = flags

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return (self.given, self.flags) == (other.given, other.flags)

    __hash__ = None  # type: ignore[assignment]  # mutable contents

    def __repr__(self) -> str:
        return f"Command(given={self.given!r})"

    @property
    def keysOnCommandLine(self) -> bool:
        return any(name in self.given for name in KEY_FLAGS)


def parseCommand(arguments: Sequence[str], program: str = "diego-sshd") -> Command:
    """
    Read C{arguments} as Go's C{flag} package and lagerflags would.

    @raise UsageExit: C{-h}/C{-help} (code 0), or a flag Go refuses (code 2).
    """
    flags = goFlags()
    booleans = [name for name, flag in flags.items() if not flag.typeWord]
    values = [name for name, flag in flags.items() if flag.typeWord]
    usage_ = usageText(program, flags)
    try:
        parsed = parseGoFlags(arguments, values, [*booleans, "h", "help"])
    except FlagError as e:
        raise UsageExit(f"{e}\n{usage_}", 2) from None
    if "h" in parsed.values or "help" in parsed.values:
        raise UsageExit(usage_, 0)
    given = parsed.values
    timeFormat = given.get("timeFormat")
    if timeFormat is not None and timeFormat not in _GO_TIME_FORMATS:
        raise UsageExit(
            f'invalid value "{timeFormat}" for flag -timeFormat: '
            f'invalid TimeFormat: "{timeFormat}"\n{usage_}',
            2,
        )
    logLevel = given.get("logLevel", "info")
    if logLevel not in _GO_LOG_LEVELS:
        raise UsageExit(f"panic: unknown log level: {logLevel}\n", 2)
    for name, flag in flags.items():
        text = given.get(name)
        if flag.typeWord == "int" and isinstance(text, str):
            try:
                given[name] = str(int(text, 0))  # Go's base prefixes, for Options' int()
            except ValueError:
                raise UsageExit(
                    f'invalid value "{text}" for flag -{name}: parse error\n{usage_}', 2
                ) from None
    return Command(dict(given), flags)


def reexecArguments(command: Command) -> list[str]:
    """
    The flags the re-executed process gets: the given ones less the keys,
    as C{--name=value} (booleans C{=true}/C{=false}), as upstream writes them.
    """
    arguments = []
    for name, value in command.given.items():
        if name in KEY_FLAGS:
            continue
        text = str(value).lower() if isinstance(value, bool) else value
        arguments.append(f"--{name}={text}")
    return arguments


def reexecEnvironment(command: Command, environ: Mapping[str, str]) -> dict[str, str]:
    """
    C{environ} with the keys given as flags in upstream's variables, unless
    the caller set them (the variables win).
    """
    env = dict(environ)
    for flag, variable in KEY_FLAGS.items():
        value = command.given.get(flag)
        if isinstance(value, str) and value and not env.get(variable):
            env[variable] = value
    return env


def optionsArguments(command: Command) -> list[str]:
    """
    The command line for L{Options}: the given flags less the keys (which
    reach it through their variables), with upstream's algorithm lists for
    those left out or empty.
    """
    # not in the first process: diegossh.ssh.algorithms imports dataclasses
    from diegossh.ssh.algorithms import PINNED_UPSTREAM_DEFAULTS

    values = {name: value for name, value in command.given.items() if name not in KEY_FLAGS}
    for name, default in PINNED_UPSTREAM_DEFAULTS.items():
        if not values.get(name):
            values[name] = default
    return twistedArguments(ParsedFlags(values, []))


def optimizedBytecodeUsable(package: str = "twisted") -> bool:
    """
    Whether C{python -OO} would find C{package}'s optimized bytecode cached
    or could write it: otherwise every start would compile it all again.
    """
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return False
    cached = importlib.util.cache_from_source(spec.origin, optimization=2)
    if os.path.exists(cached):
        return True
    directory = os.path.dirname(cached)
    while not os.path.isdir(directory) and directory != os.path.dirname(directory):
        directory = os.path.dirname(directory)  # Python makes __pycache__ when it writes
    return not sys.dont_write_bytecode and os.access(directory, os.W_OK)


def daemonPrefix(
    prefix: list[str],
    frozen: bool | None = None,
    optimize: int | None = None,
    usable: Callable[[], bool] = optimizedBytecodeUsable,
) -> list[str]:
    """
    The interpreter and its options for the re-exec: C{prefix}
    (L{secretargs.programPrefix}) with C{-OO}, which drops docstrings from
    the modules loaded (1.8 MiB; asserts go too: ours and Twisted's check
    invariants only) (issue 15). Not for the one-file artifact (C{frozen},
    whose bundle has its own bytecode), nor when the caller gave C{-OO}
    already, nor when the optimized bytecode can be neither found nor
    written (a read-only install without it: compiling it at every start
    would cost more than it saves).
    """
    if frozen is None:
        frozen = bool(getattr(sys, "frozen", False))
    if optimize is None:
        optimize = sys.flags.optimize
    if frozen or optimize >= 2 or not usable():
        return list(prefix)
    return [prefix[0], "-OO", *prefix[1:]]


def run(
    arguments: Sequence[str],
    program: str,
    environ: MutableMapping[str, str],
    stdout: TextIO,
    stderr: TextIO,
    reactor: Any = None,
) -> int:
    """
    The whole life of the daemon; the exit code. Twisted and the SSH layer
    are imported only once the command line is read and the process has
    re-executed itself with the keys off its command line and glibc's malloc
    settings in its environment (L{diegossh.sshd.heap}; also when no key was
    on the command line, unless the caller set both settings)
    (L{diegossh.sshd.dropin}); without a C{reactor}, the global one.
    """
    try:
        command = parseCommand(arguments, program)
    except UsageExit as e:
        stderr.write(e.message)
        return e.code
    reexecuted = bool(environ.get(secretargs.REEXEC_MARK))
    if not reexecuted and (command.keysOnCommandLine or heap.missing(environ)):
        try:
            secretargs.reexec(
                [*daemonPrefix(secretargs.programPrefix()), *reexecArguments(command)],
                heap.withSettings(reexecEnvironment(command, environ)),
            )
        except OSError as e:
            from diegossh.sshd import dropin

            dropin.startLogging(command, stdout)
            dropin.logExecFailure(e)
            return 1
    restoreCallerEnvironment(environ)
    heap.forgetSettings(environ)
    from diegossh.sshd import lazyimports  # not in the first process: threading

    lazyimports.deferTwistedsStdlib()
    from diegossh.sshd import dropin

    return dropin.serve(command, program, environ, stdout, stderr, reactor)


# Imported only when they can be, and never needed by the daemon (issue 15):
#   - for TLS, which it never speaks: the standard library's ssl, by asyncio
#     (which Twisted's Deferred imports) and urllib (libssl and the module:
#     about 1.2 MiB), and pyOpenSSL, by Twisted's reactor (with
#     service_identity, cryptography.x509 and twisted.internet.ssl: 3.4 MiB
#     and about 50 ms). Without pyOpenSSL the daemon needs glibc's malloc
#     settings to keep its throughput (L{diegossh.sshd.heap});
#   - hashlib's OpenSSL backend, _hashlib, which maps the system's libcrypto
#     (3.4 MiB) beside the one linked into cryptography: hashlib and hmac fall
#     back to CPython's builtin hashes (kex hashes, fingerprints: a few short
#     inputs per connection); the packet MACs go through cryptography
#     (L{diegossh.ssh.packets});
#   - ctypes (with libffi: 0.5 MiB), which twisted.python.win32 imports at
#     start to look for Windows' WinError, absent on Linux either way;
#   - bz2's and lzma's C halves (with libbz2 and liblzma: 0.3 MiB), which
#     zipfile and shutil (twisted.plugin's, through twisted.python.zippath)
#     import when they can; the daemon opens no archive.
REFUSED_MODULES = ("ssl", "OpenSSL", "_hashlib", "ctypes", "_bz2", "_lzma")


def refuseUnneeded(
    modules: MutableMapping[str, Any] = sys.modules, keep: tuple[str, ...] = ()
) -> None:
    """
    Make C{import ssl} (L{REFUSED_MODULES}) fail in this process, as it
    would were Python built without it (a C{None} in C{sys.modules} is
    Python's documented way to refuse an import); the modules that import
    them do so only when they can. Only before Twisted is imported, and only
    in the daemon's own process, never in one that imported them already;
    C{keep} names those left importable.
    """
    for name in REFUSED_MODULES:
        if name not in keep:
            modules.setdefault(name, None)


def metricsWanted(args: list[str]) -> bool:
    """
    Whether the command line turns metrics on (C{-enableMetrics}): then
    C{ssl} stays importable, as C{prometheus_client} imports it.
    """
    for arg in args:
        name, _, value = arg.lstrip("-").partition("=")
        if name == "enableMetrics" and value.lower() not in ("false", "f", "0"):
            return True
    return False


def main() -> NoReturn:
    """
    The console script's entry point.
    """
    # prometheus_client (-enableMetrics) imports ssl; the rest stays refused
    refuseUnneeded(keep=("ssl",) if metricsWanted(sys.argv[1:]) else ())
    sys.exit(run(sys.argv[1:], sys.argv[0], os.environ, sys.stdout, sys.stderr))


if __name__ == "__main__":
    main()
