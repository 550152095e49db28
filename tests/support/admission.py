# -*- test-case-name: tests.test_sshd_hangup, tests.test_proxy_drain -*-
"""
Stand-ins for an L{diegossh.interfaces.IAdmission} in tests of what stands
in front of one.
"""

from __future__ import annotations

from typing import Any


class AdmitAll:
    """Admits every connection and ignores every report."""

    def admit(self, transport: Any) -> bool:
        return True

    def opened(self, transport: Any) -> None:
        pass

    def authenticated(self, transport: Any) -> None:
        pass

    def penalise(self, transport: Any, reason: str) -> None:
        pass

    def closed(self, transport: Any) -> None:
        pass
