"""The source folder's manifest: stable while nothing changes, different after any edit."""

from __future__ import annotations

import os
from pathlib import Path

from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.manifest import folder_manifest


def cfg(path: Path | None) -> DataConfig:
    return DataConfig(source="imagefolder", path=None if path is None else str(path))  # type: ignore[arg-type]


def test_manifest_changes_with_every_edit_and_only_then(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(b"x" * 10)
    (root / "a" / ".hidden").write_bytes(b"ignored, as ingest ignores it")
    first = folder_manifest(cfg(root))
    assert first["files"] == 1 and first["bytes"] == 10
    assert folder_manifest(cfg(root)) == first
    stat = (root / "a" / "1.png").stat()
    os.utime(root / "a" / "1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    touched = folder_manifest(cfg(root))
    assert touched["sha256"] != first["sha256"] and touched["files"] == 1
    (root / "a" / "2.png").write_bytes(b"y")
    added = folder_manifest(cfg(root))
    assert added["files"] == 2 and added["sha256"] != touched["sha256"]
    (root / "a" / "2.png").unlink()
    assert folder_manifest(cfg(root)) == touched


def test_no_path_or_a_missing_one_is_left_to_ingest() -> None:
    assert folder_manifest(cfg(None)) == {"source": "imagefolder", "path": None}
    missing = folder_manifest(cfg(Path("/nonexistent/imgs")))
    assert missing["error"] == "data.path=/nonexistent/imgs: missing" and "sha256" not in missing
