"""The folder lock: one writer per run/compare directory; a killed holder leaves no lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warmstart.errors import WarmstartError
from warmstart.files import LOCK, FolderLock, atomic_write_text, clear_folder

SRC = str(Path(__file__).resolve().parents[1] / "src")


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the lock on `folder` (it prints 'held' once it does)."""
    code = ("import sys, time; from pathlib import Path; from warmstart.files import FolderLock\n"
            f"with FolderLock(Path({str(folder)!r}), 'test', 'wait'):\n"
            "    print('held', flush=True); time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_fails_naming_the_pid_and_a_killed_holder_frees_it(tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    try:
        with pytest.raises(WarmstartError) as e, FolderLock(folder, "warmstart train", "wait"):
            pass
        assert f"process {holder.pid}" in str(e.value) and str(folder) in str(e.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (folder / LOCK).exists()  # a stale lock file, as SIGKILL leaves it
    with FolderLock(folder, "warmstart train", "wait"):
        assert (folder / LOCK).read_text().strip() == str(os.getpid())
    assert list(folder.iterdir()) == []  # the stale lock file is gone too


def test_lock_removes_only_folders_it_created_and_left_empty(tmp_path):
    folder = tmp_path / "a" / "b"
    with FolderLock(folder, "x", "y"):
        assert folder.is_dir()
    assert not (tmp_path / "a").exists()
    with FolderLock(folder, "x", "y"):
        atomic_write_text(folder / "config.yaml", "a: 1\n")
    assert (folder / "config.yaml").is_file() and not (folder / LOCK).exists()


def test_clear_folder_keeps_the_lock(tmp_path):
    with FolderLock(tmp_path / "r", "x", "y") as lock:
        (lock.folder / "sub").mkdir()
        (lock.folder / "sub" / "f").write_text("1")
        (lock.folder / "g").write_text("2")
        clear_folder(lock.folder)
        assert [p.name for p in lock.folder.iterdir()] == [LOCK]


def test_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")  # (permissions do not stop root)
    with pytest.raises(WarmstartError, match="file") as e, \
            FolderLock(tmp_path / "file" / "r", "x", "y"):
        pass
    assert "\n" not in str(e.value)


def test_lock_waits_for_nobody(tmp_path):
    holder = hold_lock(tmp_path / "r")
    try:
        started = time.perf_counter()
        with pytest.raises(WarmstartError), FolderLock(tmp_path / "r", "x", "y"):
            pass
        assert time.perf_counter() - started < 5
    finally:
        holder.kill()
        holder.wait(timeout=30)
