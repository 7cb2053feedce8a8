"""Files written atomically (a temporary file or folder beside the target, then one rename).

A reader never sees half a file: a process killed mid-write leaves the previous version or
none. Used by every part that writes a run's, a comparison's or an export's files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from warmstart.errors import WarmstartError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable_by_others(path: str | Path, folder: bool = False) -> None:
    """Give a temporary file or folder the permissions a plain write would have (0644/0755
    under the usual umask): `tempfile` makes them 0600/0700, and a shared run directory must
    be readable by colleagues."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def check_writable(path: Path, what: str) -> None:
    """Refuse, before any work, an output file that cannot be written: one line naming it.

    Raises:
        WarmstartError: the folder is missing or not writable, or `path` is a folder.
    """
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise WarmstartError(f"{what} {str(path)!r} is a folder; give a file name")
    if not parent.is_dir():
        raise WarmstartError(f"{what} {str(path)!r}: folder {str(parent)!r} does not exist; "
                             "create it or choose another path")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise WarmstartError(f"{what} {str(path)!r} is not writable; choose another path")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        readable_by_others(tmp)
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
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    readable_by_others(tmp, folder=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """Replace `final` with the finished folder `tmp`."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


LOCK = ".lock"


class FolderLock:
    """An exclusive lock on a folder that one process writes (a run, a comparison).

    `fcntl.flock` on `<folder>/.lock`: the kernel drops it when the holder exits, however it
    exits, so a SIGKILLed run leaves no lock that blocks `--resume`. The file holds the pid
    of the holder, for the message a second writer gets. A folder this lock created (with
    its missing parents) is removed again on release if nothing but the lock was put in it,
    so a run refused before it wrote anything leaves no directory behind.

    Use as a context manager; the second process fails at once with a WarmstartError.
    """

    def __init__(self, folder: Path, what: str, hint: str) -> None:
        self.folder = Path(folder)
        self.what = what  # e.g. "warmstart train", for the message
        self.hint = hint  # what the second writer can do instead
        self.fd: int | None = None
        self.created: list[Path] = []

    def __enter__(self) -> FolderLock:
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WarmstartError(f"cannot create {str(self.folder)!r}: "
                                 f"{e.strerror or e}; choose a writable output.dir") from None
        self.created = missing  # innermost first
        path = self.folder / LOCK
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                self._release_created()
                raise WarmstartError(f"cannot write in {str(self.folder)!r}: "
                                     f"{e.strerror or e}; choose a writable output.dir") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
                os.close(fd)
                self._release_created()
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise WarmstartError(f"{self.folder} is in use: {who} is writing to it "
                                     f"({self.what}); {self.hint}") from None
            # A releasing holder unlinks the file: the one we locked must still be the one there.
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is None:
            return
        (self.folder / LOCK).unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
        self._release_created()

    def _release_created(self) -> None:
        for folder in self.created:  # innermost first; stops at the first that is not empty
            try:
                folder.rmdir()
            except OSError:
                break


# A run directory's folder of results keyed by a fingerprint of what they were computed from
# (a distillation's teacher outputs): they cannot go stale, so starting a run over keeps them.
CACHES = "caches"


def clear_folder(folder: Path) -> None:
    """Remove everything in `folder` but its lock file and `CACHES` (the folder stays,
    locked)."""
    for entry in folder.iterdir():
        if entry.name in (LOCK, CACHES):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def fingerprint(path: Path) -> dict[str, Any]:
    """What identifies a data file's content: size, mtime and a SHA-256 of the bytes.

    A folder (of images) gets the total size, the newest mtime and a SHA-256 over its files'
    relative paths, sizes and mtimes (hashing every image would cost more than it tells).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        stats = [(str(p.relative_to(path)), p.stat()) for p in files]
        listing = "\n".join(f"{name}\t{st.st_size}\t{st.st_mtime_ns}" for name, st in stats)
        return {"size": sum(st.st_size for _, st in stats),
                "mtime_ns": max((st.st_mtime_ns for _, st in stats), default=0),
                "sha256": hashlib.sha256(listing.encode()).hexdigest()}
    st = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}


def same_content(saved: dict[str, Any], path: Path) -> bool:
    """Whether `path` still holds what `saved` (a `fingerprint`) describes.

    Unchanged size and mtime mean unchanged; otherwise the hash decides, so a file that was
    only touched, or copied back, still counts as the same.
    """
    path = Path(path)
    if not path.exists():
        return False
    if not path.is_dir():
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) == (saved.get("size"), saved.get("mtime_ns")):
            return True
    return fingerprint(path)["sha256"] == saved.get("sha256")
