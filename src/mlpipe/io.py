"""Atomic writes: a failed stage leaves the previous outputs as they were.

Every temporary is a sibling of its output, named `.<name>.<pid>.<random>.tmp`
(plus the output's suffix for `atomic_path`): the writer's PID in the name lets
the next write of the same output remove what a killed writer left behind,
and only that (see `remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Temporaries this process is writing now: a leftover with our own PID is stale
# (an earlier process that had our PID) unless it is in here (another thread's).
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()
_RANDOM = "[a-z0-9_]{8}"  # what tempfile puts between prefix and suffix


def read_json(path: str | Path) -> Any:
    """Read a JSON file another stage wrote; a problem names the file."""
    from mlpipe.errors import DataError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None


def _stale_pattern(path: Path) -> re.Pattern[str]:
    """Names of `path`'s temporaries: ours (with a PID), atomic_dir's `.old-<pid>`, and the
    PID-less ones that earlier versions of this module wrote."""
    name, suffix = re.escape(path.name), re.escape(path.suffix)
    legacy = [f"{_RANDOM}\\.tmp"] + ([f"{_RANDOM}{suffix}"] if path.suffix else [])
    return re.compile(
        rf"\.{name}\.(?:(?P<pid>\d+)\.{_RANDOM}\.tmp(?:{suffix})?|old-(?P<old>\d+)"
        rf"|(?P<legacy>{'|'.join(legacy)}))"
    )


def _writer_is_gone(pid: int, candidate: Path) -> bool:
    if pid == os.getpid():
        with _LIVE_LOCK:
            return candidate.name not in _LIVE
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    except (OverflowError, ValueError):  # not a possible PID
        return True
    return False


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of `path` whose writer is gone (killed mid-write); log each.

    A temporary whose PID belongs to a live process (another run writing the same output,
    or an unrelated process that reused the PID) is left alone.
    """
    path = Path(path)
    pattern = _stale_pattern(path)
    try:
        names = sorted(os.listdir(path.parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        candidate = path.parent / name
        pid = match.group("pid") or match.group("old")
        if pid is not None and not _writer_is_gone(int(pid), candidate):
            continue
        if _remove(candidate):
            writer = f"pid {pid}" if pid is not None else "no PID in its name: an older mlpipe"
            log.warning(
                "removed %s: left over by a killed write of %s (%s)", candidate, path, writer
            )
            removed.append(candidate)
    return removed


def _remove(candidate: Path) -> bool:
    """Delete a file or folder (never following a link); False if it could not be.

    A leftover that cannot be removed is only logged: it must not stop the write.
    """
    try:
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate)
        else:
            candidate.unlink()
    except FileNotFoundError:  # another writer of the same output removed it first
        return False
    except OSError as exc:
        log.warning("%s: left over by a killed write, but cannot be removed: %s", candidate, exc)
        return False
    return True


@contextlib.contextmanager
def _temporary(path: Path, suffix: str, folder: bool = False) -> Iterator[Path]:
    """A new temporary beside `path`, known to this process as live until the block ends."""
    remove_stale_temporaries(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{os.getpid()}."
    with _LIVE_LOCK:  # created and registered together: a cleaner in another thread waits
        if folder:
            tmp = tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix)
        else:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
            os.close(fd)
        _LIVE.add(Path(tmp).name)  # unique in its folder: random part and PID
    try:
        yield Path(tmp)
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(Path(tmp).name)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    with _temporary(path, ".tmp") as tmp:
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only on success.

    For writers that want a file name (savefig, downloads). The temporary ends in
    `path`'s suffix, for writers that pick the format from it.
    """
    path = Path(path)
    with _temporary(path, f".tmp{path.suffix}") as tmp:
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty sibling folder; on success it replaces `path` whole.

    The old folder is moved aside and removed only after the new one is in place.
    """
    path = Path(path)
    with _temporary(path, ".tmp", folder=True) as tmp:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the usual folder mode
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:  # put the previous folder back
                os.replace(old, path)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
