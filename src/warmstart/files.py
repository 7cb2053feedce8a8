"""Files written atomically (a temporary file or folder beside the target, then one rename).

A reader never sees half a file: a process killed mid-write leaves the previous version or
none. Used by every part that writes a run's, a comparison's or an export's files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """JSON (indented, for people to read) written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def atomic_dir(final: Path) -> Path:
    """A fresh temporary sibling folder; `commit_dir` moves it to `final` in one rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))


def commit_dir(tmp: Path, final: Path) -> None:
    """Replace `final` with the finished folder `tmp`."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
