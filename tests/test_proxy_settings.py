"""
The proxy's settings parsed once (L{diegossh.proxy.settings}): typed and
frozen, each refusal naming its flag, realm plugins handed a read-only view
and their own parsed settings, secrets out of the repr.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from twisted.python import usage

from diegossh.proxy import config as proxyConfig
from diegossh.proxy.cf.realm import CFSettings
from diegossh.proxy.realmplugins import CFRealmPlugin, DiegoRealmPlugin, DiegoSettings
from diegossh.proxy.settings import (
    AccessLogSettings,
    BackendTLSSettings,
    BBSSettings,
    ProxySettings,
    Refused,
    parseSettings,
)
from diegossh.proxy.tap import Options
from diegossh.ssh.admission import DEFAULT_PENALTIES, MaxStartups
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.flags import algorithmPolicy, named
from tests.fakes.tls import makeMutualTLS
from tests.support.keys import key


@dataclasses.dataclass(frozen=True)
class Recorded:
    path: str


class RecordingPlugin:
    """
    A realm plugin that keeps what C{parse} was handed and tries to change it.
    """

    name = "recording"
    usesDirectory = False

    def __init__(self) -> None:
        self.seen: Mapping[str, Any] | None = None
        self.writeRefused = False

    def parse(self, settings: Mapping[str, Any]) -> Recorded:
        self.seen = settings
        try:
            settings["address"] = "elsewhere:1"  # type: ignore[index]
        except TypeError:
            self.writeRefused = True
        return Recorded(str(settings["recordingPath"]))

    def build(self, reactor: Any, parsed: Recorded, directory: Any) -> Any:
        raise AssertionError("not built here")


def raw(**given: Any) -> dict[str, Any]:
    """
    The merged raw mapping with C{given} as flags, as C{merge} makes it.
    """
    return proxyConfig.merge(given, None)


def parsed(*requested: str, **given: Any) -> ProxySettings:
    installed = {"diego": DiegoRealmPlugin(), "cf": CFRealmPlugin()}
    return parseSettings(raw(**given), installed, requested)


DIEGO = {"enableDiegoAuth": True, "diegoCredentials": "s3cret", "lrpDirectory": "/lrps.json"}


def test_defaults_are_typed() -> None:
    settings = parsed(**DIEGO)
    assert settings.address == ":2222"
    assert settings.healthCheckAddress == ":2223"
    assert settings.policy == AlgorithmPolicy.fromOptions()
    assert settings.hostKey is None
    assert settings.lrpDirectory == "/lrps.json" and settings.bbs is None
    assert settings.backendTLS is None and settings.connectToInstanceAddress is False
    assert (settings.communicationTimeout, settings.idleConnectionTimeout) == (10.0, 300.0)
    assert (settings.loginGraceTime, settings.maxAuthTries) == (120.0, 6)
    assert settings.admission.maxStartups == MaxStartups(100, 30, 300)
    assert settings.admission.perSourceMaxStartups == 60
    assert settings.admission.penalties == DEFAULT_PENALTIES
    assert settings.accessLog == AccessLogSettings(None, 100 * 1024 * 1024, 5)
    assert (settings.workers, settings.inheritedListenFD) == (1, None)
    ((diego),) = settings.realms
    assert diego.name == "diego" and diego.parsed == DiegoSettings("s3cret")


def test_given_values_are_typed(tmp_path: Path) -> None:
    pem = key("p256").toString("openssh").decode()
    tls = makeMutualTLS(tmp_path)
    ca, crt, keyFile = str(tls.ca.certPath), str(tls.client.certPath), str(tls.client.keyPath)
    settings = parsed(
        **{**DIEGO, "lrpDirectory": None},
        bbsAddress="https://bbs:8889", bbsCACert=ca, bbsClientCert=crt, bbsClientKey=keyFile,
        backendsTLSEnabled=True, backendsTLSCACertificates=ca,
        disableHealthCheckServer=True, hostKey=pem, workers="3",
        allowedCiphers="aes128-gcm@openssh.com", accessLog=str(tmp_path / "a.json"),
    )  # fmt: skip
    assert settings.bbs == BBSSettings("https://bbs:8889", ca, crt, keyFile)
    assert settings.backendTLS == BackendTLSSettings(ca, None, None)
    assert settings.healthCheckAddress is None
    assert settings.hostKey == key("p256")
    assert settings.workers == 3
    assert settings.policy.ciphers == ("aes128-gcm@openssh.com",)
    assert settings.accessLog.path == str(tmp_path / "a.json")
    assert settings.usesDirectory


def test_settings_are_frozen() -> None:
    settings = parsed(**DIEGO)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.accessLog.maxFiles = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.admission.exempt = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.realms[0].parsed.credentials = "x"  # type: ignore[attr-defined]
    # a changed copy is a new value; the original stays
    worker = dataclasses.replace(settings, workers=1, inheritedListenFD=3, healthCheckAddress=None)
    assert (worker.inheritedListenFD, settings.inheritedListenFD) == (3, None)


def test_secrets_stay_out_of_the_repr() -> None:
    pem = key("ed25519").toString("openssh").decode()
    settings = parsed(
        **DIEGO, hostKey=pem, enableCFAuth=True, ccAPIURL="https://cc", uaaTokenURL="https://uaa",
        uaaUsername="ssh-proxy", uaaPassword="uaa-pw-77",
    )  # fmt: skip
    text = repr(settings)
    assert "s3cret" not in text and "uaa-pw-77" not in text
    assert "PRIVATE" not in text and "hostKey=" not in text
    assert [each.name for each in settings.realms] == ["diego", "cf"]
    cf = settings.realms[1].parsed
    assert isinstance(cf, CFSettings) and cf.uaaPassword == "uaa-pw-77"


@pytest.mark.parametrize(
    ("given", "flag"),
    [
        ({"address": "nowhere"}, "--address"),
        ({"healthCheckAddress": "localhost:http"}, "--healthCheckAddress"),
        ({"allowedCiphers": "rot13"}, "--allowedCiphers"),
        ({"allowedMACs": "crc32"}, "--allowedMACs"),
        ({"allowedKeyExchanges": "guess"}, "--allowedKeyExchanges"),
        ({"hostKey": "not a key"}, "--hostKey"),
        ({"maxStartups": "100:30:10"}, "--maxStartups"),
        ({"perSourceMaxStartups": "0"}, "--perSourceMaxStartups"),
        ({"perSourcePenalties": "crash:1s"}, "--perSourcePenalties"),
        ({"perSourcePenaltyExemptList": "lb"}, "--perSourcePenaltyExemptList"),
        ({"lrpDirectory": None}, "--bbsAddress"),
        ({"backendsTLSEnabled": True}, "--backendsTLSCACertificates"),
        (
            {"lrpDirectory": None, "bbsAddress": "https://bbs:8889"},
            "--bbsAddress needs --bbsCACert",
        ),
        (
            {"backendsTLSEnabled": True, "backendsTLSCACertificates": "/nonexistent/ca.pem"},
            "--backendsTLSCACertificates.*nonexistent",
        ),
        ({"diegoCredentials": None}, "--diegoCredentials"),
        ({"enableCFAuth": True}, "--ccAPIURL"),
    ],
)
def test_bad_values_name_the_flag(given: dict[str, Any], flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        parsed(**{**DIEGO, **given})


def test_bad_raw_values_name_the_flag() -> None:
    settings = {**raw(**DIEGO), "workers": 0}
    with pytest.raises(ValueError, match="--workers"):
        parseSettings(settings, {"diego": DiegoRealmPlugin()}, [])
    settings = {**raw(**DIEGO), "communicationTimeout": "soon"}
    with pytest.raises(ValueError, match="--communicationTimeout"):
        parseSettings(settings, {"diego": DiegoRealmPlugin()}, [])


def test_realms_are_named_and_known() -> None:
    with pytest.raises(ValueError, match="no auth realm enabled"):
        parsed(lrpDirectory="/lrps.json")
    with pytest.raises(ValueError, match="unknown realm 'nosuch'"):
        parsed("nosuch", lrpDirectory="/lrps.json")
    # a switch and --realm naming one realm enable it once
    assert len(parsed("diego", **DIEGO).realms) == 1


def test_a_plugin_parses_a_read_only_view() -> None:
    plugin = RecordingPlugin()
    settings = parseSettings(
        {**raw(), "recordingPath": "/etc/recorded"}, {"recording": plugin}, ["recording"]
    )
    assert isinstance(plugin.seen, MappingProxyType)
    assert plugin.writeRefused
    assert settings.address == ":2222"
    ((recording),) = settings.realms
    assert recording.plugin is plugin and recording.parsed == Recorded("/etc/recorded")
    assert not settings.usesDirectory  # the plugin needs none, and none is given


def test_options_build_the_settings_once() -> None:
    options = Options()
    options.parseOptions(["--enableDiegoAuth", "--diegoCredentials=x", "--lrpDirectory=/l.json"])
    assert isinstance(options["settings"], ProxySettings)
    with pytest.raises(usage.UsageError, match="--address"):
        Options().parseOptions(
            ["--enableDiegoAuth", "--diegoCredentials=x", "--lrpDirectory=/l", "--address=x"]
        )


def test_the_shared_helpers_name_the_flag() -> None:
    assert named("workers", int, "3") == 3
    with pytest.raises(ValueError, match=r"^--workers: invalid literal"):
        named("workers", int, "three")
    with pytest.raises(ValueError, match=r"^--allowedMACs: unknown MAC 'crc32'"):
        algorithmPolicy(None, "crc32", None)
    assert algorithmPolicy(None, None, None) == AlgorithmPolicy.fromOptions()


def test_the_bosh_jobs_logging_and_debug_settings() -> None:
    defaults = parsed(**DIEGO)
    assert (defaults.logLevel, defaults.timeFormat, defaults.debugAddress) == (
        "info", "unix-epoch", None,
    )  # fmt: skip
    assert defaults.deprecated == ()
    given = parsed(**DIEGO, logLevel="fatal", timeFormat="rfc3339", debugAddr="127.0.0.1:17016",
                   consulCluster="http://consul:8500")  # fmt: skip
    assert (given.logLevel, given.timeFormat, given.debugAddress) == (
        "fatal", "rfc3339", "127.0.0.1:17016",
    )  # fmt: skip
    (warning,) = given.deprecated
    assert warning.startswith("consul_cluster: ")


@pytest.mark.parametrize(
    ("given", "flag"),
    [({"logLevel": "loud"}, "logLevel"), ({"timeFormat": "iso"}, "timeFormat"),
     ({"debugAddr": "nowhere"}, "debugAddr")],
)  # fmt: skip
def test_bad_logging_and_debug_settings_name_the_flag(given: dict[str, Any], flag: str) -> None:
    with pytest.raises(ValueError, match=f"--{flag}"):
        parsed(**DIEGO, **given)


def test_the_bbs_client_sizes(tmp_path: Path) -> None:
    tls = makeMutualTLS(tmp_path)
    files = {"bbsCACert": str(tls.ca.certPath), "bbsClientCert": str(tls.client.certPath),
             "bbsClientKey": str(tls.client.keyPath)}  # fmt: skip
    bbs = {**DIEGO, "lrpDirectory": None, "bbsAddress": "https://bbs:8889", **files}
    sized = parsed(**bbs, bbsClientSessionCacheSize="64", bbsMaxIdleConnsPerHost="9").bbs
    assert sized is not None
    assert (sized.sessionCacheSize, sized.maxIdleConnsPerHost) == (64, 9)
    # 0, as in Go, is the library's default
    default = parsed(**bbs, bbsClientSessionCacheSize="0", bbsMaxIdleConnsPerHost="0").bbs
    assert default is not None
    assert (default.sessionCacheSize, default.maxIdleConnsPerHost) == (None, None)


def test_an_unparseable_host_key_is_upstreams_refusal() -> None:
    with pytest.raises(Refused, match="--hostKey") as refused:
        parsed(**DIEGO, hostKey="-----BEGIN RSA PRIVATE KEY-----\ngarbage\n")
    assert refused.value.lager == "failed-to-parse-host-key"


def test_the_bbs_pool_keeps_the_configured_idle_connections(tmp_path: Path) -> None:
    from twisted.internet.testing import MemoryReactorClock

    from diegossh.proxy.pools import PoolService
    from diegossh.proxy.tap import _directory

    tls = makeMutualTLS(tmp_path)
    bbs = {**DIEGO, "lrpDirectory": None, "bbsAddress": "https://bbs:8889",
           "bbsCACert": str(tls.ca.certPath), "bbsClientCert": str(tls.client.certPath),
           "bbsClientKey": str(tls.client.keyPath)}  # fmt: skip
    for given, kept in ((None, 2), ("9", 9)):
        pools = PoolService(MemoryReactorClock())
        _directory(MemoryReactorClock(), parsed(**bbs, bbsMaxIdleConnsPerHost=given), pools)
        (pool,) = pools.pools
        assert pool.maxPersistentPerHost == kept


def test_the_debug_listener_is_the_parents_alone(tmp_path: Path) -> None:
    """
    With --workers, the children rebuild the parent's settings (debugAddr
    included) and must not each try to bind the debug address.
    """
    from diegossh.proxy.tap import makeService

    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    options = Options()
    options.parseOptions(["--enableDiegoAuth", "--diegoCredentials=x",
                          f"--lrpDirectory={table}", "--debugAddr=127.0.0.1:17016"])  # fmt: skip
    names = [service.name for service in makeService(options)]  # type: ignore[attr-defined]
    assert "debug-server" in names
    options["settings"] = dataclasses.replace(options["settings"], inheritedListenFD=99)
    names = [service.name for service in makeService(options)]  # type: ignore[attr-defined]
    assert "debug-server" not in names
