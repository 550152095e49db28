# -*- test-case-name: tests.test_sshd_lazyimports,tests.test_twisted_contract -*-
"""
Two standard library modules Twisted imports at start-up and the daemon
never uses, loaded only if something does use them (issue 15).

  - C{twisted.python.compat} does C{from http import cookiejar as cookielib},
    for a deprecated alias; C{http.cookiejar} brings C{urllib.request},
    C{http.client} and the C{email} package: 1.6 MiB and about 20 ms.
  - C{twisted.internet.defer} does C{from asyncio import AbstractEventLoop,
    Future, iscoroutine}: C{iscoroutine} is called when a callback returns
    a coroutine, the two classes only name types in annotations. The
    package's C{__init__} imports all of asyncio (event loops, streams,
    subprocesses, tasks, queues...): 2.1 MiB, of which those three names
    need 1.2 (C{asyncio.coroutines}, C{.events}, C{.futures}).

L{deferModuleBody} puts such a module in C{sys.modules} as the import system
itself would make it (same spec, file, package path), with its body not run
yet. Its body runs, in place, the first time a name it would define is
asked of it: the module object Twisted holds becomes the real one, the same
object every later C{import} returns, as after an ordinary import. Until
then it holds only what was asked for eagerly, and those are the real
objects: the named submodules, imported as any other import of them would
(a package's submodules do not need its C{__init__}), and names bound from
them exactly as the C{__init__} binds them (asyncio's does
C{from .coroutines import *} and so on, so C{asyncio.iscoroutine} is
C{asyncio.coroutines.iscoroutine} either way). While the body has not run,
an attribute that is one of the package's submodules (C{from . import
format_helpers}, inside asyncio) imports that submodule only.

This is the standard library's C{importlib.util.LazyLoader}, with two
differences that make it usable here: LazyLoader runs the body on any
attribute access, including the import system's own look at C{__spec__}
and C{from package import name}'s, so Twisted's C{from asyncio import ...}
would run it at once; and it has no lock (here an C{RLock}, so two threads
cannot run the body twice). What Twisted takes from these modules is
pinned by C{tests.test_twisted_contract}: a Twisted that imports something
else from them fails there, by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["DEFERRED", "deferModuleBody", "deferTwistedsStdlib", "isDeferred"]

# module -> (its submodules to import now, {name: submodule it comes from});
# what Twisted needs of them when the daemon imports it.
DEFERRED: Mapping[str, tuple[Sequence[str], Mapping[str, str]]] = {
    "http.cookiejar": ((), {}),
    "asyncio": (
        ("coroutines", "events", "futures"),
        {"iscoroutine": "coroutines", "AbstractEventLoop": "events", "Future": "futures"},
    ),
}

_lock = threading.RLock()


class _BodyNotRun(ModuleType):
    """
    A module whose body has not run yet: the first name asked of it that
    it does not hold runs the body (or imports the submodule of that name).
    """

    def __getattr__(self, name: str) -> Any:
        path = self.__dict__.get("__path__")
        if path is not None and not name.startswith("__"):
            child = f"{self.__name__}.{name}"
            if child in sys.modules or importlib.util.find_spec(child) is not None:
                return importlib.import_module(child)
        _runBody(self)
        return getattr(self, name)


def _runBody(module: ModuleType) -> None:
    with _lock:
        if type(module) is not _BodyNotRun:
            return
        module.__class__ = ModuleType  # type: ignore[assignment]  # back to a plain module
        spec = module.__spec__
        if spec is None or spec.loader is None:  # never: deferModuleBody set them
            raise ImportError(f"{module.__name__} has no loader", name=module.__name__)
        spec.loader.exec_module(module)


def isDeferred(module: ModuleType) -> bool:
    """
    Whether C{module}'s body has yet to run.
    """
    return type(module) is _BodyNotRun


def deferModuleBody(
    name: str,
    submodules: Sequence[str] = (),
    names: Mapping[str, str] | None = None,
) -> ModuleType | None:
    """
    Put module C{name} in C{sys.modules} with its body not run,
    its C{submodules} imported and C{names} (name -> the submodule defining
    it) bound; the module, or None when it was imported already (nothing is
    changed then) or cannot be found.
    """
    modules = sys.modules
    if name in modules:
        return None
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _BodyNotRun
    modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        # as the import system does, so that `from http import cookiejar`
        # finds it without asking the module itself anything
        setattr(modules[parent], child, module)
    for submodule in submodules:
        importlib.import_module(f"{name}.{submodule}")
    for attribute, submodule in (names or {}).items():
        setattr(module, attribute, getattr(modules[f"{name}.{submodule}"], attribute))
    return module


def deferTwistedsStdlib() -> None:
    """
    L{deferModuleBody} for each of L{DEFERRED}; before Twisted is imported,
    in the daemon's process only.
    """
    for name, (submodules, names) in DEFERRED.items():
        deferModuleBody(name, submodules, names)
