"""
The proxy's settings: upstream's flags and JSON keys, durations, precedence,
and what start-up refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.python import usage

from diegossh.goflags import FlagError, parseGoFlags, twistedArguments
from diegossh.proxy.config import (
    ConfigError,
    deprecatedGiven,
    loadConfigFile,
    merge,
    parseDuration,
)
from diegossh.proxy.script import BOOLEAN_FLAGS, VALUE_FLAGS
from diegossh.proxy.tap import Options, Refusal


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("5m", 300.0), ("1m30s", 90.0), ("300ms", 0.3), ("2h", 7200.0),
     ("1.5", 1.5), (7, 7.0), ("0", 0.0)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parseDuration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "ten", "10x", "-5s", "5s junk", True, None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ConfigError):
        parseDuration(bad)


def test_file_keys_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "address": "127.0.0.1:2000", "enable_diego_auth": True, "diego_credentials": "from-file",
        "communication_timeout": "3s", "idle_connection_timeout": "0",
    }))  # fmt: skip
    settings = merge({"diegoCredentials": "from-flag"}, str(path))
    assert settings["address"] == "127.0.0.1:2000"
    assert settings["diegoCredentials"] == "from-flag"
    assert settings["enableDiegoAuth"] is True
    assert settings["communicationTimeout"] == 3.0
    assert settings["idleConnectionTimeout"] == 0.0
    assert settings["healthCheckAddress"] == ":2223"


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"adress": ":2222"}))
    with pytest.raises(ConfigError, match="adress"):
        loadConfigFile(str(path))


def options(*args: str) -> Options:
    o = Options()
    o.parseOptions(list(args))
    return o


def test_start_up_refusals(tmp_path: Path) -> None:
    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    with pytest.raises(usage.UsageError, match="no auth realm"):
        options(f"--lrpDirectory={table}")
    with pytest.raises(usage.UsageError, match="diegoCredentials"):
        options("--enableDiegoAuth", f"--lrpDirectory={table}")
    with pytest.raises(usage.UsageError, match="bbsAddress"):
        options("--enableDiegoAuth", "--diegoCredentials=x")
    with pytest.raises(usage.UsageError, match="ccAPIURL"):
        options("--enableCFAuth", f"--lrpDirectory={table}")
    with pytest.raises(usage.UsageError, match="rot13"):
        options("--enableDiegoAuth", "--diegoCredentials=x", f"--lrpDirectory={table}",
                "--allowedCiphers=rot13")  # fmt: skip
    with pytest.raises(usage.UsageError, match="not a duration"):
        options("--enableDiegoAuth", "--diegoCredentials=x", f"--lrpDirectory={table}",
                "--communicationTimeout=soon")  # fmt: skip
    ok = options("--enableDiegoAuth", "--diegoCredentials=x", f"--lrpDirectory={table}")
    assert ok["settings"].address == ":2222"


# What the BOSH job's template renders (docs/cloudfoundry.md), besides the
# keys above; `loggregator` is tested with its emitter.
TEMPLATE_KEYS = {
    "log_level": "debug",
    "time_format": "rfc3339",
    "debug_address": "127.0.0.1:17016",
    "bbs_client_session_cache_size": 0,
    "bbs_max_idle_conns_per_host": 7,
    "skip_cert_verify": False,
    "cc_api_ca_cert": "/var/vcap/jobs/ssh_proxy/config/certs/cc/cc_api_ca_cert.crt",
}


def test_the_templates_keys_are_known(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TEMPLATE_KEYS))
    values = loadConfigFile(str(path))
    assert values["logLevel"] == "debug" and values["timeFormat"] == "rfc3339"
    assert values["debugAddr"] == "127.0.0.1:17016"
    assert values["bbsClientSessionCacheSize"] == 0
    assert values["bbsMaxIdleConnsPerHost"] == 7
    defaults = merge({}, None)
    assert (defaults["logLevel"], defaults["timeFormat"], defaults["debugAddr"]) == (
        "info", "unix-epoch", None,
    )  # fmt: skip


@pytest.mark.parametrize("bad", [-1, "many", 1.5, True])
def test_sizes_are_whole_numbers(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"bbs_max_idle_conns_per_host": bad}))
    with pytest.raises(ConfigError, match="bbsMaxIdleConnsPerHost"):
        loadConfigFile(str(path))


def test_dropped_keys_are_accepted_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"consul_cluster": "http://127.0.0.1:8500", "dropsonde_port": 3457}))
    settings = merge({}, str(path))
    reported = deprecatedGiven(settings)
    assert set(reported) == {"consulCluster", "dropsondePort"}
    assert reported["consulCluster"].startswith("consul_cluster: ")
    assert reported["dropsondePort"].startswith("dropsonde_port: ")
    assert deprecatedGiven(merge({}, None)) == {}


def test_an_unknown_key_beside_the_templates_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TEMPLATE_KEYS, "log_levle": "info"}))
    with pytest.raises(ConfigError, match="log_levle"):
        loadConfigFile(str(path))


def test_go_flags_reach_the_same_options(tmp_path: Path) -> None:
    """
    The ssh-proxy script's Go-syntax command line and twistd's give the
    same settings; secrets are not flags there.
    """
    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"diego_credentials": "x", "lrp_directory": str(table)}))
    goStyle = parseGoFlags(
        [f"-config={config}", "-enableDiegoAuth", "--debugAddr", "127.0.0.1:17016",
         "-logLevel=error", "-skipCertVerify=false", "-bbsMaxIdleConnsPerHost=5"],
        VALUE_FLAGS, BOOLEAN_FLAGS,
    )  # fmt: skip
    fromGo = options(*twistedArguments(goStyle))["settings"]
    fromTwistd = options(
        f"--config={config}", "--enableDiegoAuth", "--debugAddr=127.0.0.1:17016",
        "--logLevel=error", "--bbsMaxIdleConnsPerHost=5",
    )["settings"]  # fmt: skip
    assert fromGo == fromTwistd
    assert fromGo.debugAddress == "127.0.0.1:17016" and fromGo.logLevel == "error"
    assert "hostKey" not in VALUE_FLAGS and "hostKeyFile" in VALUE_FLAGS
    with pytest.raises(FlagError, match="-hostKey"):
        parseGoFlags(["-hostKey=PEM"], VALUE_FLAGS, BOOLEAN_FLAGS)


def test_refusals_carry_upstreams_message_names(tmp_path: Path) -> None:
    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"no_such_key": 1}))
    diego = ("--enableDiegoAuth", "--diegoCredentials=x")
    cases = {
        "failed-to-parse-config": (f"--config={config}",),
        "failed-to-parse-host-key": (*diego, f"--lrpDirectory={table}", "--hostKey=garbage"),
        "bbs-address-required": diego,
        "failed-to-initialize-metron-client": (
            *diego,
            f"--lrpDirectory={table}",
            '--loggregator={"loggregator_usev2": true}',
        ),
        None: (*diego, f"--lrpDirectory={table}", "--allowedCiphers=rot13"),
    }
    for name, args in cases.items():
        with pytest.raises(Refusal) as refused:
            options(*args)
        assert refused.value.lager == name, args


def test_the_rendered_example_is_known_key_for_key() -> None:
    """
    docs/examples/ssh_proxy.json (the BOSH job's config, every key): no key
    is unknown to twistd's options or the ssh-proxy script (started for
    real in tests/test_proxy_dropin.py).
    """
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "ssh_proxy.json"
    values = loadConfigFile(str(example))
    assert values["debugAddr"] == "127.0.0.1:17016" and values["logLevel"] == "info"
    assert values["loggregator"]["loggregator_use_v2_api"] is True


def test_the_ssh_proxy_script_defaults_to_upstreams_pinned_lists(tmp_path: Path) -> None:
    """
    C{ssh-proxy} replaces upstream's binary, so a list neither given nor in
    the config file (or given empty, as the BOSH job renders an unset
    property) is the pinned diego-ssh's, chacha20 first; twistd keeps ours;
    a list the file gives wins over both.
    """
    from diegossh.ssh.algorithms import PINNED_UPSTREAM_DEFAULTS, AlgorithmPolicy

    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    config = tmp_path / "ssh_proxy.json"
    config.write_text(json.dumps({"allowed_ciphers": "", "allowed_macs": "hmac-sha2-256"}))
    base = ("--enableDiegoAuth", "--diegoCredentials=x", f"--lrpDirectory={table}")

    def policy(defaults: dict[str, str], *args: str) -> AlgorithmPolicy:
        o = Options()
        o.algorithmDefaults = defaults
        o.parseOptions([*base, *args])
        return o["settings"].policy  # type: ignore[no-any-return]

    script = policy(PINNED_UPSTREAM_DEFAULTS, f"--config={config}")
    assert ",".join(script.ciphers) == PINNED_UPSTREAM_DEFAULTS["allowedCiphers"]
    assert script.ciphers[0] == "chacha20-poly1305@openssh.com"
    assert script.macs == ("hmac-sha2-256",)  # the file's
    assert ",".join(script.keyExchanges) == PINNED_UPSTREAM_DEFAULTS["allowedKeyExchanges"]
    assert policy({}, f"--config={config}").ciphers == AlgorithmPolicy.fromOptions().ciphers
    given = policy(PINNED_UPSTREAM_DEFAULTS, "--allowedCiphers=aes256-ctr")
    assert given.ciphers == ("aes256-ctr",)
