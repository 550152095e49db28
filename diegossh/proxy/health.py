# -*- test-case-name: tests.test_proxy_interop -*-
"""
The health check endpoint load balancers poll: C{GET /} answers 200; other
paths 404; other methods 405.
"""

from __future__ import annotations

from typing import Any

from twisted.web import resource, server


class HealthCheck(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b"method not allowed\n"
        if request.path != b"/":
            request.setResponseCode(404)
            return b"not found\n"
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n"


def healthSite() -> server.Site:
    site = server.Site(HealthCheck())
    site.displayTracebacks = False
    return site
