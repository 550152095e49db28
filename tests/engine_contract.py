"""
What every L{IContainerEngine} client must do with C{readFile}, whatever API
it talks to: run C{cat} with the path as an argument (never shell text),
read absolute paths, stop at L{MAX_FILE_SIZE}, and refuse a path that is
neither absolute nor C{~/...} before any call. A test module per engine
provides the C{contract} fixture (an L{EngineUnderTest}) and subclasses
L{EngineContract}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from diegossh.bastion._engineapi import MAX_FILE_SIZE
from diegossh.bastion.targets import EngineError

HOSTILE = ["'; rm -rf / #", "$(id)", "`id`", '"; id; "', "a b\nc", "-n", "a&b=c d+e%20"]


async def failure(d: Deferred[Any]) -> EngineError:
    with pytest.raises(EngineError) as info:
        await d
    return info.value


@dataclass
class EngineUnderTest:
    """
    @ivar add: C{add(name, files)}: a running target carrying the engine's
        labels, in the stand-in API.
    @ivar engine: a client for the stand-in API.
    @ivar commands: the C{cat} command lines the stand-in API ran, in order.
    """

    add: Callable[[str, dict[str, bytes]], object]
    engine: Callable[[], Any]
    commands: Callable[[], list[list[str]]]


class EngineContract:
    """
    Subclassed as C{Test...} next to a C{contract} fixture.
    """

    @pytest_twisted.ensureDeferred
    async def test_read_absolute(self, contract: EngineUnderTest) -> None:
        hostKey = b"ecdsa-sha2-nistp256 AAAA host\n"
        contract.add("web-0", {"/etc/ssh/ssh_host_ecdsa_key.pub": hostKey})
        e = contract.engine()
        [target] = await e.listTargets()
        assert await e.readFile(target, "/etc/ssh/ssh_host_ecdsa_key.pub") == hostKey
        assert contract.commands() == [["cat", "--", "/etc/ssh/ssh_host_ecdsa_key.pub"]]

    @pytest.mark.parametrize("name", HOSTILE)
    @pytest_twisted.ensureDeferred
    async def test_hostile_path_is_an_argument(self, contract: EngineUnderTest, name: str) -> None:
        contract.add("web-0", {"~/" + name: b"home", "/srv/" + name: b"abs"})
        e = contract.engine()
        [target] = await e.listTargets()
        assert await e.readFile(target, "~/" + name) == b"home"
        assert await e.readFile(target, "/srv/" + name) == b"abs"
        assert contract.commands() == [
            ["sh", "-c", 'exec cat -- "$HOME/$1"', "sh", name],
            ["cat", "--", "/srv/" + name],
        ]

    @pytest_twisted.ensureDeferred
    async def test_output_limit(self, contract: EngineUnderTest) -> None:
        exact = bytes(range(256)) * (MAX_FILE_SIZE // 256)
        contract.add("web-0", {"/exact": exact, "/big": exact + b"x"})
        e = contract.engine()
        [target] = await e.listTargets()
        assert await e.readFile(target, "/exact") == exact
        error = await failure(e.readFile(target, "/big"))
        assert f"more than {MAX_FILE_SIZE} bytes" in str(error)

    @pytest_twisted.ensureDeferred
    async def test_relative_path_refused(self, contract: EngineUnderTest) -> None:
        contract.add("web-0", {})
        e = contract.engine()
        [target] = await e.listTargets()
        for path in ("id.pub", "~", "~/", "~user/x", "/a\x00b"):
            with pytest.raises(ValueError):
                await e.readFile(target, path)
        assert contract.commands() == []
