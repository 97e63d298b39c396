"""An HTML template for `dvc plots show` that works offline: `make plots`.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so without network only
the PNG plots render. This fetches the same releases DVC's page asks for from the npm
registry (`npm pack`, cached under --cache) and inlines them into a template holding DVC's
`{plot_divs}` placeholder and no `{scripts}` one, so DVC adds no CDN tags.

    python -m mlpipe.plots_page --cache .dvc/tmp/vega --out .dvc/tmp/vega/template.html
    dvc plots show --html-template .dvc/tmp/vega/template.html -o dvc_plots
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from mlpipe.errors import DataError
from mlpipe.io import atomic_write_text
from mlpipe.runner import run_stage

# the versions dvc_render's VegaRenderer.SCRIPTS loads, and each package's browser build
LIBRARIES = {
    "vega@5.20.2": "package/build/vega.min.js",
    "vega-lite@5.2.0": "package/build/vega-lite.min.js",
    "vega-embed@6.18.2": "package/build/vega-embed.min.js",
}
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>DVC plots</title>
{inline_scripts}
<style>table {{ border-spacing: 15px; }} body {{ font-family: sans-serif; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def page(scripts: list[str]) -> str:
    """The template: each library in its own inline <script>, then DVC's placeholder."""
    for text in scripts:
        if "</script" in text.lower() or "{plot_divs}" in text or "{scripts}" in text:
            raise DataError("a Vega library holds text that would break the inline page")
    inline = "\n".join(f"<script>\n{text}\n</script>" for text in scripts)
    return PAGE.format(inline_scripts=inline)


def fetch(spec: str, member: str, cache: Path) -> str:
    """The library's browser build from the npm registry (`npm pack`), cached."""
    name, _, version = spec.rpartition("@")
    tarball = cache / f"{name}-{version}.tgz"
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise DataError(f"{spec}: npm not found; install Node.js (Debian: apt-get install npm)")
        proc = subprocess.run(
            [npm, "pack", "--silent", spec], cwd=cache, capture_output=True, text=True
        )
        if proc.returncode != 0 or not tarball.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"{spec}: npm pack failed: {last}")
    with tarfile.open(tarball) as tar:
        handle = tar.extractfile(member)
        if handle is None:
            raise DataError(f"{tarball}: no {member}")
        return handle.read().decode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlpipe.plots_page", description=__doc__)
    parser.add_argument("--cache", type=Path, default=Path(".dvc/tmp/vega"))
    parser.add_argument("--out", type=Path, default=Path(".dvc/tmp/vega/template.html"))
    args = parser.parse_args(argv)

    def body() -> None:
        args.cache.mkdir(parents=True, exist_ok=True)
        scripts = [fetch(spec, member, args.cache) for spec, member in LIBRARIES.items()]
        atomic_write_text(args.out, page(scripts))

    return run_stage("plots", body)


if __name__ == "__main__":
    sys.exit(main())
