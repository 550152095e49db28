"""
The daemon's child processes: wide pipes, read widely.
"""

from __future__ import annotations

import fcntl
import os

from diegossh.sshd.process import PIPE_SIZE, widenPipe


def test_widen_pipe() -> None:
    r, w = os.pipe()
    try:
        widenPipe(w)
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == PIPE_SIZE
    finally:
        os.close(r)
        os.close(w)


def test_widen_pipe_refused_is_harmless() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    widenPipe(w)  # a closed descriptor: nothing raised, nothing to do
