# -*- test-case-name: tests.test_proxy_config -*-
"""
The proxy's settings: upstream ssh-proxy's flags and JSON config keys, and
durations as Go writes them.

Every setting has a flag (camelCase, as upstream) and a JSON key
(snake_case, as upstream's config file); a flag given on the command line
wins over the file.

This module is the key table and the merge (flag -> value, each converted
by its kind); what the values mean, and whether they can work together, is
L{diegossh.proxy.settings}' business.
"""

from __future__ import annotations

import json
import re
from typing import Any

# flag name -> (JSON key, kind, default)
SETTINGS: dict[str, tuple[str, str, Any]] = {
    "address": ("address", "str", ":2222"),
    "hostKey": ("host_key", "str", None),
    "healthCheckAddress": ("health_check_address", "str", ":2223"),
    "disableHealthCheckServer": ("disable_health_check_server", "bool", False),
    "bbsAddress": ("bbs_address", "str", None),
    "bbsCACert": ("bbs_ca_cert", "str", None),
    "bbsClientCert": ("bbs_client_cert", "str", None),
    "bbsClientKey": ("bbs_client_key", "str", None),
    "lrpDirectory": ("lrp_directory", "str", None),
    "enableDiegoAuth": ("enable_diego_auth", "bool", False),
    "diegoCredentials": ("diego_credentials", "str", None),
    "enableCFAuth": ("enable_cf_auth", "bool", False),
    "ccAPIURL": ("cc_api_url", "str", None),
    "ccAPICACert": ("cc_api_ca_cert", "str", None),
    "uaaTokenURL": ("uaa_token_url", "str", None),
    "uaaUsername": ("uaa_username", "str", None),
    "uaaPassword": ("uaa_password", "str", None),
    "uaaCACert": ("uaa_ca_cert", "str", None),
    "skipCertVerify": ("skip_cert_verify", "bool", False),
    "communicationTimeout": ("communication_timeout", "duration", 10.0),
    "idleConnectionTimeout": ("idle_connection_timeout", "duration", 300.0),
    "connectToInstanceAddress": ("connect_to_instance_address", "bool", False),
    "backendsTLSEnabled": ("backends_tls_enabled", "bool", False),
    "backendsTLSCACertificates": ("backends_tls_ca_certificates", "str", None),
    "backendsTLSClientCertificate": ("backends_tls_client_certificate", "str", None),
    "backendsTLSClientPrivateKey": ("backends_tls_client_private_key", "str", None),
    "allowedCiphers": ("allowed_ciphers", "str", None),
    "allowedMACs": ("allowed_macs", "str", None),
    "allowedKeyExchanges": ("allowed_key_exchanges", "str", None),
    "allowedHostKeyAlgorithms": ("allowed_host_key_algorithms", "str", None),
    "accessLog": ("access_log", "str", None),
    "accessLogMaxBytes": ("access_log_max_bytes", "count", 100 * 1024 * 1024),
    "accessLogMaxFiles": ("access_log_max_files", "count", 5),
    "workers": ("workers", "count", 1),
    # Graceful drain on SIGTERM (docs/operations.md): upstream has none
    "drainTimeout": ("drain_timeout", "duration", 30.0),
    # Before login (docs/prelogin.md): OpenSSH's options, in its value syntax.
    "loginGraceTime": ("login_grace_time", "duration", 120.0),
    "maxAuthTries": ("max_auth_tries", "count", 6),
    "maxStartups": ("max_startups", "str", "100:30:300"),
    "perSourceMaxStartups": ("per_source_max_startups", "str", "60"),
    "perSourcePenalties": (
        "per_source_penalties",
        "str",
        "authfail:5s grace-exceeded:10s protocol:10s noauth:1s min:15s max:600s "
        "max-sources4:65536 max-sources6:65536",
    ),
    "perSourcePenaltyExemptList": ("per_source_penalty_exempt_list", "str", None),
    # Behind a load balancer (docs/operations.md): off, as upstream has none
    "proxyProtocol": ("proxy_protocol", "bool", False),
    "proxyProtocolTrusted": ("proxy_protocol_trusted", "str", None),
    # diego-logging-client's object (docs/loggregator.md); as a flag, JSON text
    "loggregator": ("loggregator", "object", None),
    # What the BOSH job's template renders besides (lager's and debugserver's
    # keys, and the BBS client's sizes): docs/cloudfoundry.md.
    "logLevel": ("log_level", "str", "info"),
    "timeFormat": ("time_format", "str", "unix-epoch"),
    "debugAddr": ("debug_address", "str", None),
    "bbsClientSessionCacheSize": ("bbs_client_session_cache_size", "size", None),
    "bbsMaxIdleConnsPerHost": ("bbs_max_idle_conns_per_host", "size", None),
    # Keys upstream dropped (Consul, the v1 UDP emitter): older templates
    # still write them; accepted, ignored, and warned about (DEPRECATED).
    "consulCluster": ("consul_cluster", "deprecated", None),
    "dropsondePort": ("dropsonde_port", "deprecated", None),
}

# flag -> why it is ignored, logged once at start-up when the key is set
DEPRECATED: dict[str, str] = {
    "consulCluster": "upstream dropped Consul; the BBS is found at bbs_address",
    "dropsondePort": "upstream dropped the v1 (UDP) emitter; see loggregator",
}

