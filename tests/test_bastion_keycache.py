"""
The bastion's key cache, policy and key parsing, with an in-memory engine
and a fake clock: what a key opens, when the engine is asked, and that its
failures never take away what is cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from diegossh.bastion.authorizedkeys import AuthorizedKey, UnsupportedLine, operatorKey
from diegossh.bastion.keycache import KeyCache
from diegossh.bastion.policy import TargetPolicy
from diegossh.bastion.settings import parse, parseLabels
from diegossh.bastion.targets import EngineError, EngineTarget
from diegossh.interfaces import IContainerEngine
from tests.support.keys import authorizedKeyLine, key

KEY_A = key("ed25519")
KEY_B = key("p256")
KEY_C = key("rsa")


def line(k: Any) -> bytes:
    return authorizedKeyLine(k).encode()


@implementer(IContainerEngine)
class MemoryEngine:
    kind = "memory"

    def __init__(self) -> None:
        self.targets: list[EngineTarget] = []
        self.files: dict[str, bytes] = {}  # target name -> key file
        self.down = False
        self.lists = 0
        self.reads = 0
        self.pending: defer.Deferred[list[EngineTarget]] | None = None

    def add(self, name: str, address: str, published: bytes | None = None) -> EngineTarget:
        target = EngineTarget(name, f"id-{name}", address)
        self.targets.append(target)
        if published is not None:
            self.files[name] = published
        return target

    def listTargets(self) -> defer.Deferred[list[EngineTarget]]:
        self.lists += 1
        if self.pending is not None:
            return self.pending
        if self.down:
            return defer.fail(EngineError("engine down"))
        return defer.succeed(list(self.targets))

    def readFile(self, target: Any, path: str) -> defer.Deferred[bytes]:
        self.reads += 1
        assert path == "~/.ssh/id_ed25519.pub"
        if target.name not in self.files:
            return defer.fail(EngineError("cat: No such file or directory"))
        return defer.succeed(self.files[target.name])


class Published:
    """What targets answer on C{/publickey}, by address."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.asked: list[str] = []

    async def __call__(self, address: str) -> bytes | None:
        self.asked.append(address)
        return self.bodies.get(address)


def makeCache(
    engine: Any, published: Published | None = None, file: Path | None = None
) -> tuple[KeyCache, Clock]:
    clock = Clock()
    cache = KeyCache(
        clock,
        engine,
        published or Published(),
        "~/.ssh/id_ed25519.pub",
        str(file) if file else None,
        interval=60,
        minInterval=5,
    )
    return cache, clock


def lookup(cache: KeyCache, k: Any) -> bool:
    results: list[bool] = []
    defer.ensureDeferred(cache.lookup(k.blob())).addCallback(results.append)
    assert results, "lookup did not finish"
    return results[0]


def test_memory_engine_provides_the_interface() -> None:
    verifyObject(IContainerEngine, MemoryEngine())


def test_the_cache_is_a_service_whose_timer_runs_from_start_to_stop() -> None:
    engine = MemoryEngine()
    cache, clock = makeCache(engine)
    verifyObject(IService, cache)
    assert clock.getDelayedCalls() == [] and engine.lists == 0  # building starts nothing
    cache.startService()
    assert cache.running and engine.lists == 1  # refreshed at once
    clock.advance(60)
    assert engine.lists == 2
    cache.stopService()
    assert not cache.running
    assert clock.getDelayedCalls() == []
    clock.advance(600)
    assert engine.lists == 2  # no timer left behind


def test_stopping_cancels_a_refresh_in_flight() -> None:
    engine = MemoryEngine()
    cache, clock = makeCache(engine)
    cache.startService()
    engine.pending = defer.Deferred()
    clock.advance(60)  # a refresh now hangs on the engine
    waiting: list[bool] = []
    defer.ensureDeferred(cache.lookup(KEY_A.blob())).addCallback(waiting.append)
    assert waiting == []
    cache.stopService()
    assert engine.pending.called  # the engine call was cancelled
    assert waiting == [False]  # and the waiting login answered from what is cached
    assert cache.lastError is None  # a stop is not an engine failure
    assert clock.getDelayedCalls() == []


