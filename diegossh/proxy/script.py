# -*- test-case-name: tests.test_proxy_config,tests.test_proxy_dropin -*-
"""
C{ssh-proxy}: the proxy as upstream's executable, for the BOSH job's
command line (C{ssh-proxy -config=/var/vcap/jobs/ssh_proxy/config/ssh_proxy.json}).

The same options as C{twistd diego-ssh-proxy} (L{diegossh.proxy.tap.Options},
one key table, one frozen L{ProxySettings}) and the same service tree
(C{tap.makeService}); what differs is only what an operator of a Cloud
Foundry deployment sees:

  - flags in Go's syntax (L{diegossh.goflags}): C{-config=FILE},
    C{-debugAddr=HOST:PORT}, and every other setting by its flag name;
  - the process stays in the foreground, no pid file, no daemon; SIGTERM
    drains (L{diegossh.proxy.drain}) and SIGINT does not, then the service
    tree stops in order and the exit status is 0;
  - logs are lager JSON lines on stdout (L{diegossh.lager}), source
    C{ssh-proxy}, at C{log_level} with C{time_format}: C{ssh-proxy.started}
    once every listener is bound, C{ssh-proxy.exited} at the end;
  - start-up refusals are upstream's lines: a fatal C{failed-to-parse-config},
    C{failed-to-parse-host-key} or C{bbs-address-required} (exit 2, as Go's
    panic after C{lager.Fatal}), or an error C{configure-failed} (exit 1).

Secrets are not taken as flags here (upstream takes none either): a flag on
a command line is readable by every local user in C{ps}. They come from the
config file, the environment (C{HOST_KEY}, ...) or a file (C{-hostKeyFile}).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, IServiceCollection
from twisted.logger import Logger, globalLogBeginner
from twisted.python import usage

from diegossh.goflags import FlagError, ParsedFlags, parseGoFlags, twistedArguments
from diegossh.lager import LEVELS, LagerObserver, parseLogLevel, parseTimeFormat
from diegossh.proxy import tap
from diegossh.ssh.algorithms import PINNED_UPSTREAM_DEFAULTS

__all__ = ["BOOLEAN_FLAGS", "FATAL", "VALUE_FLAGS", "main", "run"]

SOURCE = "ssh-proxy"

#: Upstream's fatal start-up refusals (C{lager.Fatal}, then Go's panic: exit 2).
FATAL = frozenset(
    {
        "failed-to-parse-config",
        "failed-to-parse-host-key",
        "host-key-required",
        "bbs-address-required",
        "failed-to-parse-bbs-address",
    }
)

VALUE_FLAGS = frozenset(
    ["config", "realm"]
    + [
        flag
        for flag, (_, kind, _) in tap._SETTINGS.items()
        if kind != "bool" and flag not in tap._SECRETS
    ]
)
BOOLEAN_FLAGS = frozenset(flag for flag, (_, kind, _) in tap._SETTINGS.items() if kind == "bool")

_log = Logger(namespace="ssh-proxy")


def _writer(stdout: TextIO) -> Callable[[str], None]:
    def write(line: str) -> None:
        stdout.write(line)
        stdout.flush()

    return write


def _listeners(service: IService) -> list[StreamServerEndpointService]:
    """
    Every endpoint listener in the tree, to have their bind failures raised
    by C{startService} (Twisted's C{_raiseSynchronously}, as twistd does not
    do for us here) rather than logged while the process goes on unbound.
    """
    found = []
    if isinstance(service, StreamServerEndpointService):
        found.append(service)
    if IServiceCollection.providedBy(service):
        for child in service:
            found += _listeners(child)
    return found


def _refuse(name: str, error: object) -> int:
    """
    Log a start-up refusal as upstream's lager line; the exit status for it.
    """
    if name == "failed-to-parse-host-key":
        _log.error("{error}", error=str(error), lager="failed-to-parse-private-key",
                   lager_data={"error": str(error)})  # fmt: skip
    fatal = name in FATAL
    emit = _log.critical if fatal else _log.error
    emit("{error}", error=str(error), lager=name, lager_data={"error": str(error)})
    return 2 if fatal else 1


def _loggingOf(parsed: ParsedFlags) -> tuple[int, str]:
    """
    The lager level and time format for a refusal: what the flags and the
    config file say when they can be read (upstream's logger is configured
    from the file once it parsed), else lager's defaults (info, epoch).
    """
    given: dict[str, Any] = {}
    path = parsed.values.get("config")
    if isinstance(path, str):
        try:
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
            if isinstance(loaded, dict):
                given = {
                    "logLevel": loaded.get("log_level"),
                    "timeFormat": loaded.get("time_format"),
                }
        except (OSError, ValueError):
            pass
    given.update({flag: parsed.values[flag] for flag in ("logLevel", "timeFormat")
                  if flag in parsed.values})  # fmt: skip
    try:
        level = parseLogLevel(str(given.get("logLevel") or "info"))
        timeFormat = parseTimeFormat(str(given.get("timeFormat") or "unix-epoch"))
    except ValueError:
        return LEVELS["info"], "unix-epoch"
    return level, timeFormat


def run(reactor: Any, argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> int:
    """
    Parse C{argv} (without the program name), build the proxy's service tree
    and run C{reactor} until a signal stops it; the exit status.
    """
    try:
        parsed = parseGoFlags(argv, VALUE_FLAGS, BOOLEAN_FLAGS)
    except FlagError as e:
        hint = ""
        for secret, variable in tap._SECRETS.items():
            if str(e).endswith(f" -{secret}"):
                hint = (
                    " (a secret is not taken on the command line, where ps shows it: give it"
                    f" in the config file, as {variable} or with -{secret}File)"
                )
        stderr.write(f"{e}{hint}\nUsage of ssh-proxy: -config=FILE [-name=value ...]\n")
        stderr.flush()
        return 2
    options = tap.Options()
    options.algorithmDefaults = PINNED_UPSTREAM_DEFAULTS  # the binary this replaces
    try:
        options.parseOptions(twistedArguments(parsed))
    except usage.UsageError as e:
        level, timeFormat = _loggingOf(parsed)
        globalLogBeginner.beginLoggingTo(
            [LagerObserver(_writer(stdout), SOURCE, level, timeFormat)], redirectStandardIO=False
        )
        return _refuse(getattr(e, "lager", None) or "configure-failed", e)
    settings = options["settings"]
    observer = LagerObserver(
        _writer(stdout), SOURCE, LEVELS[settings.logLevel], settings.timeFormat
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    options["logLevelControl"] = observer
    try:
        service = tap.makeService(options)
    except (ValueError, OSError) as e:
        return _refuse("configure-failed", e)
    for listener in _listeners(service):
        listener._raiseSynchronously = True
    status = [0]

    def start() -> None:
        try:
            service.privilegedStartService()
            service.startService()
        except Exception as e:
            status[0] = _refuse("exited-with-failure", e)
            reactor.stop()
            return
        _log.info("started", lager="started", lager_data={})

    def stop() -> Any:
        if service.running:
            return service.stopService()
        return None

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    if status[0] == 0:
        _log.info("exited", lager="exited", lager_data={})
    return status[0]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The console script: C{ssh-proxy [-config=FILE] [-name=value ...]}.
    """
    from twisted.internet import reactor

    args = sys.argv[1:] if argv is None else argv
    sys.exit(run(reactor, args, sys.stdout, sys.stderr))
