# -*- test-case-name: tests.test_cf_usernames -*-
"""Parsing C{cf:} principals: strict, anchored, ASCII, int32."""

from __future__ import annotations

import pytest

from diegossh.proxy.cf.usernames import (
    INT32_MAX,
    MALFORMED,
    AppInstance,
    checkAppInstance,
    parseAppInstance,
)
from diegossh.proxy.errors import LoginDenied

GUID = "2b4e8f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (f"{GUID}/0", AppInstance(GUID, 0)),
        (f"{GUID}/12", AppInstance(GUID, 12)),
        (f"{GUID}/007", AppInstance(GUID, 7)),
        (f"{GUID}/{INT32_MAX}", AppInstance(GUID, INT32_MAX)),
        (f"{GUID.upper()}/1", AppInstance(GUID.upper(), 1)),
    ],
)
def test_valid(principal: str, expected: AppInstance) -> None:
    assert parseAppInstance(principal) == expected


@pytest.mark.parametrize(
    "principal",
    [
        "",
        "/",
        GUID,
        f"{GUID}/",
        f"/{GUID}/0",
        f"{GUID}/0/1",
        f"{GUID}/-1",
        f"{GUID}/+1",
        f"{GUID}/1.0",
        f"{GUID}/0x1",
        f"{GUID}/{INT32_MAX + 1}",
        f"{GUID}/99999999999",
        f"{GUID}/{'9' * 5000}",
        f"{GUID}/\u0661",  # an Arabic-Indic digit one
        f"{GUID}/0\n",
        f"{GUID}/ 0",
        f" {GUID}/0",
        f"{GUID}\n/0",
        f"x{GUID}/0",
        f"{GUID}x/0",
        f"cf:{GUID}/0",
        "2b4e8f6a1c3d4e5f8a9b0c1d2e3f4a5b/0",
        "{2b4e8f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b}/0",
        "2b4e8f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5g/0",
        "2b4e8f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5/0",
        "app-guid-1/0",
        "../../v1/actual_lrps/0",
    ],
)
def test_malformed(principal: str) -> None:
    with pytest.raises(LoginDenied) as info:
        parseAppInstance(principal)
    assert info.value.reason == MALFORMED


@pytest.mark.parametrize("index", [-1, INT32_MAX + 1, True, 1.0, "0"])
def test_check_rejects_bad_index(index: object) -> None:
    with pytest.raises(LoginDenied):
        checkAppInstance(GUID, index)  # type: ignore[arg-type]


def test_check_accepts() -> None:
    assert checkAppInstance(GUID, 3) == AppInstance(GUID, 3)