def test_http_key_first_then_exec_and_each_key_opens_its_own_target() -> None:
    engine = MemoryEngine()
    engine.add("ws-a", "10.0.0.2", published=line(KEY_A))
    engine.add("ws-b", "10.0.0.3", published=line(KEY_B))
    published = Published()
    published.bodies["10.0.0.2"] = line(KEY_A) + b"\n"
    cache, _ = makeCache(engine, published)
    cache.startService()
    assert engine.reads == 1  # only ws-b needed an exec
    assert lookup(cache, KEY_A) and lookup(cache, KEY_B)
    a = cache.destination(KEY_A.blob(), "ws-a", 22)
    assert a is not None and a.address == "10.0.0.2"
    assert cache.destination(KEY_A.blob(), "10.0.0.2", 22) == a
    assert cache.destination(KEY_A.blob(), "ws-b", 22) is None
    assert cache.destination(KEY_B.blob(), "ws-a", 22) is None
    assert cache.destination(KEY_A.blob(), "nosuch", 22) is None


def test_unknown_keys_refresh_at_most_once_per_min_interval() -> None:
    engine = MemoryEngine()
    cache, clock = makeCache(engine)
    cache.startService()
    assert engine.lists == 1
    for _ in range(50):
        assert not lookup(cache, KEY_C)
    assert engine.lists == 2  # the first knock refreshed, the rest were answered from memory
    clock.advance(5)
    assert not lookup(cache, KEY_C)
    assert engine.lists == 3


def test_a_new_target_is_found_by_the_knock_of_its_key() -> None:
    engine = MemoryEngine()
    cache, _ = makeCache(engine)
    cache.startService()
    assert not cache.knows(KEY_A.blob())
    engine.add("ws-new", "10.0.0.9", published=line(KEY_A))
    assert lookup(cache, KEY_A)
    assert cache.destination(KEY_A.blob(), "ws-new", 22) is not None


def test_engine_down_keeps_cached_keys_and_a_gone_target_closes() -> None:
    engine = MemoryEngine()
    engine.add("ws-a", "10.0.0.2", published=line(KEY_A))
    cache, clock = makeCache(engine)
    cache.startService()
    engine.down = True
    clock.advance(60)
    assert cache.lastError == "engine down"
    assert lookup(cache, KEY_A)
    assert cache.destination(KEY_A.blob(), "ws-a", 22) is not None
    engine.down = False
    engine.targets.clear()
    clock.advance(60)
    assert not cache.knows(KEY_A.blob())
    assert cache.destination(KEY_A.blob(), "ws-a", 22) is None


def test_known_keys_do_not_wait_for_a_hanging_refresh() -> None:
    engine = MemoryEngine()
    engine.add("ws-a", "10.0.0.2", published=line(KEY_A))
    cache, clock = makeCache(engine)
    cache.startService()
    engine.pending = defer.Deferred()
    clock.advance(60)  # a refresh now hangs on the engine
    assert lookup(cache, KEY_A)
    waiting: list[bool] = []
    defer.ensureDeferred(cache.lookup(KEY_B.blob())).addCallback(waiting.append)
    defer.ensureDeferred(cache.lookup(KEY_C.blob()))  # inside minInterval: no second call
    assert waiting == []
    assert engine.lists == 2  # one refresh in flight, shared
    engine.pending.errback(EngineError("timed out"))
    assert waiting == [False]


