# -*- test-case-name: tests.test_cf_integration -*-
"""
The C{cf} realm against the fake UAA and Cloud Controller over real sockets
and real TLS, built the way the proxy's tap builds it
(L{makeCFHTTPClients} on a persistent pool).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.web.client import HTTPConnectionPool

from diegossh.proxy.cf import (
    CFAuthenticator,
    CFLogin,
    CloudControllerClient,
    UAAClient,
    makeCFHTTPClients,
    parseAppInstance,
)
from diegossh.proxy.cf import cloudcontroller as ccmod
from diegossh.proxy.cf import uaa as uaamod
from diegossh.proxy.errors import LoginDenied
from tests.fakes.bbs import Behaviour
from tests.fakes.cloudcontroller import FakeCloudController
from tests.fakes.tls import CertificateAuthority
from tests.fakes.uaa import FakeUAA
from tests.test_cf_authenticator import captureLogs, eventsText

APP = "2b4e8f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
PROCESS = f"{APP}-7e6d5c4b-3a29-1807-f6e5-d4c3b2a19080"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@dataclass
class PKI:
    ca: CertificateAuthority
    other: CertificateAuthority
    """A CA the proxy does not trust."""


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(
        CertificateAuthority.create(tmp_path / "ca"),
        CertificateAuthority.create(tmp_path / "other", commonName="not the deployment's CA"),
    )


@pytest_twisted.async_yield_fixture
async def uaa(pki: PKI) -> AsyncIterator[FakeUAA]:
    fake = FakeUAA(_reactor(), pki.ca, pki.ca.issueServer("uaa"))
    await fake.start()
    yield fake
    await fake.stop()


@pytest_twisted.async_yield_fixture
async def cc(pki: PKI, uaa: FakeUAA) -> AsyncIterator[FakeCloudController]:
    fake = FakeCloudController(_reactor(), pki.ca, pki.ca.issueServer("cc"), uaa=uaa)
    fake.addApp(APP, PROCESS, instances=3)
    await fake.start()
    yield fake
    await fake.stop()


Make = Callable[..., CFAuthenticator]


@pytest_twisted.async_yield_fixture
async def make(pki: PKI, uaa: FakeUAA, cc: FakeCloudController) -> AsyncIterator[Make]:
    """Build authenticators as the tap would; every pool is closed at teardown."""
    pools: list[HTTPConnectionPool] = []

    def build(**kw: Any) -> CFAuthenticator:
        reactor = _reactor()
        pool = HTTPConnectionPool(reactor, persistent=True)
        pools.append(pool)
        options: dict[str, Any] = {
            "uaaTokenURL": uaa.tokenURL,
            "uaaUsername": uaa.clientID,
            "uaaPassword": uaa.clientSecret,
            "ccAPIURL": cc.url,
            "uaaCACert": pki.ca.certPath,
            "ccAPICACert": pki.ca.certPath,
            "communicationTimeout": 5.0,
        }
        options.update(kw)
        uaaClient, ccClient = makeCFHTTPClients(reactor, pool, **options)
        assert isinstance(uaaClient, UAAClient)
        assert isinstance(ccClient, CloudControllerClient)
        return CFAuthenticator(uaaClient, ccClient)

    yield build
    for pool in pools:
        await pool.closeCachedConnections()


async def denied(d: Deferred[CFLogin]) -> str:
    with pytest.raises(LoginDenied) as info:
        await d
    return info.value.reason


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with captureLogs() as events:
        yield events


@pytest_twisted.ensureDeferred
async def test_good_code(make: Make, uaa: FakeUAA, cc: FakeCloudController) -> None:
    code = uaa.issueCode("alice", "user-guid-alice")
    login = await make().authenticate(APP, 2, code)
    assert login == CFLogin(PROCESS, 2, APP, "alice", "user-guid-alice")

    [exchange] = uaa.requests
    assert (exchange.method, exchange.path) == (b"POST", b"/oauth/token")
    basic = base64.b64encode(b"ssh-proxy:ssh-proxy-secret")
    assert exchange.header(b"authorization") == b"Basic " + basic
    assert exchange.header(b"accept") == b"application/json"
    assert exchange.header(b"content-type") == b"application/x-www-form-urlencoded"
    assert parse_qs(exchange.body.decode()) == {
        "grant_type": ["authorization_code"],
        "code": [code],
    }

    [access] = cc.requests
    assert (access.method, access.path) == (b"GET", f"/internal/apps/{APP}/ssh_access/2".encode())
    [token] = uaa.tokens
    assert access.header(b"authorization") == f"bearer {token}".encode()
    assert access.header(b"accept") == b"application/json"


@pytest_twisted.ensureDeferred
async def test_unknown_code_leaves_cc_unasked(
    make: Make, uaa: FakeUAA, cc: FakeCloudController
) -> None:
    assert await denied(make().authenticate(APP, 0, "not-a-code")) == uaamod.REFUSED
    assert len(uaa.requests) == 1
    assert cc.requests == [] and cc.connectionsAccepted == 0


@pytest_twisted.ensureDeferred
async def test_code_is_one_time(make: Make, uaa: FakeUAA, cc: FakeCloudController) -> None:
    authenticator = make()
    code = uaa.issueCode()
    await authenticator.authenticate(APP, 0, code)
    assert await denied(authenticator.authenticate(APP, 0, code)) == uaamod.REFUSED
    assert len(cc.requests) == 1


@pytest_twisted.ensureDeferred
async def test_wrong_client_credentials(
    make: Make, uaa: FakeUAA, cc: FakeCloudController, logs: list[dict[str, Any]]
) -> None:
    reason = await denied(make(uaaPassword="wrong").authenticate(APP, 0, uaa.issueCode()))
    assert reason == uaamod.REFUSED
    assert cc.requests == []
    assert "check uaaUsername/uaaPassword" in eventsText(logs)


@pytest.mark.parametrize("status", [403, 404])
@pytest_twisted.ensureDeferred
async def test_cc_denies(make: Make, uaa: FakeUAA, cc: FakeCloudController, status: int) -> None:
    cc.addApp(APP, PROCESS, deny=status)
    assert await denied(make().authenticate(APP, 0, uaa.issueCode())) == ccmod.FETCH_FAILED


@pytest_twisted.ensureDeferred
async def test_cc_denies_other_users(make: Make, uaa: FakeUAA, cc: FakeCloudController) -> None:
    cc.addApp(APP, PROCESS, users={"alice"})
    authenticator = make()
    reason = await denied(authenticator.authenticate(APP, 0, uaa.issueCode("mallory")))
    assert reason == ccmod.FETCH_FAILED
    login = await authenticator.authenticate(APP, 0, uaa.issueCode("alice"))
    assert login.user_name == "alice"


@pytest_twisted.ensureDeferred
async def test_cc_index_out_of_range(make: Make, uaa: FakeUAA) -> None:
    assert await denied(make().authenticate(APP, 3, uaa.issueCode())) == ccmod.FETCH_FAILED


@pytest.mark.parametrize("mode", ["garbage", "html", "empty"])
@pytest_twisted.ensureDeferred
async def test_cc_garbage(make: Make, uaa: FakeUAA, cc: FakeCloudController, mode: str) -> None:
    cc.setBehaviour(Behaviour(mode))
    assert await denied(make().authenticate(APP, 0, uaa.issueCode())) == ccmod.INVALID


@pytest.mark.parametrize("mode", ["garbage", "html", "empty"])
@pytest_twisted.ensureDeferred
async def test_uaa_garbage(make: Make, uaa: FakeUAA, cc: FakeCloudController, mode: str) -> None:
    uaa.setBehaviour(Behaviour(mode))
    assert await denied(make().authenticate(APP, 0, uaa.issueCode())) == uaamod.INVALID
    assert cc.requests == []


@pytest_twisted.ensureDeferred
async def test_uaa_server_error(make: Make, uaa: FakeUAA, cc: FakeCloudController) -> None:
    uaa.setBehaviour(Behaviour("status", status=503))
    assert await denied(make().authenticate(APP, 0, uaa.issueCode())) == uaamod.REFUSED
    assert cc.requests == []


@pytest_twisted.ensureDeferred
async def test_pooled_connection_serves_many_logins(
    make: Make, uaa: FakeUAA, cc: FakeCloudController
) -> None:
    authenticator = make()
    for n in range(4):
        login = await authenticator.authenticate(APP, n % 3, uaa.issueCode(f"user{n}"))
        assert login.user_name == f"user{n}"
    assert len(uaa.requests) == len(cc.requests) == 4
    assert uaa.connectionsAccepted == 1
    assert cc.connectionsAccepted == 1


@pytest_twisted.ensureDeferred
async def test_dropped_connection_is_retried_once(
    make: Make, uaa: FakeUAA, cc: FakeCloudController
) -> None:
    """A connection dropped under the request (a load balancer) costs one retry."""
    uaa.setBehaviour(Behaviour("close", times=1))
    cc.setBehaviour(Behaviour("close", times=1))
    login = await make().authenticate(APP, 0, uaa.issueCode())
    assert login.process_guid == PROCESS
    assert uaa.connectionsAccepted == cc.connectionsAccepted == 2


@pytest_twisted.ensureDeferred
async def test_always_dropped(make: Make, uaa: FakeUAA, cc: FakeCloudController) -> None:
    uaa.setBehaviour(Behaviour("close"))
    assert await denied(make().authenticate(APP, 0, uaa.issueCode())) == uaamod.UNAVAILABLE
    assert len(uaa.requests) == 2 and cc.requests == []


@pytest_twisted.ensureDeferred
async def test_uaa_down(make: Make, uaa: FakeUAA, cc: FakeCloudController) -> None:
    url = uaa.tokenURL
    await uaa.stop()
    reason = await denied(make(uaaTokenURL=url).authenticate(APP, 0, "code"))
    assert reason == uaamod.UNAVAILABLE
    assert cc.requests == []


@pytest_twisted.ensureDeferred
async def test_server_from_wrong_ca_refused(
    pki: PKI, make: Make, uaa: FakeUAA, cc: FakeCloudController, logs: list[dict[str, Any]]
) -> None:
    impostor = FakeUAA(_reactor(), pki.other, pki.other.issueServer("uaa"))
    impostor.issueCode(code="the-code")
    await impostor.start()
    try:
        authenticator = make(uaaTokenURL=impostor.tokenURL)
        assert await denied(authenticator.authenticate(APP, 0, "the-code")) == uaamod.UNAVAILABLE
    finally:
        await impostor.stop()
    assert impostor.requests == [] and cc.requests == []
    assert "certificate verify failed" in eventsText(logs)


@pytest_twisted.ensureDeferred
async def test_cc_from_wrong_ca_refused(
    pki: PKI, make: Make, uaa: FakeUAA, cc: FakeCloudController
) -> None:
    authenticator = make(ccAPICACert=pki.other.certPath)
    assert await denied(authenticator.authenticate(APP, 0, uaa.issueCode())) == ccmod.UNAVAILABLE
    assert cc.requests == []


@pytest_twisted.ensureDeferred
async def test_name_mismatch_refused(pki: PKI, make: Make, cc: FakeCloudController) -> None:
    misnamed = FakeUAA(
        _reactor(), pki.ca, pki.ca.issueServer("misnamed", dnsNames=["uaa.test"], ipAddresses=[])
    )
    await misnamed.start()
    try:
        authenticator = make(uaaTokenURL=misnamed.tokenURL)
        reason = await denied(authenticator.authenticate(APP, 0, misnamed.issueCode()))
    finally:
        await misnamed.stop()
    assert reason == uaamod.UNAVAILABLE and misnamed.requests == []


@pytest_twisted.ensureDeferred
async def test_skip_cert_verify_accepts_any(
    pki: PKI, make: Make, cc: FakeCloudController, logs: list[dict[str, Any]]
) -> None:
    impostor = FakeUAA(_reactor(), pki.other, pki.other.issueServer("uaa"))
    cc.uaa = impostor
    await impostor.start()
    try:
        authenticator = make(uaaTokenURL=impostor.tokenURL, skipCertVerify=True)
        login = await authenticator.authenticate(APP, 0, impostor.issueCode("alice"))
    finally:
        await impostor.stop()
    assert login.user_name == "alice"
    [warning] = [e for e in logs if e.get("log_level") == LogLevel.critical]
    assert "NOT verified" in eventsText([warning])


@pytest.mark.parametrize(
    "username",
    [
        f"{APP}",
        f"{APP}/",
        f"{APP}/-1",
        f"{APP}/2147483648",
        f"{APP}/0/",
        f" {APP}/0",
        f"{APP}/0\n",
        f"{APP}/\u0663",  # an Arabic-Indic digit three
        "app-guid-1/0",
        f"../{APP}/0",
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_username_denied_before_any_call(
    make: Make, uaa: FakeUAA, cc: FakeCloudController, username: str
) -> None:
    authenticator = make()
    with pytest.raises(LoginDenied):
        instance = parseAppInstance(username)
        await authenticator.authenticate(instance.app_guid, instance.index, "code")
    assert uaa.connectionsAccepted == cc.connectionsAccepted == 0


@pytest.mark.parametrize(("guid", "index"), [("not-a-guid", 0), (APP, -1), (APP, 2**31)])
@pytest_twisted.ensureDeferred
async def test_authenticate_rechecks(
    make: Make, uaa: FakeUAA, cc: FakeCloudController, guid: str, index: int
) -> None:
    await denied(make().authenticate(guid, index, "code"))
    assert uaa.connectionsAccepted == cc.connectionsAccepted == 0


@pytest_twisted.ensureDeferred
async def test_secrets_never_logged(
    make: Make, uaa: FakeUAA, cc: FakeCloudController, logs: list[dict[str, Any]]
) -> None:
    authenticator = make(communicationTimeout=0.5)
    codes = [uaa.issueCode("alice", code=f"SECRETCODE{n}") for n in range(4)]
    await authenticator.authenticate(APP, 0, codes[0])
    cc.addApp(APP, PROCESS, deny=403)
    await denied(authenticator.authenticate(APP, 0, codes[1]))
    cc.addApp(APP, PROCESS)
    cc.setBehaviour(Behaviour("hang", times=1))
    await denied(authenticator.authenticate(APP, 0, codes[2]))
    await denied(authenticator.authenticate(APP, 0, "SECRETCODE-unknown"))  # UAA quotes it
    await denied(authenticator.authenticate(APP, 0, codes[0]))  # used twice
    uaa.setBehaviour(Behaviour("garbage"))
    await denied(authenticator.authenticate(APP, 0, codes[3]))

    assert len(uaa.tokens) == 3
    text = eventsText(logs)
    assert "SECRETCODE" not in text
    for token in uaa.tokens:
        for part in token.split("."):
            assert part not in text
    assert "alice" in text and APP in text and "denied at Cloud Controller" in text


def test_factory_refuses_plain_http() -> None:
    with pytest.raises(ValueError, match="https"):
        makeCFHTTPClients(
            _reactor(),
            HTTPConnectionPool(_reactor()),
            uaaTokenURL="http://uaa.test/oauth/token",
            ccAPIURL="https://cc.test",
            uaaUsername="ssh-proxy",
            uaaPassword="pw",
        )


def test_factory_refuses_shared_address_with_two_cas(pki: PKI) -> None:
    with pytest.raises(ValueError, match="share an address"):
        makeCFHTTPClients(
            _reactor(),
            HTTPConnectionPool(_reactor()),
            uaaTokenURL="https://api.test/oauth/token",
            ccAPIURL="https://api.test:443",
            uaaUsername="ssh-proxy",
            uaaPassword="pw",
            uaaCACert=pki.ca.certPath,
            ccAPICACert=pki.other.certPath,
        )


def test_factory_system_trust_store() -> None:
    uaaClient, _ = makeCFHTTPClients(
        _reactor(),
        HTTPConnectionPool(_reactor()),
        uaaTokenURL="https://uaa.test/oauth/token",
        ccAPIURL="https://cc.test",
        uaaUsername="ssh-proxy",
        uaaPassword="pw",
    )
    assert "pw" not in repr(uaaClient)


def test_factory_missing_ca_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        makeCFHTTPClients(
            _reactor(),
            HTTPConnectionPool(_reactor()),
            uaaTokenURL="https://uaa.test/oauth/token",
            ccAPIURL="https://cc.test",
            uaaUsername="ssh-proxy",
            uaaPassword="pw",
            uaaCACert=tmp_path / "nope.pem",
        )
