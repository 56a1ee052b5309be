"""Small file helpers: atomic writes and content hashes for the on-disk caches."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hex digest of any JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``atomic_write_bytes`` for a JSON document (pretty-printed, UTF-8)."""
    return atomic_write_bytes(path, json.dumps(obj, indent=2, ensure_ascii=False).encode())


def read_text(path: str | os.PathLike, what: str = "file", error: type[Exception] = ValueError) -> str:
    """A UTF-8 text file's content; a missing or non-UTF-8 file raises ``error`` saying which."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text (byte {err.start}): save it as UTF-8") from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON, turning a truncated or corrupt file into one clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is corrupt or truncated (not valid JSON: {err})") from None


@contextmanager
def cache_lock(path: str | os.PathLike, timeout: float = 3600) -> Iterator[None]:
    """Hold an inter-process lock on one cache entry while it is checked and built.

    Two processes that need the same entry (two chapters executed side by side) build it
    once: the second waits, then finds what the first wrote. Uses the ``filelock``
    package (a ``<entry>.lock`` file beside the entry).
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        yield


@contextmanager
def try_cache_lock(path: str | os.PathLike) -> Iterator[bool]:
    """Take ``cache_lock``'s lock on one cache entry if no other process holds it; never wait.

    Yields True while this process holds the lock (released on exit) and False when another
    process holds it: a caller building several entries at once builds the ones it got and
    waits (with ``cache_lock``) for the others only afterwards, instead of blocking on each.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
