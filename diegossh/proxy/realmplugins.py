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

from diegossh.interfaces import IAuthRealm, ILRPDirectory, IRealmPlugin
from diegossh.proxy.login import DiegoRealm

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

    def parse(self, settings: Mapping[str, Any]) -> DiegoSettings:
        credentials = settings.get("diegoCredentials")
        if not credentials or not isinstance(credentials, str):
            raise ValueError("the diego realm needs --diegoCredentials")
        return DiegoSettings(credentials)

    def build(self, reactor: Any, parsed: DiegoSettings, directory: ILRPDirectory) -> IAuthRealm:
        return DiegoRealm(parsed.credentials, directory)


@implementer(IPlugin, IRealmPlugin)
class CFRealmPlugin:
    name = "cf"
    description = "cf:APP-GUID/INDEX with a `cf ssh-code` one-time code (UAA + Cloud Controller)"
    settings: dict[str, tuple[str, str, Any]] = {}

    def parse(self, settings: Mapping[str, Any]) -> CFSettings:
        from diegossh.proxy.cf.realm import CFSettings

        return CFSettings.fromSettings(settings)

    def build(self, reactor: Any, parsed: CFSettings, directory: ILRPDirectory) -> IAuthRealm:
        from diegossh.proxy.cf.realm import makeCFRealm

        return makeCFRealm(reactor, parsed, directory)
