"""Compose conf/ into params.yaml exactly as `dvc exp run` does (hydra.enabled)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

CONFIG_NAME = "config"


def compose(repo_root: Path, overrides: list[str] | None = None) -> str:
    """Return the YAML text DVC would write to params.yaml for these overrides."""
    # DVC's own function, so `make params` and `dvc exp run` cannot drift apart.
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(
            out,
            str((repo_root / "conf").resolve()),
            None,
            CONFIG_NAME,
            str(repo_root / "hydra_plugins"),
            list(overrides or []),
        )
        return out.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=cnn train.epochs=5"
    )
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--out", type=Path, default=None, help="default: <root>/params.yaml")
    args = parser.parse_args(argv)
    from mlpipe.io import atomic_write_text

    out = args.out or args.root / "params.yaml"
    atomic_write_text(out, compose(args.root, args.overrides))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
