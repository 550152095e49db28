"""
The realm API: what a plugin's C{build} returns reaches the proxy's service
tree, and everything a realm author needs comes from one module,
L{diegossh.proxy.realms}, which the bastion and the documented example use
and nothing else of L{diegossh.proxy}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import IService, Service
from twisted.plugin import IPlugin
from zope.interface import implementer

from diegossh.interfaces import IAuthRealm, IRealmPlugin
from diegossh.proxy.realms import BuiltRealm


@implementer(IAuthRealm)
class NoRealm:
    name = "none"

    def resolve(self, subject: str, password: bytes) -> Any:
        raise NotImplementedError


@implementer(IPlugin, IRealmPlugin)
class ServicePlugin:
    """A realm plugin whose realm needs a service running."""

    name = "withservice"
    description = "a realm with a service"
    settings: dict[str, tuple[str, str, Any]] = {}

    def __init__(self) -> None:
        self.service = Service()

    def check(self, settings: dict[str, Any]) -> None:
        pass

    def build(self, reactor: Any, settings: dict[str, Any], directory: Any) -> BuiltRealm:
        return BuiltRealm(NoRealm(), (self.service,))


def proxyOptions(tmp_path: Path, *extra: str) -> Any:
    from diegossh.proxy import tap

    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    options = tap.Options()
    options.parseOptions(
        ["--enableDiegoAuth", "--diegoCredentials=x", f"--lrpDirectory={table}",
         "--disableHealthCheckServer", *extra]
    )  # fmt: skip
    return options


def test_a_realms_services_are_children_of_the_proxys_service(tmp_path: Path) -> None:
    from diegossh.proxy import tap

    options = proxyOptions(tmp_path)
    plugin = ServicePlugin()
    options["settings"]["enabledRealms"] = [plugin]
    top: Any = tap.makeService(options)
    assert plugin.service in list(top)
    assert plugin.service.parent is top
    assert IService.providedBy(plugin.service)


def test_the_builtin_realms_build_with_no_services(tmp_path: Path) -> None:
    from diegossh.proxy.realmplugins import DiegoRealmPlugin

    built = DiegoRealmPlugin().build(object(), {"diegoCredentials": "x"}, directory=None)  # type: ignore[arg-type]
    assert isinstance(built, BuiltRealm)
    assert IAuthRealm.providedBy(built.realm)
    assert built.services == ()
