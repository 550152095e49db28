"""
The proxy's settings: upstream's flags and JSON keys, durations, precedence,
and what start-up refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.python import usage

from diegossh.proxy.config import ConfigError, loadConfigFile, merge, parseDuration
from diegossh.proxy.tap import Options


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
