"""
A stand-in for Cloud Controller's internal SSH access endpoint: a real HTTPS
server on 127.0.0.1 answering
C{GET /internal/apps/APP-GUID/ssh_access/INDEX} as Cloud Controller does.

It accepts the tokens a L{FakeUAA} issued (or ones added by hand), knows
apps (L{FakeCloudController.addApp}) with their process guid, instance
count and who may ssh, and denies with Cloud Controller's own JSON errors
(401 C{CF-InvalidAuthToken}, 403 C{CF-NotAuthorized}, 404 C{CF-AppNotFound}).
Misbehaviour and bookkeeping come from L{FakeHTTPSServer}.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from tests.fakes.tls import CertificateAuthority, IssuedCertificate
from tests.fakes.uaa import Answer, FakeHTTPSServer, FakeUAA, Grant, RecordedRequest

__all__ = ["App", "FakeCloudController"]

_PATH = re.compile(rb"/internal/apps/([^/]+)/ssh_access/([0-9]+)")


@dataclass
class App:
    """An app as the fake knows it."""

    guid: str
    process_guid: str
    instances: int = 1
    users: Collection[str] | None = None
    """User names allowed to ssh; None: anyone with a valid token."""
    deny: int | None = None
    """Deny everyone with this status (403: ssh disabled, 404: gone)."""


class FakeCloudController(FakeHTTPSServer):
    """Cloud Controller's C{ssh_access}, trusting the tokens of C{uaa}."""

    def __init__(
        self,
        reactor: Any,
        ca: CertificateAuthority | None = None,
        certificate: IssuedCertificate | None = None,
        *,
        uaa: FakeUAA | None = None,
    ) -> None:
        super().__init__(reactor, ca, certificate)
        self.uaa = uaa
        self.apps: dict[str, App] = {}
        self.tokens: dict[str, Grant] = {}
        """Tokens accepted besides the UAA's."""

    def addApp(
        self,
        guid: str,
        processGuid: str | None = None,
        *,
        instances: int = 1,
        users: Collection[str] | None = None,
        deny: int | None = None,
    ) -> App:
        """Know an app; its process guid defaults to C{GUID-VERSION} as CC makes it."""
        app = App(guid, processGuid or f"{guid}-0f2d1e3c-4b5a-6978-8a9b-0c1d2e3f4a5b", instances)
        app.users, app.deny = users, deny
        self.apps[guid] = app
        return app

    def _grant(self, authorization: bytes | None) -> Grant | None:
        if authorization is None:
            return None
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return None
        known = dict(self.tokens)
        if self.uaa is not None:
            known.update(self.uaa.tokens)
        return known.get(token)

    def answer(self, request: RecordedRequest) -> Answer:
        match = _PATH.fullmatch(request.path)
        if match is None:
            return _error(404, 10000, "Unknown request", "CF-NotFound")
        if request.method != b"GET":
            return _error(405, 10000, "Method not allowed", "CF-NotFound")
        grant = self._grant(request.header(b"authorization"))
        if grant is None:
            return _error(401, 1000, "Invalid Auth Token", "CF-InvalidAuthToken")
        guid, index = match.group(1).decode(), int(match.group(2))
        app = self.apps.get(guid)
        if app is None or app.deny == 404 or index >= app.instances:
            return _error(404, 100004, f"The app could not be found: {guid}", "CF-AppNotFound")
        if app.deny is not None or (app.users is not None and grant.user_name not in app.users):
            return _error(
                403,
                10003,
                "You are not authorized to perform the requested action",
                "CF-NotAuthorized",
            )
        return Answer.json(200, {"process_guid": app.process_guid})


def _error(status: int, code: int, description: str, errorCode: str) -> Answer:
    return Answer.json(status, {"code": code, "description": description, "error_code": errorCode})
