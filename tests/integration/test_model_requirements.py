"""The logged model's environment: mlflow-skinny (what loading and serving a pyfunc needs),
not the full mlflow with its tracking server and UI."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.bands import CLASSES, PERFECT, Bands, bands_split

from mlpipe.tracking import logged_model
from mlpipe.tracking import store as tracking_store

pytestmark = pytest.mark.integration


def test_logged_model_requires_mlflow_skinny(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(tracking_store, "_exported_uri", None)
    monkeypatch.setattr(tracking_store, "_user_override", None)
    tracking_store.setup("requirements")
    try:
        with mlflow.start_run():
            uri = logged_model.log_classifier(
                Bands(PERFECT).eval(), CLASSES, bands_split().images[:4]
            )
        path = mlflow.pyfunc.get_model_dependencies(uri)
        lines = Path(path).read_text().split()
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    names = [line.split("==")[0] for line in lines]
    assert f"mlflow-skinny=={mlflow.__version__}" in lines
    assert "mlflow" not in names
    assert {"torch", "numpy", "pandas"} <= set(names)
