"""The offline `dvc plots show` template: the Vega libraries inline, no CDN, DVC's
placeholder kept; fetched through npm only when not cached."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from mlpipe import plots_page
from mlpipe.errors import DataError


def cache_with_fakes(folder: Path) -> Path:
    """The three tarballs as `npm pack` names them, with a tiny script each."""
    for spec, member in plots_page.LIBRARIES.items():
        name, _, version = spec.rpartition("@")
        data = f"window['{name}'] = '{version}';".encode()
        with tarfile.open(folder / f"{name}-{version}.tgz", "w:gz") as tar:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder


def test_template_inlines_every_library_and_keeps_dvcs_placeholder(tmp_path, monkeypatch):
    monkeypatch.setattr(plots_page.shutil, "which", lambda name: None)  # cached: no npm
    out = tmp_path / "template.html"
    assert plots_page.main(["--cache", str(cache_with_fakes(tmp_path)), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    for name in ("vega", "vega-lite", "vega-embed"):
        assert f"window['{name}']" in html
    assert html.count("{plot_divs}") == 1
    assert "{scripts}" not in html and "http" not in html  # DVC adds no CDN tags


def test_without_npm_or_cache_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots_page.shutil, "which", lambda name: None)
    assert plots_page.main(["--cache", str(tmp_path), "--out", str(tmp_path / "t.html")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "plots: error: vega@5.20.2: npm not found; install Node.js (Debian: apt-get install npm)"
    ]
    assert not (tmp_path / "t.html").exists()


def test_a_script_that_would_end_the_inline_tag_is_refused():
    with pytest.raises(DataError, match="break the inline page"):
        plots_page.page(["var a = '</script>';"])
