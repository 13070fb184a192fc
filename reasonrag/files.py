"""Writing model directories so that a reader never sees half of one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def swap_in(tmp: Path, target: Path) -> None:
    """Move the finished directory `tmp` to `target`, replacing an older one there in two renames."""
    if target.exists():
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
