"""
Every module of diegossh (and of its Twisted dropins) starts with a
C{# -*- test-case-name: tests.test_x -*-} line naming test modules that
exist: C{trial --testmodule} and editors find a module's tests from it, and
a name left behind by a renamed or merged test file points nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"# -\*- test-case-name: (?P<names>[\w.]+(?:, ?[\w.]+)*) -\*-")
SOURCES = sorted([*(ROOT / "diegossh").rglob("*.py"), *(ROOT / "twisted" / "plugins").glob("*.py")])


def _named(source: Path) -> list[str]:
    """The test modules line 1 of C{source} names; empty if it has no header."""
    with source.open(encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
    match = HEADER.fullmatch(first)
    return [] if match is None else [n.strip() for n in match["names"].split(",")]


def _missing(name: str) -> bool:
    return not (ROOT / Path(*name.split("."))).with_suffix(".py").is_file()


def test_there_are_sources() -> None:
    assert len(SOURCES) > 50


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_line_one_names_existing_test_modules(source: Path) -> None:
    names = _named(source)
    assert names, f"{source.relative_to(ROOT)}: line 1 is not # -*- test-case-name: tests.x -*-"
    assert all(n.startswith("tests.test_") for n in names), names
    assert [n for n in names if _missing(n)] == [], f"{source.relative_to(ROOT)} names them"


def test_the_check_reads_headers(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text("# -*- test-case-name: tests.test_keys,tests.test_nosuch -*-\n")
    assert _named(good) == ["tests.test_keys", "tests.test_nosuch"]
    assert [_missing(n) for n in _named(good)] == [False, True]
    late = tmp_path / "late.py"
    late.write_text('"""Doc."""\n# -*- test-case-name: tests.test_keys -*-\n')
    assert _named(late) == []
