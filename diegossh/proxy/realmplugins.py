# -*- test-case-name: tests.test_realm_plugins -*-
"""
Auth realms as Twisted plugins. The C{diego} and C{cf} realms are plugins like
any other (see C{twisted/plugins/diegossh_realms.py}); an operator's realm is a
module of theirs plus a dropin in a C{twisted/plugins} directory on the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.plugin import IPlugin, getPlugins
from zope.interface import implementer

from diegossh.interfaces import ILRPDirectory, IRealmPlugin
from diegossh.proxy.login import DiegoRealm
from diegossh.proxy.realms import BuiltRealm

if TYPE_CHECKING:
    from diegossh.proxy.cf.realm import CFSettings


def installedRealms() -> dict[str, Any]:
    """
    Every realm plugin on the path, by name.
    """
    import twisted.plugins

    found: dict[str, Any] = {}
    for plugin in getPlugins(IRealmPlugin, twisted.plugins):
        found.setdefault(plugin.name, plugin)
    return found


@dataclass(frozen=True, slots=True)
class DiegoSettings:
    """
    The C{diego} realm's one setting: the shared credentials.
    """

    credentials: str = field(repr=False)


@implementer(IPlugin, IRealmPlugin)
class DiegoRealmPlugin:
    name = "diego"
    description = "diego:PROCESS-GUID/INDEX with the shared --diegoCredentials"
    settings: dict[str, tuple[str, str, Any]] = {}
    environment: dict[str, str] = {}
    secrets: dict[str, str] = {}  # its secrets are the proxy's own (config.SECRETS)
    usesDirectory = True

    def parse(self, settings: Mapping[str, Any]) -> DiegoSettings:
        credentials = settings.get("diegoCredentials")
        if not credentials or not isinstance(credentials, str):
            raise ValueError("the diego realm needs --diegoCredentials")
        return DiegoSettings(credentials)

    def build(self, reactor: Any, parsed: DiegoSettings, directory: ILRPDirectory) -> BuiltRealm:
        return BuiltRealm(DiegoRealm(parsed.credentials, directory))


@implementer(IPlugin, IRealmPlugin)
class CFRealmPlugin:
    name = "cf"
    description = "cf:APP-GUID/INDEX with a `cf ssh-code` one-time code (UAA + Cloud Controller)"
    settings: dict[str, tuple[str, str, Any]] = {}
    environment: dict[str, str] = {}
    secrets: dict[str, str] = {}  # its secrets are the proxy's own (config.SECRETS)
    usesDirectory = True

    def parse(self, settings: Mapping[str, Any]) -> CFSettings:
        from diegossh.proxy.cf.realm import CFSettings

        return CFSettings.fromSettings(settings)

    def build(self, reactor: Any, parsed: CFSettings, directory: ILRPDirectory) -> BuiltRealm:
        from diegossh.proxy.cf.realm import makeCFRealm
        from diegossh.proxy.pools import PoolService

        pools = PoolService(reactor)  # UAA's and Cloud Controller's connections
        return BuiltRealm(makeCFRealm(reactor, parsed, directory, pools), (pools,))
