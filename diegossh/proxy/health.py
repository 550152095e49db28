# -*- test-case-name: tests.test_proxy_drain,tests.test_proxy_interop -*-
"""
The health check endpoint load balancers poll.

  - C{GET /}: upstream's check, "this proxy takes new connections": 200
    C{ok}, or 503 C{draining} from the first SIGTERM on
    (L{diegossh.proxy.drain}). Upstream stops its health server when it
    stops; a 503 tells the balancer the same thing, earlier, while the
    sessions already there go on. A BBS that cannot be reached does not
    turn it 503: every proxy sees the same BBS, so a balancer polling
    C{/} would take them all out at once, and a deployment that polls it
    today gets upstream's behaviour plus the drain.
  - C{GET /ready}: readiness, for a balancer that should send new logins
    only where they can succeed: 503 while draining, or while the route
    source (the LRP table file, or BBS) cannot be read
    (L{diegossh.proxy.readiness}); the body says which, without detail (the
    log has it). Named C{/ready} as the plain word HAProxy's C{option
    httpchk GET /ready} and a Kubernetes C{readinessProbe} both take.

Other paths 404; other methods 405. Answers come from state kept in memory,
never from a call made for the request, so a flood of checks costs the
proxy no BBS traffic.
"""

from __future__ import annotations

from typing import Any

from twisted.web import resource, server

from diegossh.proxy.drain import DrainState


class HealthCheck(resource.Resource):
    isLeaf = True

    def __init__(self, state: DrainState | None = None, routes: Any = None) -> None:
        super().__init__()
        self.state = state or DrainState()
        self.routes = routes

    def render(self, request: Any) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b"method not allowed\n"
        if request.path not in (b"/", b"/ready"):
            request.setResponseCode(404)
            return b"not found\n"
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"cache-control", b"no-store")
        if self.state.draining:
            request.setResponseCode(503)
            return b"draining\n"
        if request.path == b"/ready" and self.routes is not None and self.routes.problem:
            request.setResponseCode(503)
            return b"route source unavailable\n"
        return b"ok\n" if request.path == b"/" else b"ready\n"


def healthSite(state: DrainState | None = None, routes: Any = None) -> server.Site:
    site = server.Site(HealthCheck(state, routes))
    site.displayTracebacks = False
    return site
