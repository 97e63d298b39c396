"""What DVC watches in the source folder: a digest of its files' paths, sizes and mtimes.

`data.path` lies outside the repository (or may): DVC does not see its files change. The
`manifest` stage runs on every `dvc repro` (`always_changed`, about a second) and writes
a small JSON of the folder's file count, total size and a SHA-256 over one line
`<relative path>\\t<size>\\t<mtime ns>` per file; the ingest stage depends on that file, so
editing, adding, deleting or touching an image reruns ingest, and an unchanged folder
writes the same bytes and reruns nothing. The files listed are the ones ingest walks
(hidden entries left out, links inside the folder followed). No pixels are read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mlpipe.errors import DataError
from mlpipe.ingest.config import DataConfig, DataSource
from mlpipe.ingest.walk import Walker


def folder_manifest(cfg: DataConfig) -> dict[str, Any]:
    """The manifest of `cfg.path` (none for the built-in sources without a path)."""
    out: dict[str, Any] = {"source": DataSource(cfg.source).value, "path": cfg.path}
    if cfg.path is None:
        return out
    root = Path(cfg.path).expanduser()
    try:
        files = list_files(root, cfg.follow_external_links)
    except (DataError, OSError) as exc:  # ingest reports the problem, in its own words
        out["error"] = str(exc)
        return out
    digest = hashlib.sha256()
    total = 0
    for rel, size, mtime in files:
        digest.update(f"{rel}\t{size}\t{mtime}\n".encode())
        total += size
    out.update(files=len(files), bytes=total, sha256=digest.hexdigest())
    return out


def list_files(root: Path, follow_external_links: bool) -> list[tuple[str, int, int]]:
    """(path under root, size, mtime in ns) of each file ingest would look at, sorted."""
    if not root.exists():
        raise DataError(f"data.path={root}: missing")
    if root.is_file():
        stat = root.stat()
        return [(root.name, stat.st_size, stat.st_mtime_ns)]
    found = []
    for path in Walker(root, follow_external_links).files(root):
        stat = path.stat()
        found.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return found
