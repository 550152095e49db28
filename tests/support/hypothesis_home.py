"""
Import before using hypothesis: its caches go to a temporary directory
(removed at exit) instead of C{.hypothesis} in the working tree; tests also
pass C{database=None} so no example database is written.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

from hypothesis.configuration import set_hypothesis_home_dir

_HOME = tempfile.mkdtemp(prefix="hypothesis-")
set_hypothesis_home_dir(_HOME)
atexit.register(shutil.rmtree, _HOME, True)
