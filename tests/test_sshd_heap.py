# -*- test-case-name: tests.test_sshd_heap -*-
"""
glibc's malloc settings reach the re-executed daemon and no further
(L{diegossh.sshd.heap}); that sessions do not inherit them is
C{tests.test_sshd_dropin}'s, with the installed script.
"""

from __future__ import annotations

from diegossh.sshd import heap


def test_settings_are_added_and_named() -> None:
    env = heap.withSettings({"A": "b"})
    assert env == {
        "A": "b",
        "MALLOC_TOP_PAD_": "1048576",
        "MALLOC_TRIM_THRESHOLD_": "4194304",
        heap.ADDED: "MALLOC_TOP_PAD_,MALLOC_TRIM_THRESHOLD_",
    }
    heap.forgetSettings(env)
    assert env == {"A": "b"}


def test_a_callers_own_setting_is_kept_on_both_sides() -> None:
    env = heap.withSettings({"MALLOC_TOP_PAD_": "7"})
    assert env["MALLOC_TOP_PAD_"] == "7"
    assert env[heap.ADDED] == "MALLOC_TRIM_THRESHOLD_"
    heap.forgetSettings(env)
    assert env == {"MALLOC_TOP_PAD_": "7"}


def test_nothing_added_when_the_caller_set_both() -> None:
    given = {"MALLOC_TOP_PAD_": "1", "MALLOC_TRIM_THRESHOLD_": "2"}
    assert not heap.missing(given)
    env = heap.withSettings(given)
    assert env == given
    heap.forgetSettings(env)
    assert env == given


def test_missing_when_either_is_unset() -> None:
    assert heap.missing({})
    assert heap.missing({"MALLOC_TOP_PAD_": "1"})


def test_a_stale_mark_from_the_caller_is_not_trusted() -> None:
    # a caller's own ADDED naming its own setting: that setting stays
    env = heap.withSettings(
        {"MALLOC_TOP_PAD_": "7", heap.ADDED: "MALLOC_TOP_PAD_,MALLOC_TRIM_THRESHOLD_"}
    )
    heap.forgetSettings(env)
    assert env == {"MALLOC_TOP_PAD_": "7"}


def test_forgetting_removes_only_malloc_settings() -> None:
    env = {heap.ADDED: "PATH,MALLOC_TOP_PAD_", "PATH": "/bin", "MALLOC_TOP_PAD_": "1"}
    heap.forgetSettings(env)
    assert env == {"PATH": "/bin"}
