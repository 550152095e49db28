# -*- test-case-name: tests.test_lrptable -*-
"""
The local LRP directory: format validation, lookups, and reloading on change.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from diegossh.interfaces import ILRPDirectory
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.lrptable import LRPTable, LRPTableError, parseLRPTable
from diegossh.proxy.target import LRPTarget

DOC = Path(__file__).parent.parent / "docs" / "lrp-directory.md"


def _table(**overrides: Any) -> dict[str, Any]:
    lrp: dict[str, Any] = {
        "process_guid": "web",
        "log_guid": "log-web",
        "routes": {
            "diego-ssh": {"container_port": 2222, "user": "vcap", "password": "s3cret"},
            "cf-router": [{"hostnames": ["x"]}],
        },
        "metric_tags": {"app": {"static": "a1"}, "idx": {"dynamic": "INDEX"}},
        "instances": [
            {
                "index": 0,
                "instance_guid": "i-0",
                "cell_id": "cell-0",
                "address": "10.0.0.1",
                "instance_address": "10.255.0.1",
                "ports": [
                    {"container_port": 8080, "host_port": 61000},
                    {
                        "container_port": 2222,
                        "host_port": 61001,
                        "container_tls_proxy_port": 61443,
                        "host_tls_proxy_port": 61002,
                    },
                ],
            },
            {"index": 1, "instance_guid": "i-1", "host": "127.0.0.1", "port": 2223},
        ],
    }
    lrp.update(overrides)
    return {"lrps": [lrp]}


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def _result(d: Deferred[LRPTarget]) -> LRPTarget:
    box: list[Any] = []
    d.addBoth(box.append)
    [result] = box
    if isinstance(result, Failure):
        result.raiseException()
    assert isinstance(result, LRPTarget)
    return result


def _denied(d: Deferred[LRPTarget]) -> str:
    with pytest.raises(LoginDenied) as info:
        _result(d)
    return info.value.reason


def test_provides_interface(tmp_path: Path) -> None:
    assert verifyObject(ILRPDirectory, LRPTable(_write(tmp_path / "t.json", _table())))


def test_lookup_bbs_shaped(tmp_path: Path) -> None:
    table = LRPTable(_write(tmp_path / "t.json", _table()))
    target = _result(table.lookup("web", 0))
    assert (target.host, target.port, target.tls_port) == ("10.0.0.1", 61001, None)
    assert target.instance_guid == target.tls_server_name == "i-0"
    assert target.route.user == "vcap" and target.route.password == "s3cret"
    assert (target.log_guid, target.cell_id) == ("log-web", "cell-0")
    assert target.metric_tags == {"app": "a1", "idx": "0"}


def test_lookup_modes(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.json", _table())
    instance = _result(LRPTable(path, connectToInstanceAddress=True).lookup("web", 0))
    assert (instance.host, instance.port) == ("10.255.0.1", 2222)
    tls = _result(LRPTable(path, backendsTLSEnabled=True).lookup("web", 0))
    assert tls.tls_port == 61002


def test_lookup_direct(tmp_path: Path) -> None:
    table = LRPTable(_write(tmp_path / "t.json", _table()), connectToInstanceAddress=True)
    target = _result(table.lookup("web", 1))
    assert (target.host, target.port, target.tls_port) == ("127.0.0.1", 2223, None)
    assert target.metric_tags["idx"] == "1"


def test_not_found(tmp_path: Path) -> None:
    table = LRPTable(_write(tmp_path / "t.json", _table()))
    assert _denied(table.lookup("web", 7)) == "no instance 7 of process web"
    assert _denied(table.lookup("other", 0)) == "no instance 0 of process other"


def test_missing_route_denies_at_lookup(tmp_path: Path) -> None:
    table = LRPTable(_write(tmp_path / "t.json", _table(routes={})))
    assert "no diego-ssh route" in _denied(table.lookup("web", 0))


def test_no_port_mapping_denies_at_lookup(tmp_path: Path) -> None:
    document = _table()
    document["lrps"][0]["routes"]["diego-ssh"]["container_port"] = 2200
    table = LRPTable(_write(tmp_path / "t.json", document))
    reason = _denied(table.lookup("web", 0))
    assert reason == "the instance has no port mapping for the ssh container port 2200"


def test_documented_example_is_valid() -> None:
    text = DOC.read_text()
    match = re.search(r"```json\n(.*?)```", text, re.S)
    assert match
    table = parseLRPTable(match.group(1), "doc")
    assert set(table) == {("0a1b2c3d-web", 0), ("0a1b2c3d-web", 1)}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("lrps"), "doc: missing field(s) lrps"),
        (lambda d: d.update(extra=1), "doc: unknown field(s) extra"),
        (lambda d: d["lrps"][0].pop("process_guid"), "lrps[0]: missing field(s) process_guid"),
        (lambda d: d["lrps"][0].update(process_guid=""), "lrps[0].process_guid: must not be"),
        (lambda d: d["lrps"][0].update(instances={}), "lrps[0].instances: must be a JSON array"),
        (
            lambda d: d["lrps"][0]["instances"][0].update(index=-1),
            "lrps[0].instances[0].index: must be an integer from 0 to 2147483647",
        ),
        (
            lambda d: d["lrps"][0]["instances"][0].update(index=True),
            "lrps[0].instances[0].index: must be an integer",
        ),
        (
            lambda d: d["lrps"][0]["instances"][0]["ports"][1].update(host_port=70000),
            "lrps[0].instances[0].ports[1].host_port: must be an integer from 0 to 65535",
        ),
        (
            lambda d: d["lrps"][0]["instances"][0]["ports"][0].pop("container_port"),
            "lrps[0].instances[0].ports[0]: missing field(s) container_port",
        ),
        (
            lambda d: d["lrps"][0]["instances"][0].update(preferred_address="CELL"),
            "preferred_address: must be UNKNOWN, INSTANCE or HOST",
        ),
        (
            lambda d: d["lrps"][0]["instances"][1].update(address="x"),
            "lrps[0].instances[1]: host/port cannot be combined with address",
        ),
        (
            lambda d: d["lrps"][0]["instances"][1].pop("port"),
            "lrps[0].instances[1]: host and port go together",
        ),
        (
            lambda d: d["lrps"][0]["instances"][1].pop("instance_guid"),
            "lrps[0].instances[1]: missing field(s) instance_guid",
        ),
        (
            lambda d: d["lrps"][0]["instances"][1].update(index=0),
            "instance 0 of web is listed twice",
        ),
        (
            lambda d: d["lrps"][0]["routes"]["diego-ssh"].pop("container_port"),
            "lrps[0].routes.diego-ssh: invalid diego-ssh route: container_port is missing",
        ),
        (
            lambda d: d["lrps"][0]["metric_tags"].update(x={"dynamic": "CELL"}),
            "lrps[0].metric_tags.x.dynamic: must be INDEX or INSTANCE_GUID",
        ),
    ],
)
def test_validation(mutate: Any, message: str) -> None:
    document = _table()
    mutate(document)
    with pytest.raises(LRPTableError) as info:
        parseLRPTable(json.dumps(document), "doc")
    assert message in str(info.value)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(LRPTableError, match="cannot read"):
        LRPTable(tmp_path / "missing.json")
    with pytest.raises(LRPTableError, match="not valid JSON"):
        LRPTable(_write(tmp_path / "t.json", "{oops"))


def _touch(path: Path, document: object) -> None:
    """Rewrite and move the mtime on, so a same-second edit is seen."""
    before = path.stat().st_mtime_ns
    _write(path, document)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_reload_on_change(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.json", _table())
    table = LRPTable(path)
    assert _result(table.lookup("web", 0)).port == 61001
    _touch(path, _table(process_guid="api"))
    assert _denied(table.lookup("web", 0)) == "no instance 0 of process web"
    assert _result(table.lookup("api", 0)).port == 61001


def test_broken_edit_keeps_previous_table(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.json", _table())
    table = LRPTable(path)
    _touch(path, "{broken")
    assert _result(table.lookup("web", 0)).port == 61001
    path.unlink()
    assert _result(table.lookup("web", 0)).port == 61001
    _write(path, _table(process_guid="api"))
    assert _result(table.lookup("api", 1)).port == 2223
