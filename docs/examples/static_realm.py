"""
An example auth realm for diego-ssh-proxy: C{static:NAME}, with a password and
a target per name, kept in a JSON file the operator writes::

    {"web": {"password_sha256": "<hex sha256 of the password>",
             "host": "10.0.0.5", "port": 2222,
             "route": {"container_port": 2222, "user": "vcap",
                       "host_fingerprint": "SHA256:...", "private_key": "-----BEGIN ..."}}}

Enable it with C{--realm static --staticRealmFile=/etc/ssh-proxy/static.json}
after putting this directory on the proxy's C{PYTHONPATH} (the dropin in
C{twisted/plugins/} beside this file is what C{getPlugins} finds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.plugin import IPlugin
from zope.interface import implementer

from diegossh.proxy.realms import (
    BadCredentials,
    BuiltRealm,
    IAuthRealm,
    IRealmPlugin,
    LoginResult,
    LRPTarget,
    SSHRoute,
)


@implementer(IAuthRealm)
class StaticRealm:
    name = "static"

    def __init__(self, path: str) -> None:
        self.path = path

    def resolve(self, subject: str, password: bytes) -> defer.Deferred[LoginResult]:
        # Read on each login so edits apply without a restart.
        with open(self.path, encoding="utf-8") as f:
            entry = json.load(f).get(subject)
        if entry is None:
            return defer.fail(BadCredentials())
        offered = hashlib.sha256(password).hexdigest()
        if not hmac.compare_digest(offered, entry["password_sha256"]):
            return defer.fail(BadCredentials())
        target = LRPTarget(
            process_guid=f"static-{subject}",
            index=0,
            instance_guid=subject,
            host=entry["host"],
            port=int(entry["port"]),
            route=SSHRoute.fromMapping(entry["route"]),
        )
        return defer.succeed(LoginResult(self.name, target, {"static_name": subject}))


@dataclass(frozen=True)
class StaticSettings:
    """What C{parse} found: the realm's file."""

    path: str


@implementer(IPlugin, IRealmPlugin)
class StaticRealmPlugin:
    name = "static"
    description = "static:NAME with per-name passwords and targets from --staticRealmFile"
    settings: dict[str, tuple[str, str, Any]] = {
        "staticRealmFile": ("static_realm_file", "str", None),
    }

    def parse(self, settings: Mapping[str, Any]) -> StaticSettings:
        # Called once at start-up with a read-only view of the proxy's
        # settings; a ValueError naming the flag stops the start.
        path = settings.get("staticRealmFile")
        if not path:
            raise ValueError("the static realm needs --staticRealmFile")
        return StaticSettings(path)

    def build(self, reactor: Any, parsed: StaticSettings, directory: Any) -> BuiltRealm:
        # A realm with timers or pools would return them as BuiltRealm(realm, (service, ...)).
        return BuiltRealm(StaticRealm(parsed.path))
