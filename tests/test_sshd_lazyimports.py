# -*- test-case-name: tests.test_sshd_lazyimports -*-
"""
The modules the daemon defers (L{diegossh.sshd.lazyimports}) stay unrun
through Twisted's imports and become the real modules when something uses
them. Each test runs in a fresh interpreter: deferring is process-wide and
only works before the module is first imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PRELUDE = """
import sys
from diegossh.sshd.lazyimports import deferTwistedsStdlib, isDeferred
deferTwistedsStdlib()
"""


def runFresh(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_twisteds_imports_leave_both_bodies_unrun() -> None:
    out = runFresh(
        """
        from diegossh.sshd.script import refuseUnneeded
        refuseUnneeded()  # as the daemon: pyOpenSSL's cryptography.x509 imports email
        import twisted.internet.reactor, twisted.python.compat
        from twisted.internet import defer
        import asyncio
        assert isDeferred(sys.modules["asyncio"]) and isDeferred(sys.modules["http.cookiejar"])
        for name in ("asyncio.base_events", "urllib.request", "http.client", "email"):
            assert name not in sys.modules, name
        # what Twisted holds are the real objects
        assert defer.iscoroutine is sys.modules["asyncio.coroutines"].iscoroutine
        assert defer.Future is sys.modules["asyncio.futures"].Future
        assert defer.AbstractEventLoop is sys.modules["asyncio.events"].AbstractEventLoop
        print("ok")
        """
    )
    assert out == "ok\n"


def test_coroutines_still_run_through_deferreds_without_the_body() -> None:
    out = runFresh(
        """
        from twisted.internet import defer
        async def f():
            return 7
        results = []
        defer.ensureDeferred(f()).addCallback(results.append)
        @defer.inlineCallbacks
        def g():
            value = yield defer.succeed(1)
            return value + 1
        g().addCallback(results.append)
        assert isDeferred(sys.modules["asyncio"])
        print(results)
        """
    )
    assert out == "[7, 2]\n"


def test_asyncio_becomes_the_real_module_on_first_use() -> None:
    out = runFresh(
        """
        import asyncio
        from twisted.internet import defer
        held = sys.modules["asyncio"]
        async def f():
            await asyncio.sleep(0)
            return "ran"
        print(asyncio.run(f()))
        assert not isDeferred(held) and sys.modules["asyncio"] is held
        import asyncio as again
        assert again is held and again.Future is defer.Future
        assert again.iscoroutine is defer.iscoroutine
        assert "run" in again.__all__
        # Twisted's own bridge works with the real loop
        loop = asyncio.new_event_loop()
        future = defer.succeed(3).asFuture(loop)
        print(loop.run_until_complete(future))
        loop.close()
        """
    )
    assert out == "ran\n3\n"


def test_from_asyncio_import_runs_the_body_once() -> None:
    out = runFresh(
        """
        import twisted.internet.defer
        from asyncio import Queue, Lock
        assert not isDeferred(sys.modules["asyncio"])
        import asyncio.queues
        assert Queue is asyncio.queues.Queue
        print(type(Lock()).__name__)
        """
    )
    assert out == "Lock\n"


def test_a_submodule_import_does_not_run_the_package_body() -> None:
    out = runFresh(
        """
        import asyncio.locks
        from asyncio import locks
        assert isDeferred(sys.modules["asyncio"])
        print(locks.Lock.__name__)
        """
    )
    assert out == "Lock\n"


def test_cookiejar_becomes_the_real_module_on_first_use() -> None:
    out = runFresh(
        """
        from twisted.python import compat
        held = sys.modules["http.cookiejar"]
        assert isDeferred(held)
        from http.cookiejar import CookieJar
        assert not isDeferred(held)
        import http.cookiejar
        assert http.cookiejar is held and held.CookieJar is CookieJar
        print(len(CookieJar()), "urllib.request" in sys.modules)
        """
    )
    assert out == "0 True\n"


def test_an_unknown_name_is_an_attribute_error_after_the_body_ran() -> None:
    out = runFresh(
        """
        import asyncio
        print(hasattr(asyncio, "noSuchName"), isDeferred(asyncio), hasattr(asyncio, "run"))
        """
    )
    assert out == "False False True\n"


def test_a_module_imported_already_is_left_alone() -> None:
    out = runFresh(
        """
        from diegossh.sshd.lazyimports import deferModuleBody
        import json
        print(deferModuleBody("json"), deferModuleBody("no_such_module_here"))
        """
    )
    assert out == "None None\n"


def test_the_body_runs_once_whichever_thread_asks_first() -> None:
    out = runFresh(
        """
        import threading
        import asyncio
        barrier = threading.Barrier(8)
        seen = []
        def use():
            barrier.wait()
            seen.append(asyncio.get_event_loop_policy)
        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(set(seen)), sys.modules["asyncio.events"].get_event_loop_policy in seen)
        """
    )
    assert out == "1 True\n"
