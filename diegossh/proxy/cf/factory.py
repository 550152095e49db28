# -*- test-case-name: tests.test_cf_integration -*-
"""
The C{cf} realm's HTTPS clients, built from the proxy's options.

Both clients share the persistent connection pool the tap passes in (and
closes on shutdown): a login reuses the connections of the logins before
it, which is faster and spares the load balancers in front of UAA and Cloud
Controller the connection churn that made upstream see resets.
"""

from __future__ import annotations

from pathlib import Path

from hyperlink import URL
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from diegossh.proxy.cf.cloudcontroller import CloudControllerClient
from diegossh.proxy.cf.uaa import UAAClient
from diegossh.proxy.metrics import timed
from diegossh.tls import makeHTTPSAgent, serverTLSPolicy

__all__ = ["makeCFHTTPClients"]

log = Logger()


def _origin(name: str, url: str) -> tuple[str, str, int]:
    parsed = URL.from_text(url)
    if parsed.scheme != "https" or not parsed.host:
        raise ValueError(f"{name} must be an https:// URL, not {url!r}")
    return parsed.scheme, parsed.host.lower(), parsed.port or 443


def makeCFHTTPClients(
    reactor: IReactorTime,
    pool: HTTPConnectionPool,
    *,
    uaaTokenURL: str,
    uaaUsername: str,
    uaaPassword: str,
    ccAPIURL: str,
    uaaCACert: str | Path | None = None,
    ccAPICACert: str | Path | None = None,
    skipCertVerify: bool = False,
    communicationTimeout: float = 10.0,
) -> tuple[UAAClient, CloudControllerClient]:
    """
    Build the UAA and Cloud Controller clients for C{--enableCFAuth}.

    C{pool} should be C{HTTPConnectionPool(reactor, persistent=True)}; the
    caller closes it (C{closeCachedConnections}) when the proxy stops.
    Certificates are verified against C{uaaCACert} / C{ccAPICACert}, or the
    system trust store when not given, unless C{skipCertVerify}.

    @raise ValueError: a URL is not https, a CA file holds no certificate,
        or UAA and Cloud Controller share an address but not a CA file (the
        pool would let a connection checked against one CA serve the other).
    @raise OSError: a CA file cannot be read.
    """
    uaaOrigin = _origin("uaaTokenURL", uaaTokenURL)
    ccOrigin = _origin("ccAPIURL", ccAPIURL)
    if uaaOrigin == ccOrigin and not skipCertVerify and uaaCACert != ccAPICACert:
        raise ValueError("UAA and Cloud Controller share an address: give them the same CA file")
    if skipCertVerify:
        log.critical(
            "skipCertVerify is set: the certificates of UAA ({uaa}) and Cloud Controller"
            " ({cc}) are NOT verified; one-time codes and tokens may be intercepted",
            uaa=uaaTokenURL,
            cc=ccAPIURL,
        )
    uaaPolicy = serverTLSPolicy(uaaCACert, skipCertVerify=skipCertVerify)
    ccPolicy = serverTLSPolicy(ccAPICACert, skipCertVerify=skipCertVerify)
    # Timed for the metrics when this process serves them (diegossh.proxy.metrics).
    uaa = UAAClient(
        timed(
            makeHTTPSAgent(reactor, uaaPolicy, pool, connectTimeout=communicationTimeout),
            "uaa",
            reactor,
        ),
        uaaTokenURL,
        uaaUsername,
        uaaPassword,
        reactor,
        communicationTimeout,
    )
    cc = CloudControllerClient(
        timed(
            makeHTTPSAgent(reactor, ccPolicy, pool, connectTimeout=communicationTimeout),
            "cloud_controller",
            reactor,
        ),
        ccAPIURL,
        reactor,
        communicationTimeout,
    )
    return uaa, cc
