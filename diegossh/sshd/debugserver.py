# -*- test-case-name: tests.test_sshd_dropin -*-
"""
The daemon's debug HTTP server (C{-debugAddr}), as upstream's
C{code.cloudfoundry.org/debugserver} serves it: C{/log-level} takes a level
in the request body and changes the lager level while the daemon runs.

Upstream also serves Go's C{pprof} profiles and the block and mutex
profile rates there; they have no meaning for a Python process, so those
paths answer 404 (docs/sshd.md).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

# debugserver's spellings of lager's four levels
_LEVELS = {
    **dict.fromkeys(("debug", "DEBUG", "d", "0"), "debug"),
    **dict.fromkeys(("info", "INFO", "i", "1"), "info"),
    **dict.fromkeys(("error", "ERROR", "e", "2"), "error"),
    **dict.fromkeys(("fatal", "FATAL", "f", "3"), "fatal"),
}


class LogLevelResource(Resource):
    """
    C{/log-level}: any method; a body naming a level sets it, anything else
    is ignored, and the answer is an empty 200 either way, as upstream's.
    """

    isLeaf = True

    def __init__(self, setLevel: Callable[[str], object]) -> None:
        super().__init__()
        self._setLevel = setLevel

    def render(self, request: Request) -> bytes:
        body = request.content.read(64) if request.content is not None else b""
        level = _LEVELS.get(body.decode("utf-8", "replace"))
        if level is not None:
            self._setLevel(level)
        return b""


def debugSite(setLevel: Callable[[str], object]) -> Site:
    """
    The debug server's site: C{/log-level} calls C{setLevel} with
    C{debug}, C{info}, C{error} or C{fatal}.
    """
    root = Resource()
    root.putChild(b"log-level", LogLevelResource(setLevel))
    site = Site(root)
    site.noisy = False
    return site
