"""
The realm API: what a plugin's C{build} returns reaches the proxy's service
tree, and everything a realm author needs comes from one module,
L{diegossh.proxy.realms}, which the bastion and the documented example use
and nothing else of L{diegossh.proxy}.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
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

    def parse(self, settings: Any) -> None:
        return None

    def build(self, reactor: Any, parsed: None, directory: Any) -> BuiltRealm:
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
    from diegossh.proxy.settings import EnabledRealm

    options = proxyOptions(tmp_path)
    plugin = ServicePlugin()
    options["settings"] = dataclasses.replace(
        options["settings"], realms=(EnabledRealm(plugin, None),)
    )
    top: Any = tap.makeService(options)
    assert plugin.service in list(top)
    assert plugin.service.parent is top
    assert IService.providedBy(plugin.service)


def test_the_builtin_realms_build_with_no_services(tmp_path: Path) -> None:
    from diegossh.proxy.realmplugins import DiegoRealmPlugin

    plugin = DiegoRealmPlugin()
    parsed = plugin.parse({"diegoCredentials": "x"})
    built = plugin.build(object(), parsed, directory=None)  # type: ignore[arg-type]
    assert isinstance(built, BuiltRealm)
    assert IAuthRealm.providedBy(built.realm)
    assert built.services == ()


# -- the one module a realm imports


def test_every_exported_name_imports_and_is_what_it_says() -> None:
    import importlib

    from twisted.application.service import IService
    from zope.interface.interfaces import IInterface

    from diegossh.proxy import realms

    interfaces = {"IAuthRealm", "IKeyRealm", "ILRPDirectory", "IRealmPlugin"}
    errors = {"LoginDenied", "BadCredentials"}
    values = {"BuiltRealm", "KeyLogin", "LRPTarget", "LoginResult", "SSHRoute"}
    services = {"PoolService"}
    assert set(realms.__all__) == interfaces | errors | values | services
    assert len(realms.__all__) == len(set(realms.__all__))
    fresh = importlib.import_module("diegossh.proxy.realms")
    for name in realms.__all__:
        exported = getattr(fresh, name)
        assert exported.__name__ == name, name
        if name in interfaces:
            assert IInterface.providedBy(exported), name
        elif name in errors:
            assert issubclass(exported, realms.LoginDenied), name
        elif name in services:
            assert IService.implementedBy(exported), name
        else:
            assert dataclasses.is_dataclass(exported), name
    # the same objects the proxy itself uses, not copies
    from diegossh import interfaces as home
    from diegossh.proxy import errors as homeErrors
    from diegossh.proxy import login, target

    assert realms.IRealmPlugin is home.IRealmPlugin
    assert realms.LoginDenied is homeErrors.LoginDenied
    assert realms.LoginResult is login.LoginResult
    assert realms.LRPTarget is target.LRPTarget


def test_built_realm_is_frozen_with_no_services_by_default() -> None:
    built = BuiltRealm(NoRealm())
    assert built.services == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.realm = None  # type: ignore[misc]


def test_the_plugin_interface_declares_what_the_proxy_reads() -> None:
    from diegossh.proxy import config
    from diegossh.proxy.realmplugins import installedRealms

    declared = set(IRealmPlugin.names())
    assert {"name", "description", "settings", "environment", "secrets", "usesDirectory",
            "build"} <= declared  # fmt: skip
    documented = IRealmPlugin["settings"].__doc__
    kinds = {kind for _, kind, _ in config.SETTINGS.values()}
    for plugin in installedRealms().values():
        kinds |= {kind for _, kind, _ in plugin.settings.values()}
    for kind in kinds:
        assert f"'{kind}'" in documented, kind
    assert "BuiltRealm" in IRealmPlugin["build"].__doc__


def _importedModules(path: Path) -> set[str]:
    """Every module C{path} imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "diegossh":  # from diegossh import proxy
                found |= {f"diegossh.{alias.name}" for alias in node.names}
    return found


ROOT = Path(__file__).resolve().parent.parent


def test_the_example_realm_imports_only_the_realm_api() -> None:
    imported = _importedModules(ROOT / "docs" / "examples" / "static_realm.py")
    ours = {name for name in imported if name.split(".")[0] == "diegossh"}
    assert ours == {"diegossh.proxy.realms"}


def test_the_bastion_reaches_the_proxy_only_through_the_realm_api() -> None:
    modules = sorted((ROOT / "diegossh" / "bastion").glob("*.py"))
    assert len(modules) > 5
    for path in modules:
        imported = _importedModules(path)
        proxy = {name for name in imported if name.startswith("diegossh.proxy")}
        assert proxy <= {"diegossh.proxy.realms"}, (path.name, proxy)
        assert "diegossh.proxy" not in imported, path.name