# The settings that are secrets -> the environment variable that also gives
# each. The rule for every secret S (JSON key s): a value from --S or the
# variable S_UPPER (the JSON key in upper case), or a path to a file holding
# it from --SFile, S_UPPER_FILE or the JSON key s_file (see
# L{secretFileSettings}); a flag given as --S is moved off the command line at
# start-up (L{diegossh.secretargs}). First found wins: --S, the variable, the
# file, the config file's s.
SECRETS: dict[str, str] = {
    "hostKey": "HOST_KEY",
    "diegoCredentials": "DIEGO_CREDENTIALS",
    "uaaPassword": "UAA_PASSWORD",
}
MAX_SECRET_FILE = 64 * 1024

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class ConfigError(ValueError):
    """
    A setting cannot be used; the message names it.
    """


def parseDuration(value: object, name: str = "duration") -> float:
    """
    Seconds from C{10s}, C{5m}, C{1m30s}, C{300ms}, or a bare number of seconds.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ConfigError(f"{name}: {value!r} is not a duration") from None
    else:
        raise ConfigError(f"{name}: {value!r} is not a duration")
    if seconds < 0:
        raise ConfigError(f"{name}: {value!r} is negative")
    return seconds


def _convert(flag: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "duration":
        return parseDuration(value, flag)
    if kind == "deprecated":
        return value  # any JSON value: it is only reported (DEPRECATED)
    if kind == "size":
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        if number is None or number < 0:
            raise ConfigError(f"{flag}: {value!r} is not a whole number")
        return number
    if kind == "count":
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        if number is None or number < 1:
            raise ConfigError(f"{flag}: {value!r} is not a whole number of at least 1")
        return number
    if kind == "object":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"{flag}: {value!r} is not JSON") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{flag}: {value!r} is not a JSON object")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{flag}: {value!r} is not true or false")
    if not isinstance(value, str):
        raise ConfigError(f"{flag}: {value!r} is not a string")
    return value


Settings = dict[str, tuple[str, str, Any]]


def loadConfigFile(path: str, known: Settings | None = None) -> dict[str, Any]:
    """
    Read upstream's JSON config; unknown keys are errors (a typo must not pass).
    """
    known = SETTINGS if known is None else known
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: not a JSON object")
    byKey = {key: flag for flag, (key, _, _) in known.items()}
    values: dict[str, Any] = {}
    for key, value in data.items():
        flag = byKey.get(key)
        if flag is None:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
        values[flag] = _convert(flag, known[flag][1], value)
    return values


def fromEnvironment(
    names: dict[str, str], environ: dict[str, str], known: Settings | None = None
) -> dict[str, Any]:
    """
    Settings given as environment variables: C{names} maps a variable to its
    flag. Empty variables count as not set, as a container runtime passes
    them.
    """
    known = SETTINGS if known is None else known
    values: dict[str, Any] = {}
    for variable, flag in names.items():
        raw = environ.get(variable)
        if raw:
            values[flag] = _convert(f"{variable} (--{flag})", known[flag][1], raw)
    return values


def merge(
    flags: dict[str, Any],
    configFile: str | None,
    known: Settings | None = None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    Settings from defaults, then the file, then the environment (settings
    that have a variable, see L{fromEnvironment}), then the flags given.
    """
    known = SETTINGS if known is None else known
    fromFile = loadConfigFile(configFile, known) if configFile else {}
    fromFile.update(environment or {})
    settings: dict[str, Any] = {}
    for flag, (_, kind, default) in known.items():
        given = flags.get(flag)
        if kind == "bool" and flag in (environment or {}) and not given:
            value = bool(environment[flag])  # type: ignore[index]
        elif kind == "bool":
            value = bool(given) or bool(fromFile.get(flag, default))
        elif given is not None:
            value = _convert(flag, kind, given)
        elif fromFile.get(flag) is not None:
            value = fromFile[flag]
        else:
            value = default
        settings[flag] = value
    return settings


def deprecatedGiven(settings: dict[str, Any]) -> dict[str, str]:
    """
    The deprecated settings that were set (by file, environment or flag),
    each with its JSON key and why it is ignored: C{{flag: "key: why"}}.
    """
    return {
        flag: f"{SETTINGS[flag][0]}: {why}"
        for flag, why in DEPRECATED.items()
        if settings.get(flag) is not None
    }


def secretFileSettings(secrets: dict[str, str], known: Settings) -> Settings:
    """
    The C{--SFile} settings (JSON C{s_file}) for each secret C{S} in C{known}.
    """
    return {f"{flag}File": (f"{known[flag][0]}_file", "str", None) for flag in secrets}


def secretEnvironment(secrets: dict[str, str]) -> dict[str, str]:
    """
    Environment variable -> flag, for each secret and its file: C{S_UPPER}
    gives C{--S}, C{S_UPPER_FILE} gives C{--SFile}.
    """
    names: dict[str, str] = {}
    for flag, variable in secrets.items():
        names[variable] = flag
        names[f"{variable}_FILE"] = f"{flag}File"
    return names


def readSecretFile(path: str, flag: str) -> str:
    """
    A secret from a file: its text, less trailing line ends; at most
    L{MAX_SECRET_FILE} bytes.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE + 1)
    except OSError as e:
        raise ConfigError(f"{flag}File: cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_SECRET_FILE:
        raise ConfigError(f"{flag}File: {path} is larger than {MAX_SECRET_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{flag}File: {path} is not UTF-8 text") from None
    text = text.rstrip("\r\n")
    if not text:
        raise ConfigError(f"{flag}File: {path} is empty")
    return text


def resolveSecrets(
    settings: dict[str, Any],
    flags: dict[str, Any],
    environment: dict[str, Any],
    secrets: dict[str, str],
) -> None:
    """
    Each secret from its file where neither its flag nor its variable gave it
    (L{merge} already chose flag, then variable, then config file).
    """
    for flag in secrets:
        path = settings.get(f"{flag}File")
        if flags.get(flag) is None and flag not in environment and path:
            settings[flag] = readSecretFile(path, flag)
