# -*- test-case-name: tests.test_debugserver, tests.test_sshd_dropin -*-
"""
The debug listener upstream's components serve
(C{code.cloudfoundry.org/debugserver}), as far as operators use it, for the
proxy (C{debug_address}) and the daemon (C{-debugAddr}) alike:
C{POST /log-level} with the level as the body (C{debug}, C{info}, C{warn},
C{error}, C{fatal}, or their initials or numbers C{0}-C{4}, any case)
changes what the program logs from then on; anything else on that path is
a C{400} with upstream's reason, and the same texts.

Upstream also serves Go's pprof pages there (C{/debug/pprof/...}), which
have no Python meaning and are not served (C{404}). The root resource takes
more children (L{debugSite}'s C{children}): the place for C{/metrics}.

Lager has no C{warn} level; upstream answers C{warn} and then logs nothing
below fatal-and-above-99 (an artefact of its adapter). Here C{warn} keeps
errors and fatals, the nearest level that exists: a documented difference.

The listener binds only where configured, and is one more L{IService} of the
proxy's tree (L{debugService}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from diegossh.addresses import serverEndpoint

__all__ = ["MAX_BODY", "LevelControl", "LogLevelResource", "debugService", "debugSite"]

#: Bytes of a C{/log-level} body read; a level is a word.
MAX_BODY = 64

_NORMALIZED = {
    "0": "debug", "d": "debug", "debug": "debug",
    "1": "info", "i": "info", "info": "info",
    "2": "warn", "w": "warn", "warn": "warn",
    "3": "error", "e": "error", "error": "error",
    "4": "fatal", "f": "fatal", "fatal": "fatal",
}  # fmt: skip
# lager has no warn: the nearest level above info
_LAGER = {"debug": "debug", "info": "info", "warn": "error", "error": "error", "fatal": "fatal"}


class LevelControl(Protocol):
    """
    What changes the least level logged: L{diegossh.lager.LagerObserver}, or
    a holder when nothing writes lager lines (under twistd).
    """

    def setLevel(self, name: str) -> None: ...


class RecordedLevel:
    """
    A level held and nothing more: what C{/log-level} changes under twistd,
    whose text log has no levels to filter (docs/cloudfoundry.md).
    """

    def __init__(self, level: str = "info") -> None:
        self.level = level

    def setLevel(self, name: str) -> None:
        self.level = name


class LogLevelResource(Resource):
    """
    C{/log-level}: C{POST} a level, as upstream's debugserver takes it.
    """

    isLeaf = True

    def __init__(self, control: LevelControl) -> None:
        super().__init__()
        self._control = control

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if request.method != b"POST":
            return _refuse(request, "method not allowed, use POST")
        assert request.content is not None
        body = request.content.read(MAX_BODY + 1)
        if not body:
            return _refuse(request, "log level cannot be empty")
        text = body.decode("utf-8", "replace")
        normalized = _NORMALIZED.get(text.strip().lower()) if len(body) <= MAX_BODY else None
        if normalized is None:
            return _refuse(request, f"invalid log level: {text[:MAX_BODY]}")
        self._control.setLevel(_LAGER[normalized])
        answer = f"/log-level was invoked with Level: {normalized}\n"
        return answer.encode("utf-8")


class _Root(Resource):
    """
    The debug server's root: its children, and a plain 404 for anything else.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        return notFound()  # type: ignore[return-value]


def _refuse(request: Request, reason: str) -> bytes:
    request.setResponseCode(400)
    return (reason + "\n").encode("utf-8")


def debugSite(control: LevelControl, children: Mapping[bytes, Resource] | None = None) -> Site:
    """
    The debug server's site: C{/log-level}, and any C{children} (C{/metrics}).
    """
    root = _Root()
    root.putChild(b"log-level", LogLevelResource(control))
    for name, child in (children or {}).items():
        root.putChild(name, child)
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site


def debugService(
    reactor: Any,
    address: str,
    control: LevelControl,
    children: Mapping[bytes, Resource] | None = None,
) -> IService:
    """
    The debug listener on C{address} (C{host:port}), as a service, with
    C{children} (C{/metrics}) besides C{/log-level}.
    """
    service = StreamServerEndpointService(
        serverEndpoint(reactor, address), debugSite(control, children)
    )
    service.setName("debug-server")
    return service
