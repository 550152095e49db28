# -*- test-case-name: tests.test_target -*-
"""
The route parser and the address rule (docs/bbs.md, "Which address is dialled").
"""

from __future__ import annotations

import json

import pytest

from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.target import (
    DialAddress,
    NetInfo,
    PortMapping,
    PreferredAddress,
    SSHRoute,
    buildTarget,
    chooseAddress,
    resolveMetricTag,
)

NET = NetInfo(
    address="10.0.0.5",
    instance_address="10.255.0.9",
    ports=(PortMapping(8080, 61000, 61443, 61001), PortMapping(2222, 61002, 61444, 61003)),
)


def test_login_denied_reason() -> None:
    e = LoginDenied("no such app")
    assert e.reason == str(e) == "no such app"


def test_route_parsed() -> None:
    raw = json.dumps(
        {
            "container_port": 2222,
            "host_fingerprint": "a1:b2",
            "user": "vcap",
            "password": "secret-pw",
            "private_key": "-----BEGIN KEY-----",
            "extra": "ignored",
        }
    )
    route = SSHRoute.fromJSON(raw)
    assert route == SSHRoute(2222, "a1:b2", "vcap", "secret-pw", "-----BEGIN KEY-----")
    assert SSHRoute.fromJSON(b'{"container_port": 1, "user": null}').user == ""


def test_secrets_never_in_repr() -> None:
    route = SSHRoute(2222, user="vcap", password="secret-pw", private_key="PRIVATE")
    target = buildTarget(
        "g",
        0,
        "i",
        NET,
        route,
        connectToInstanceAddress=False,
        backendsTLSEnabled=False,
    )
    for text in (repr(route), str(route), repr(target), str(target)):
        assert "secret-pw" not in text and "PRIVATE" not in text
    assert "vcap" in repr(route)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{nope", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b"{}", "container_port is missing"),
        (b'{"container_port": "2222"}', "container_port is not a port"),
        (b'{"container_port": true}', "container_port is not a port"),
        (b'{"container_port": 0}', "container_port is not a port"),
        (b'{"container_port": 70000}', "container_port is not a port"),
        (b'{"container_port": 22, "user": 5}', "user must be a string"),
    ],
)
def test_bad_route(raw: bytes, message: str) -> None:
    with pytest.raises(LoginDenied) as info:
        SSHRoute.fromJSON(raw)
    assert message in info.value.reason
    assert info.value.reason.startswith("invalid diego-ssh route")


def test_route_from_routes() -> None:
    assert SSHRoute.fromRoutes({"diego-ssh": b'{"container_port": 22}'}).container_port == 22
    with pytest.raises(LoginDenied, match="no diego-ssh route"):
        SSHRoute.fromRoutes({"cf-router": b"[]"})


@pytest.mark.parametrize(
    ("preferred", "instanceFlag", "tls", "expected"),
    [
        (PreferredAddress.UNKNOWN, False, False, DialAddress("10.0.0.5", 61002)),
        (PreferredAddress.UNKNOWN, True, False, DialAddress("10.255.0.9", 2222)),
        (PreferredAddress.UNKNOWN, False, True, DialAddress("10.0.0.5", 61002, 61003)),
        (PreferredAddress.UNKNOWN, True, True, DialAddress("10.255.0.9", 2222, 61444)),
        (PreferredAddress.INSTANCE, False, False, DialAddress("10.255.0.9", 2222)),
        (PreferredAddress.INSTANCE, False, True, DialAddress("10.255.0.9", 2222, 61444)),
        (PreferredAddress.HOST, True, False, DialAddress("10.0.0.5", 61002)),
        (PreferredAddress.HOST, True, True, DialAddress("10.0.0.5", 61002, 61003)),
    ],
)
def test_choose_address(
    preferred: PreferredAddress, instanceFlag: bool, tls: bool, expected: DialAddress
) -> None:
    net = NetInfo(NET.address, NET.instance_address, NET.ports, preferred)
    got = chooseAddress(net, 2222, connectToInstanceAddress=instanceFlag, backendsTLSEnabled=tls)
    assert got == expected


def test_tls_without_proxy_port_is_denied_never_clear() -> None:
    # Unlike upstream: with backend TLS on, no silent fallback to plain TCP.
    net = NetInfo("10.0.0.5", "10.255.0.9", (PortMapping(2222, 61002),))
    with pytest.raises(LoginDenied, match="no TLS port"):
        chooseAddress(net, 2222, connectToInstanceAddress=False, backendsTLSEnabled=True)


def test_no_port_mapping() -> None:
    with pytest.raises(LoginDenied) as info:
        chooseAddress(NET, 2200, connectToInstanceAddress=False, backendsTLSEnabled=False)
    assert info.value.reason == "the instance has no port mapping for the ssh container port 2200"


def test_missing_addresses() -> None:
    hostless = NetInfo("", "10.255.0.9", NET.ports)
    with pytest.raises(LoginDenied, match="no host address"):
        chooseAddress(hostless, 2222, connectToInstanceAddress=False, backendsTLSEnabled=False)
    instanceless = NetInfo("10.0.0.5", "", NET.ports)
    with pytest.raises(LoginDenied, match="no instance address"):
        chooseAddress(instanceless, 2222, connectToInstanceAddress=True, backendsTLSEnabled=False)
    unmapped = NetInfo("10.0.0.5", "", (PortMapping(2222, 0),))
    with pytest.raises(LoginDenied, match="no host address"):
        chooseAddress(unmapped, 2222, connectToInstanceAddress=False, backendsTLSEnabled=False)


def test_build_target() -> None:
    target = buildTarget(
        "proc",
        3,
        "inst-3",
        NET,
        SSHRoute(2222, user="vcap"),
        connectToInstanceAddress=False,
        backendsTLSEnabled=True,
        logGuid="log",
        cellId="cell",
        metricTags={"a": "b"},
    )
    assert (target.process_guid, target.index, target.instance_guid) == ("proc", 3, "inst-3")
    assert (target.host, target.port, target.tls_port) == ("10.0.0.5", 61002, 61003)
    assert target.tls_server_name == "inst-3"
    assert (target.log_guid, target.cell_id, target.metric_tags) == ("log", "cell", {"a": "b"})
    assert target.address == "10.0.0.5:61002"


def test_ipv6_address() -> None:
    net = NetInfo("fd00::5", "", (PortMapping(2222, 61002),))
    target = buildTarget(
        "p", 0, "i", net, SSHRoute(2222), connectToInstanceAddress=False, backendsTLSEnabled=False
    )
    assert target.address == "[fd00::5]:61002"


def test_metric_tags() -> None:
    assert resolveMetricTag("static", 0, 4, "guid") == "static"
    assert resolveMetricTag("", 1, 4, "guid") == "4"
    assert resolveMetricTag("", 2, 4, "guid") == "guid"
