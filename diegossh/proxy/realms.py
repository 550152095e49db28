# -*- test-case-name: tests.test_realm_api -*-
"""
Everything an auth realm's author needs, in one module: the interfaces a
plugin and its realm provide, what C{build} returns, the targets and login
results a realm answers with, the errors it raises, and the pieces of the
proxy a realm may hold (an HTTP connection pool that closes at shutdown).

A realm imports from here and from nowhere else in L{diegossh.proxy}, so
the proxy's inside may move without breaking plugins (the bastion and
C{docs/examples/static_realm.py} do so, and C{tests/test_realm_api.py}
checks that they do).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.application.service import IService

from diegossh.interfaces import IAuthRealm, IKeyRealm, ILRPDirectory, IRealmPlugin
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.keylogin import KeyLogin
from diegossh.proxy.login import BadCredentials, LoginResult
from diegossh.proxy.pools import PoolService
from diegossh.proxy.target import LRPTarget, SSHRoute

__all__ = [
    "BadCredentials",
    "BuiltRealm",
    "IAuthRealm",
    "IKeyRealm",
    "ILRPDirectory",
    "IRealmPlugin",
    "KeyLogin",
    "LRPTarget",
    "LoginDenied",
    "LoginResult",
    "PoolService",
    "SSHRoute",
]


@dataclass(frozen=True)
class BuiltRealm:
    """
    What L{IRealmPlugin.build} returns: the realm (an L{IAuthRealm} or an
    L{IKeyRealm}), and the services that must run while it serves (a timer,
    a pool of connections to close at shutdown). The proxy makes each
    service a child of its own, so they start with the proxy and stop with
    it; a realm that needs none leaves C{services} empty.
    """

    realm: object
    services: tuple[IService, ...] = ()
