"""
lager's JSON lines (L{diegossh.lager}): both timestamp forms, the four
levels, filtering, and no event field written unless the event asks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from diegossh.lager import (
    LagerObserver,
    epochTimestamp,
    parseLogLevel,
    parseTimeFormat,
    rfc3339Timestamp,
)

NOW = 1_764_745_200_123_456_789  # 2025-12-03T07:00:00.123456789Z


def observe(**kwargs: Any) -> tuple[LagerObserver, list[str]]:
    lines: list[str] = []
    observer = LagerObserver(lines.append, "ssh-proxy", now=lambda: NOW, **kwargs)
    return observer, lines


def test_an_upstream_line_in_epoch_form() -> None:
    observer, lines = observe()
    log = Logger(observer=observer)
    log.info("listening", lager="started", lager_data={"address": "0.0.0.0:2222"})
    assert lines == [
        '{"timestamp":"1764745200.123456789","source":"ssh-proxy","message":"ssh-proxy.started",'
        '"log_level":1,"data":{"address":"0.0.0.0:2222"}}\n'
    ]


def test_the_rfc3339_form_has_a_level_name() -> None:
    observer, lines = observe(timeFormat="rfc3339")
    Logger(observer=observer).error("x", lager="failed", lager_data={})
    assert list(json.loads(lines[0]).items()) == [
        ("timestamp", "2025-12-03T07:00:00.123456789Z"),
        ("source", "ssh-proxy"),
        ("message", "ssh-proxy.failed"),
        ("level", "error"),
        ("data", {}),
    ]


def test_timestamps() -> None:
    assert epochTimestamp(5) == "0.000000005"
    assert rfc3339Timestamp(1_500_000_000_000_000_000) == "2017-07-14T02:40:00Z"
    assert rfc3339Timestamp(1_500_000_000_500_000_000) == "2017-07-14T02:40:00.5Z"


@pytest.mark.parametrize(
    ("minimum", "written"),
    [
        ("debug", ["debug", "info", "warn", "error", "critical"]),
        ("info", ["info", "warn", "error", "critical"]),
        ("error", ["error", "critical"]),
        ("fatal", ["critical"]),
    ],
)
def test_levels_filter(minimum: str, written: list[str]) -> None:
    observer, lines = observe(level=parseLogLevel(minimum))
    log = Logger(observer=observer)
    for name in ("debug", "info", "warn", "error", "critical"):
        log.emit(LogLevel.levelWithName(name), name)
    assert [json.loads(line)["data"]["message"] for line in lines] == written
    numbers = {"debug": 0, "info": 1, "warn": 1, "error": 2, "critical": 3}
    assert [json.loads(line)["log_level"] for line in lines] == [numbers[w] for w in written]


def test_set_level_while_running() -> None:
    observer, lines = observe()
    log = Logger(observer=observer)
    log.debug("hidden")
    observer.setLevel("DEBUG")
    log.debug("shown")
    assert [json.loads(line)["data"]["message"] for line in lines] == ["shown"]


def test_other_events_write_their_text_only() -> None:
    observer, lines = observe()
    Logger(observer=observer).info("user {user} in", user="alice", password="s3cret")
    line = json.loads(lines[0])
    assert line["message"] == "ssh-proxy.log"
    assert line["data"] == {"message": "user alice in"}
    assert "s3cret" not in lines[0]


def test_a_failure_gives_its_message_as_error() -> None:
    observer, lines = observe()
    Logger(observer=observer).failure(
        "broke", Failure(ValueError("bad key")), lager="failed-to-parse-host-key"
    )
    line = json.loads(lines[0])
    assert line["message"] == "ssh-proxy.failed-to-parse-host-key"
    assert line["data"] == {"error": "bad key"} and line["log_level"] == 3


@pytest.mark.parametrize("bad", ["warn", "", "verbose"])
def test_bad_levels_and_formats_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="debug, info, error or fatal"):
        parseLogLevel(bad)
    with pytest.raises(ValueError, match="unix-epoch or rfc3339"):
        parseTimeFormat(bad)
