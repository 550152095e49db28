"""
C{twistd --help} lists both services after C{pip install .} and after
C{pip install -e .}: plugin discovery from an editable install is a known
pitfall, so each is tried in a fresh venv (dependencies borrowed from this one).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_twistd_lists_both_services(tmp_path: Path, editable: bool) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # Dependencies come from the test venv; its own .pth files (our editable
    # install among them) are not processed from a path added this way.
    Path(site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    install += ["-e", str(ROOT)] if editable else [str(ROOT)]
    subprocess.run(install, check=True, cwd=tmp_path, capture_output=True)
    result = subprocess.run(
        [str(python), "-c", "from twisted.scripts.twistd import run; run()", "--help"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert "diego-sshd" in result.stdout, result.stderr
    assert "diego-ssh-proxy" in result.stdout
    where = subprocess.run(
        [str(python), "-c", "import diegossh; print(diegossh.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(ROOT)) == editable


def test_dropin_cache_is_ignored() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "twisted/plugins/dropin.cache"], cwd=ROOT, capture_output=True,
        check=False,
    )  # fmt: skip
    assert ignored.returncode == 0
