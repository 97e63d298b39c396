"""`mlpipe monitor` against a real MLflow registry (SQLite in a temp dir) on the tiny
digits data: a briefly trained CNN is registered with its reference, as the register
stage does; held-out batches pass, shifted ones raise drift, bad inputs give one line
and their own exit code. No mocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mlpipe.cli import main
from mlpipe.dataset import ImageDataset, ImageSplit
from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.sources import load_digits
from mlpipe.models import build_model, load_config
from mlpipe.monitor.reference import build_reference, save_reference
from mlpipe.tracking import logged_model, monitoring, registry
from mlpipe.tracking import store as tracking_store

pytestmark = [pytest.mark.integration]
NAME = "digits-watch"


def train_tiny(images: np.ndarray, labels: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = load_config({"model": {"arch": "cnn", "channels": [8, 16], "hidden": 32}})
    model = build_model(cfg, 1, 10, [0.2], [0.3])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.as_tensor(images).float(), torch.as_tensor(labels)
    for i in range(0, len(x), 64):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """v1: the champion, with a reference on its run; v2: a version without one."""
    root = tmp_path_factory.mktemp("monitor")
    digits = load_digits(DataConfig(name="digits", source="digits", image_size=28, channels=1,
                                    class_names=[str(i) for i in range(10)]))  # fmt: skip
    train, test = digits.splits["train"], digits.splits["test"]
    fit, held = slice(0, 1000), slice(1000, None)
    model = train_tiny(train.images[fit], train.labels[fit])
    dataset = ImageDataset(
        {"train": ImageSplit(train.images[fit], train.labels[fit]),
         "val": ImageSplit(train.images[held], train.labels[held])},
        digits.class_names, "digits",
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setattr(tracking_store, "_exported_uri", None)
        mp.setattr(tracking_store, "_user_override", None)
        tracking_store.setup("monitor-test")
        import mlflow

        for with_reference in (True, False):
            with mlflow.start_run() as run:
                uri = logged_model.log_classifier(model, digits.class_names, test.images[:4])
            if with_reference:
                save_reference(build_reference(model, dataset), root / "reference")
                monitoring.log_reference(run.info.run_id, root / "reference")
            registry.register(uri, NAME, {})
        registry.set_alias(NAME, "champion", "1")
        yield {"root": root, "test": test.images, "mp": mp}
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def monitor(env: dict[str, Any], images: Path, *extra: str, model: str = "") -> int:
    args = ["monitor", "--model", model or f"models:/{NAME}@champion", "--images", str(images)]
    return main([*args, "--out", str(env["root"] / "out"), "--params", "none.yaml", *extra])


def npz(env: dict[str, Any], name: str, images: np.ndarray) -> Path:
    path = env["root"] / f"{name}.npz"
    np.savez(path, images=images)
    return path


def report(env: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((env["root"] / "out" / "monitor.json").read_text())
    return out


def test_held_out_batches_raise_no_alarm(env, capsys):
    rng = np.random.default_rng(0)
    for size in (60, 150, len(env["test"])):
        batch = env["test"][rng.choice(len(env["test"]), size, replace=False)]
        assert monitor(env, npz(env, f"held{size}", batch)) == 0
        out = capsys.readouterr().out
        assert f"mlpipe monitor: ok: no drift in {size} images" in out
    result = report(env)
    assert result["outcome"] == "ok" and result["drift"]["detected"] is False
    assert result["model"]["version"] == "1"
    assert result["drift"]["tests"] == 7 + 32 + 1  # pixel features, embedding dims, classes
    assert (env["root"] / "out" / "monitor.png").stat().st_size > 0
    tags = registry.get_version(NAME, "1").tags
    assert tags["monitor.last_outcome"] == "ok"
    from mlpipe.tracking import runs

    logged = runs.get_run(tags["monitor.last_run"])
    assert logged.tags["model_version"] == "1" and logged.metrics["drift"] == 0.0


@pytest.mark.parametrize(
    "shift",
    [
        lambda x: np.clip(x.astype(int) + 60, 0, 255),  # brightness
        lambda x: np.rot90(x, axes=(2, 3)),  # rotation
        lambda x: np.clip(x + np.random.default_rng(0).normal(0, 40, x.shape), 0, 255).round(),
    ],
    ids=["brightness", "rotation", "noise"],
)
def test_shifted_batches_raise_drift(env, capsys, shift):
    images = shift(env["test"][:200]).astype(np.uint8)
    assert monitor(env, npz(env, "shifted", images)) == 1
    out = capsys.readouterr().out
    assert "mlpipe monitor: drift: " in out
    assert report(env)["outcome"] == "drift"
    assert registry.get_version(NAME, "1").tags["monitor.last_outcome"] == "drift"


def test_a_folder_of_pngs_is_read(env, capsys):
    folder = env["root"] / "pngs"
    folder.mkdir()
    for i, image in enumerate(env["test"][:80]):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    assert monitor(env, folder, "--no-log") == 0
    assert report(env)["batch"]["images"] == 80


def test_failed_data_checks_exit_2(env, capsys):
    images = env["test"][:100].astype(np.int16)
    images[3, 0, 0, 0] = 300  # out of range
    images[10:20] = 0  # 10% blank, 1% allowed
    assert monitor(env, npz(env, "broken", images), "--no-log") == 2
    out = capsys.readouterr().out
    assert "data check failed: pixel_range: pixel_max <= 255: 1 of 100 rows outside" in out
    assert "data check failed: blank: batch: at most 1% blank images" in out
    assert report(env)["outcome"] == "data_check_failed"


def bad(env: dict[str, Any], capsys: Any, code: int, images: Path, model: str = "") -> str:
    """Exit `code`, one line on stderr, and the previous report left as it was."""
    before = (env["root"] / "out" / "monitor.json").read_bytes()
    assert monitor(env, images, model=model) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert (env["root"] / "out" / "monitor.json").read_bytes() == before
    return err


def test_bad_inputs_one_line_and_their_exit_code(env, capsys):
    monitor(env, npz(env, "ok", env["test"][:50]), "--no-log")
    capsys.readouterr()
    rgb = np.repeat(env["test"][:50], 3, axis=1)
    err = bad(env, capsys, 3, npz(env, "rgb", rgb))
    assert err.endswith("wrong channels: images are 3x28x28, the model takes 1x28x28 (C x H x W)")
    small = env["test"][:50, :, :20, :20]
    assert "wrong image size: images are 1x20x20" in bad(env, capsys, 3, npz(env, "small", small))
    empty = env["root"] / "empty"
    empty.mkdir()
    assert bad(env, capsys, 3, empty) == f"mlpipe monitor: error: {empty}: no image files " + (
        "(.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp) or .npz files"
    )
    floats = npz(env, "floats", env["test"][:50] / 255.0)
    assert "pixels must be integers 0..255" in bad(env, capsys, 3, floats)
    ok = npz(env, "ok", env["test"][:50])
    assert bad(env, capsys, 3, ok, model=f"models:/{NAME}/9").endswith("version=9) not found")
    assert "models:/digits-watch@nope: " in bad(env, capsys, 3, ok, model=f"models:/{NAME}@nope")
    assert "models:/other@champion: " in bad(env, capsys, 3, ok, model="models:/other@champion")
    assert "expected models:/<name>@<alias>" in bad(env, capsys, 3, ok, model="runs:/abc/model")
    assert monitor(env, ok, "--alpha", "1.5") == 3
    assert capsys.readouterr().err == "mlpipe monitor: error: --alpha must be in (0, 1), got 1.5\n"
    err = bad(env, capsys, 4, ok, model=f"models:/{NAME}/2")
    assert "no monitoring reference" in err and "models:/digits-watch/2" in err


def test_unreachable_store_exits_5(env, capsys):
    before = (env["root"] / "out" / "monitor.json").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        mp.setattr(tracking_store, "_exported_uri", None)
        assert monitor(env, npz(env, "ok", env["test"][:50])) == 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "127.0.0.1:9" in err
    assert (env["root"] / "out" / "monitor.json").read_bytes() == before