def test_a_target_without_a_key_yet_is_asked_again_next_time() -> None:
    engine = MemoryEngine()
    engine.add("ws-a", "10.0.0.2")
    cache, clock = makeCache(engine)
    cache.startService()
    assert engine.reads == 1
    engine.files["ws-a"] = line(KEY_A)
    clock.advance(60)
    assert engine.reads == 2
    assert cache.knows(KEY_A.blob())
    clock.advance(60)
    assert engine.reads == 2  # known targets are not asked again


def test_operator_file_with_and_without_permitopen(tmp_path: Path) -> None:
    path = tmp_path / "authorized_keys_cache"
    path.write_text(
        f'permitopen="ws-*:22" {authorizedKeyLine(KEY_A)}\n{authorizedKeyLine(KEY_B)}\n'
    )
    cache, _ = makeCache(None, file=path)
    cache.startService()
    assert lookup(cache, KEY_A) and lookup(cache, KEY_B) and not lookup(cache, KEY_C)
    assert cache.destination(KEY_A.blob(), "ws-1", 22) is not None
    assert cache.destination(KEY_A.blob(), "ws-1", 2222) is None
    assert cache.destination(KEY_A.blob(), "db-1", 22) is None
    anywhere = cache.destination(KEY_B.blob(), "db-1", 5432)
    assert anywhere is not None and anywhere.address == "db-1"
    path.write_text(authorizedKeyLine(KEY_C) + "\n# changed\n")
    cache.refresh()
    assert not cache.knows(KEY_A.blob()) and cache.knows(KEY_C.blob())


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ('from="10.0.0.1"', "option 'from'"),
        ("restrict", "option 'restrict'"),
        ("no-port-forwarding", "could open nothing"),
        ('permitopen="nohostport"', "not host:port"),
    ],
)
def test_restrictions_we_cannot_honour_skip_the_line(options: str, why: str) -> None:
    with pytest.raises(UnsupportedLine, match=why):
        operatorKey(f"{options} {authorizedKeyLine(KEY_A)}")


def test_operator_lines() -> None:
    assert operatorKey("  # comment") is None
    entry = operatorKey(
        f'no-pty,permitopen="[10.0.0.2]:22",permitopen="ws-\\"x:*" {authorizedKeyLine(KEY_A)}'
    )
    assert entry is not None
    assert entry.permitOpen == (("10.0.0.2", "22"), ('ws-"x', "*"))
    assert operatorKey(authorizedKeyLine(KEY_B)) == AuthorizedKey(KEY_B.public(), None)
    with pytest.raises(UnsupportedLine, match="not a public key"):
        operatorKey("ssh-ed25519 AAAAnotbase64")


def test_policy_hosts_and_ports() -> None:
    policy = TargetPolicy.fromSettings("workspace-*, db-1", "22,2222")
    assert policy.refusal("workspace-7", 22) is None
    assert policy.refusal("DB-1", 2222) is None
    assert policy.refusal("workspace", 22) == "target host workspace is not permitted by this proxy"
    assert policy.refusal("db-1", 23) == "target port 23 is not permitted by this proxy"
    assert TargetPolicy.fromSettings("*", "*").refusal("anything", 65535) is None
    with pytest.raises(ValueError, match="not a TCP port"):
        TargetPolicy.fromSettings("*", "http")


def test_labels_and_settings_validation() -> None:
    assert parseLabels("a=1, b.io/x=two") == {"a": "1", "b.io/x": "two"}
    assert parseLabels("") == {}
    for bad in ("a", "=1", "a=1=2"):
        with pytest.raises(ValueError, match="label=value"):
            parseLabels(bad)
    from diegossh.bastion.settings import SETTINGS

    settings = {flag: default for flag, (_, _, default) in SETTINGS.items()}
    settings["communicationTimeout"] = 10.0
    parse(settings, {})
    with pytest.raises(ValueError, match="containerEngine"):
        parse({**settings, "containerEngine": "podman"}, {})
    with pytest.raises(ValueError, match="dockerHost"):
        parse({**settings, "containerEngine": "docker", "dockerHost": "tcp://1.2.3.4:2375"}, {})
