"""Walking an image folder: which entries are read, which are left out and why.

Entries named ".*" are left out (and counted). Symbolic links are followed when
they resolve inside data.path; one that resolves outside it stops ingest with a
line naming the link and its target, unless data.follow_external_links. A link
that cannot be resolved (a loop, or a missing target), a folder link back into
a folder it sits in, and anything that is neither a file nor a folder are left
out. Every entry left out is listed (`ignored`) and logged in one line per reason.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from mlpipe.errors import DataError

log = logging.getLogger(__name__)

SHOWN = 5  # entries named per reason in the log; meta.json lists all
REASONS = {
    "hidden": "hidden (name starts with '.')",
    "link_loop": "symbolic link loop",
    "broken_link": "symbolic link to nothing",
    "not_a_file": "neither a file nor a folder",
}


@dataclass
class Walker:
    """Lists folders and files under `root`, checking links, recording what it leaves out."""

    root: Path
    follow_external_links: bool
    ignored: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.real_root = self.root.resolve()

    def folders(self, folder: Path) -> list[Path]:
        """The sub-folders of `folder` (links to folders included), sorted by name."""
        entries = self._entries(folder, self._lineage(folder), folders_only=True)
        return [path for path, _ in entries]

    def files(self, folder: Path) -> list[Path]:
        """Every file under `folder`, sub-folders included, sorted by path."""
        found: list[Path] = []
        self._collect(folder, self._lineage(folder), found)
        return sorted(found)

    def report(self) -> None:
        """One warning line per reason, naming the first few entries."""
        for reason, what in REASONS.items():
            entries = [i["entry"] for i in self.ignored if i["reason"] == reason]
            if entries:
                more = len(entries) - SHOWN
                log.warning(
                    "ignored %d %s entr%s under %s (all listed in meta.json): %s%s",
                    len(entries),
                    what,
                    "y" if len(entries) == 1 else "ies",
                    self.root,
                    ", ".join(entries[:SHOWN]),
                    f"; and {more} more" if more > 0 else "",
                )

    def _lineage(self, folder: Path) -> set[Path]:
        """The real paths of `folder` and of the folders above it, up to root."""
        chain = {self.real_root, folder.resolve()}
        for parent in folder.parents:
            if not parent.is_relative_to(self.root):
                break
            chain.add(parent.resolve())
        return chain

    def _collect(self, folder: Path, ancestors: set[Path], found: list[Path]) -> None:
        for path, is_dir in self._entries(folder, ancestors):
            if is_dir:
                self._collect(path, ancestors | {path.resolve()}, found)
            else:
                found.append(path)

    def _entries(
        self, folder: Path, ancestors: set[Path], folders_only: bool = False
    ) -> list[tuple[Path, bool]]:
        """(path, is a folder) of each entry of `folder` to read, in name order; records
        the rest. `folders_only`: files are not looked at (nor recorded)."""
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)  # the order meta.json lists them
        except OSError as exc:
            raise DataError(f"{folder}: cannot list the folder: {exc.strerror}") from None
        kept = []
        for entry in entries:
            path = folder / entry.name
            if folders_only and not entry.is_dir():
                continue
            if entry.name.startswith("."):
                self._ignore(path, "hidden")
            elif entry.is_symlink() and not self._link_fits(path, ancestors):
                continue
            elif entry.is_dir():
                kept.append((path, True))
            elif entry.is_file():
                kept.append((path, False))
            else:
                self._ignore(path, "not_a_file")
        return kept

    def _link_fits(self, link: Path, ancestors: set[Path]) -> bool:
        """Whether to follow `link`: False (recorded) for loops and missing targets."""
        try:
            target = link.resolve(strict=True)
        except FileNotFoundError:
            self._ignore(link, "broken_link")
            return False
        except RuntimeError:  # Python < 3.13 reports a loop so
            self._ignore(link, "link_loop")
            return False
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise DataError(f"{link}: cannot follow the link: {exc.strerror}") from None
            self._ignore(link, "link_loop")
            return False
        if not self.follow_external_links and not target.is_relative_to(self.real_root):
            raise DataError(
                f"{link}: symbolic link to {target}, outside data.path={self.root}; copy "
                "what it points to into the folder, or set data.follow_external_links=true"
            )
        if target in ancestors:  # a folder link back up the tree: walking it never ends
            self._ignore(link, "link_loop")
            return False
        return True

    def _ignore(self, path: Path, reason: str) -> None:
        self.ignored.append({"entry": path.relative_to(self.root).as_posix(), "reason": reason})


def ignored_counts(ignored: list[dict[str, str]]) -> dict[str, int]:
    """How many entries were left out, per reason (all reasons, zeros included)."""
    return {reason: sum(i["reason"] == reason for i in ignored) for reason in REASONS}
