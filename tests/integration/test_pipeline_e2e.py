"""The real pipeline, end to end: `dvc exp run` of the real dvc.yaml in a temp copy of the
repository, on the tiny built-in digits data, with real MLflow (SQLite in the copy) and
real Great Expectations. No mocks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlpipe.dataset import load_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["-S", "data=digits", "-S", "train=smoke"]


def run(
    cmd: list[str], cwd: Path, check: bool = True, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        # the copy's own code, also where mlpipe is installed from another checkout
        PYTHONPATH=f"{cwd / 'src'}{os.pathsep}{cwd}",
    )
    env.update(extra_env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def copy_repo(dest: Path) -> Path:
    """The files git would ship (tracked, plus new ones not ignored), nothing generated."""
    listed = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], REPO).stdout
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "copy"], dest)
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = copy_repo(tmp_path_factory.mktemp("repo"))
    run(["dvc", "exp", "run", "--name", "e2e-digits", *OVERRIDES], dest)
    return dest


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def mlflow_client(repo: Path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def headline_ece(repo: Path) -> float:
    return float(read_json(repo / "reports/evaluate.json")["ece"])


def test_hydra_override_composed_params(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["source"] == "digits"
    assert params["train"]["epochs"] == 2
    assert params["register"]["model_name"] == "digits-classifier"


def test_metrics_written(repo: Path) -> None:
    metrics = read_json(repo / "reports/evaluate_details.json")
    assert metrics["n"] == 360  # 20 % of the 1,797 digits, stratified
    assert metrics["accuracy"] > 0.8  # a real model, trained for two epochs
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    # DVC metrics: the headline figures only (dvc exp show had 40 per-class columns)
    headline = read_json(repo / "reports/evaluate.json")
    keys = ("accuracy", "macro_f1", "worst_class_recall", "ece", "n")
    assert headline == {k: metrics[k] for k in keys}
    # temperature scaling: fitted on val by train, carried in model.pt and the logged model
    cal = metrics["calibration"]
    assert cal["temperature"] == read_json(repo / "reports/train.json")["temperature"] > 0
    assert cal["temperature"] != 1.0 and cal["ece"] == headline["ece"]
    assert 0 <= cal["ece"] <= 1 and cal["nll"] > 0 and cal["brier_uncalibrated"] > 0
    assert (repo / "reports/plots/reliability_diagram.png").read_bytes()[:4] == b"\x89PNG"
    # error analysis: top confusions (from the confusion matrix) and the mistakes gallery
    matrix = metrics["confusion_matrix"]
    mistakes = 360 - sum(matrix[i][i] for i in range(10))
    top = metrics["top_confusions"]
    assert top and top[0]["count"] == max(
        matrix[t][p] for t in range(10) for p in range(10) if t != p
    )
    assert top[0]["share"] == round(top[0]["count"] / mistakes, 4)
    csv_lines = (repo / "reports/plots/confusions.csv").read_text().splitlines()
    assert csv_lines[0] == "true,predicted,count,share" and len(csv_lines) == len(top) + 1
    assert (repo / "reports/plots/confident_mistakes.png").read_bytes()[:4] == b"\x89PNG"
    assert (repo / "reports/plots/attributions.png").read_bytes()[:4] == b"\x89PNG"
    assert len(metrics["explanations"]["test_indices"]) == 10  # one per class
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert not any("per_class" in json.dumps(v) for v in shown.values())
    assert sum(map(sum, metrics["confusion_matrix"])) == 360
    assert read_json(repo / "reports/validate.json")["success"] is True
    # every stage writes reports/<stage>.json
    assert read_json(repo / "reports/ingest.json")["splits"] == {"train": 1437, "test": 360}
    preprocess = read_json(repo / "reports/preprocess.json")
    assert sum(preprocess["splits"].values()) == 1797 and preprocess["splits"]["test"] == 360
    assert set(read_json(repo / "reports/train.json")) >= {"run_id", "model_uri"}
    lines = (repo / "reports/plots/training_curves.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss") and len(lines) == 3
    assert (repo / "reports/plots/confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_registered_with_aliases_and_run_logged(repo: Path, tmp_path: Path) -> None:
    reg = read_json(repo / "reports/register.json")
    assert reg["version"] == "1" and reg["promote"] is True
    client = mlflow_client(repo)
    model = client.get_registered_model("digits-classifier")
    assert model.aliases == {"champion": 1}  # promoted: not also the challenger
    run_id = read_json(repo / "reports/train.json")["run_id"]
    assert client.get_model_version("digits-classifier", "1").run_id == run_id
    mlrun = client.get_run(run_id)
    assert mlrun.data.params["train.epochs"] == "2"
    assert mlrun.data.metrics["test/accuracy"] == pytest.approx(
        read_json(repo / "reports/evaluate.json")["accuracy"], abs=1e-4
    )
    # grouped names, all on the optimizer-step axis; loss and lr sampled within epochs
    val = client.get_metric_history(run_id, "val/accuracy")
    assert len(val) == 2 and sorted(
        m.value for m in client.get_metric_history(run_id, "epoch")
    ) == [1, 2]
    loss = client.get_metric_history(run_id, "train/loss")
    assert len(loss) > 2 * len(val) and max(m.step for m in loss) <= max(m.step for m in val)
    assert len(client.get_metric_history(run_id, "train/lr")) == len(loss)
    assert not [k for k in mlrun.data.metrics if k.startswith("test/") and k.count("/") > 1]
    classes = read_json(repo / "reports/evaluate_details.json")["per_class"]
    assert not [k for k in mlrun.data.metrics for c in classes if k.endswith(f"_{c}")]
    assert mlrun.data.tags["dvc_exp_name"] == "e2e-digits"
    assert len(mlrun.data.tags["git_commit"]) == 40
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluate")}
    assert {"evaluate/confusion_matrix.png", "evaluate/per_class.json"} <= artifacts
    assert "evaluate/reliability_diagram.png" in artifacts
    assert {"evaluate/confusions.csv", "evaluate/confident_mistakes.png"} <= artifacts
    assert "evaluate/attributions.png" in artifacts
    assert mlrun.data.metrics["test/ece"] == pytest.approx(headline_ece(repo))
    assert mlrun.data.metrics["calibration/temperature"] > 0
    assert "calibration/val_nll_calibrated" in mlrun.data.metrics
    validation = read_json(repo / "reports/validate.json")
    assert mlrun.data.metrics["validate/passed"] == validation["passed"] > 0
    assert mlrun.data.metrics["validate/failed"] == 0
    logged = {a.path for a in client.list_artifacts(run_id, "validate")}
    assert "validate/validate.html" in logged  # one self-contained page, not the GX site
    page = client.download_artifacts(run_id, "validate/validate.html", str(tmp_path))
    assert Path(page).read_bytes() == (repo / "reports/validate.html").read_bytes()
    # promotion evidence, exports and lineage (issue 5)
    assert reg["outcome"] == "promoted" and reg["mcnemar"] is None
    assert all(m["passed"] for m in reg["minimums"])
    assert reg["candidate_metrics"]["accuracy"] == pytest.approx(reg["evaluate_accuracy"])
    for fmt in ("torchscript", "onnx"):
        assert reg["exports"][fmt]["passed"] and reg["exports"][fmt]["max_abs_diff"] < 1e-4
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    processed = [d for d in lock["stages"]["train"]["deps"] if d["path"] == "data/processed"]
    tags = client.get_model_version("digits-classifier", "1").tags
    assert tags["lineage.data_md5"] == processed[0]["md5"] == reg["lineage"]["data_md5"]
    assert tags["lineage.git_commit"] == mlrun.data.tags["git_commit"]
    # MLflow dataset inputs: one per split, digests = DVC's md5s (the folder's and each file's)
    inputs = {}
    for d in mlrun.inputs.dataset_inputs:
        input_tags = {t.key: t.value for t in d.tags}
        assert input_tags["dvc_md5"] == processed[0]["md5"]
        inputs[input_tags["mlflow.data.context"]] = d.dataset
    assert set(inputs) == {"train", "val", "test"}
    for split, dataset in inputs.items():
        raw = (repo / f"data/processed/{split}.index.npz").read_bytes()
        assert dataset.digest == hashlib.md5(raw).hexdigest()
    assert mlrun.data.tags["data_dvc_md5"] == processed[0]["md5"]
    assert tags["decision"] == "promoted" and tags["export.passed"] == "true"
    # few, readable tags: the numbers behind the decision are in the run's record and card
    assert len(tags) <= 10 and not [v for v in tags.values() if v.startswith(("{", "["))]
    version = client.get_model_version("digits-classifier", "1")
    assert version.run_id == run_id
    record = json.loads(Path(client.download_artifacts(run_id, "register/decision.json",
                                                       str(tmp_path))).read_text())  # fmt: skip
    assert record["params"]["train.epochs"] == "2" and record["minimums"] == reg["minimums"]
    # the card's image is a link the UI can load (one relative to the card 404s there)
    card_image = re.search(r"!\[Confusion matrix \(test\)\]\(([^)]+)\)", version.description)
    assert card_image is not None and card_image.group(1).startswith("get-artifact?")
    files = {a.path for a in client.list_artifacts(run_id)}
    files |= {a.path for a in client.list_artifacts(run_id, "export")}
    assert {"model_card.md", "export/model.onnx", "export/model.torchscript.pt"} <= files
    assert mlrun.data.tags["registration_decision"] == "promoted"
    card = Path(client.download_artifacts(run_id, "model_card.md", str(tmp_path))).read_text()
    assert "### Calibration and mistakes" in card and "Most frequent confusions" in card


def test_logged_model_serves_predictions(repo: Path) -> None:
    """The registered model loads as pyfunc and agrees with the offline evaluation."""
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/digits-classifier@champion")
    test = load_dataset(repo / "data/processed").splits["test"]
    images, labels = test.images[:64], test.labels[:64]  # raw uint8 pixels
    predictions = model.predict(images)
    assert list(predictions.columns) == ["label", "probability", "probabilities"]
    assert (predictions["label"].astype(int).to_numpy() == labels).mean() > 0.8
    assert np.stack(predictions["probabilities"]).shape == (64, 10)


def test_monitor_watches_the_champion(repo: Path, tmp_path: Path) -> None:
    """register stored the monitoring reference with the version (and in models/monitor);
    `mlpipe monitor` finds no drift in the held-out test images and drift in brighter ones."""
    import numpy as np

    assert (repo / "models/monitor/reference.json").is_file()
    images = load_dataset(repo / "data/processed").splits["test"].images
    np.savez(tmp_path / "held_out.npz", images=images)
    np.savez(tmp_path / "brighter.npz", images=np.clip(images.astype(int) + 60, 0, 255))
    monitor = [sys.executable, "-m", "mlpipe.cli", "monitor", "--out", str(tmp_path / "out")]
    champion = ["--model", "models:/digits-classifier@champion"]
    ok = run([*monitor, *champion, "--images", str(tmp_path / "held_out.npz")], repo)
    assert f"ok: no drift in {len(images)} images" in ok.stdout
    drift = run([*monitor, *champion, "--images", str(tmp_path / "brighter.npz")], repo, False)
    assert drift.returncode == 1 and "drift: pixels" in drift.stdout, drift.stderr
    report = read_json(tmp_path / "out" / "monitor.json")
    assert report["model"]["version"] == "1" and report["outcome"] == "drift"


def reran(out: str) -> list[str]:
    """The stages `dvc repro` output shows running, but for the manifest stage, which runs
    every time (`always_changed`) and changes nothing while data.path is unchanged."""
    return [s for s in STAGES if s != "manifest" and f"Running stage '{s}'" in out]


def test_nothing_changed_reruns_nothing(repo: Path) -> None:
    out = run(["dvc", "repro"], repo).stdout
    assert "Running stage 'manifest'" in out and "Stage 'ingest' didn't change" in out
    assert reran(out) == []


STAGES = ["params", "manifest", "ingest", "validate", "preprocess", "train", "evaluate", "register"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lr=-1"], "params: error: params.yaml: train.lr: must be finite and > 0, got -1"),
        # train would rerun (epochs), but register's bad value stops it before it starts
        (["train.epochs=1", "register.alpha=2"], "params: error: params.yaml: register.alpha: "),
    ],
    ids=["bad-train-value", "bad-register-value-after-train-change"],
)
def test_bad_param_stops_before_any_output_is_removed(
    repo: Path, overrides: list[str], message: str
) -> None:
    """DVC removes a stage's outputs just before running it: the params stage, first in the
    DAG, rejects a bad value of any section before a stage that would rerun has lost them."""
    params_path = repo / "params.yaml"
    original = params_path.read_text()
    outputs = [
        repo / "models/model.pt",
        repo / "reports/train.json",
        repo / "reports/plots/training_curves.csv",  # cache: false: no checkout brings it back
        repo / "reports/evaluate.json",
        repo / "reports/register.json",
        repo / "reports/params.json",
    ]
    before = digest(outputs)
    runs_before = len(mlflow_client(repo).search_runs(["1"]))
    try:
        sets = [arg for override in overrides for arg in ("-S", override)]
        proc = run(["dvc", "exp", "run", *OVERRIDES, *sets], repo, check=False)
    finally:
        params_path.write_text(original)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("params:")]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr[-2000:]
    ran = [s for s in STAGES if f"Running stage '{s}'" in proc.stdout]
    assert ran == ["params"]
    assert digest(outputs) == before
    assert len(mlflow_client(repo).search_runs(["1"])) == runs_before
    # the rejected run recorded nothing: with params.yaml back, nothing is out of date
    assert reran(run(["dvc", "repro"], repo).stdout) == []


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("train.epoch=3", "ERROR: train.epoch: no key 'epoch' in train (keys: epochs, "),
        ("model=nosuch", "ERROR: model=nosuch: no option 'nosuch' in config group 'model' "),
    ],
    ids=["unknown-key", "unknown-option"],
)
def test_unknown_key_or_option_is_one_line_from_dvc_itself(
    repo: Path, override: str, line: str
) -> None:
    """DVC composes conf/ before any stage runs; hydra_plugins/mlpipe_overrides.py makes its
    error one line naming the key or option and what is valid."""
    before = digest([repo / "params.yaml", repo / "dvc.lock"])
    proc = run(["dvc", "exp", "run", *OVERRIDES, "-S", override], repo, check=False)
    assert proc.returncode != 0
    errors = [text for text in proc.stderr.splitlines() if text.strip()]
    assert len(errors) == 1 and errors[0].startswith(line), proc.stderr[-2000:]
    assert "Running stage" not in proc.stdout
    assert digest([repo / "params.yaml", repo / "dvc.lock"]) == before


def test_temp_experiment_logs_to_repo_root_store(repo: Path) -> None:
    """`--temp` runs in .dvc/tmp/exps/<copy>; its run must land in the repo's mlflow.db."""
    before = {r.info.run_id for r in mlflow_client(repo).search_runs(["1"])}
    run(
        ["dvc", "exp", "run", "--temp", "--name", "e2e-temp", *OVERRIDES, "-S", "train.epochs=1"],
        repo,
    )
    runs = mlflow_client(repo).search_runs(["1"])
    new = [r for r in runs if r.info.run_id not in before]
    assert [r.data.tags.get("dvc_exp_name") for r in new] == ["e2e-temp"]
    assert new[0].data.params["train.epochs"] == "1"
    assert mlflow_client(repo).get_registered_model("digits-classifier").aliases["challenger"] == 2
    assert not list(repo.glob(".dvc/tmp/exps/**/mlflow.db"))
    # one epoch does not beat the two-epoch champion: compared, kept as challenger
    v2 = mlflow_client(repo).get_model_version("digits-classifier", "2").tags
    assert v2["decision"] == "challenger" and v2["compared_with"].startswith("v1 (accuracy ")
    assert "McNemar b=" in v2["decision_reason"]
    assert mlflow_client(repo).get_registered_model("digits-classifier").aliases["champion"] == 1


def test_user_sqlite_store_keeps_artifacts_of_temp_experiments(repo: Path, tmp_path: Path) -> None:
    """A user-set SQLite store: the artifacts go beside it, not into the --temp copy that
    DVC deletes, so the registered champion still loads afterwards."""
    import mlflow.pyfunc

    uri = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    # a config not run before: one seen before comes from DVC's run-cache, logging nothing
    cmd = ["dvc", "exp", "run", "--temp", *OVERRIDES, "-S", "train.epochs=1", "-S", "train.seed=11"]
    cmd += ["-S", "train.in_memory=false"]  # and streamed from the shards (issue 14)
    run(cmd, repo, extra_env={"MLFLOW_TRACKING_URI": uri})
    assert (tmp_path / "team" / "mlartifacts").is_dir()
    assert not list(repo.glob(".dvc/tmp/exps/**/mlruns"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    streamed = client.search_runs(ids, "params.`train.in_memory` = 'false'")
    assert len(streamed) == 1 and streamed[0].info.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/digits-classifier@champion")
        test = load_dataset(repo / "data/processed").splits["test"]
        assert len(model.predict(test.images[:2])) == 2
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def test_failed_validation_stops_pipeline_and_keeps_outputs(repo: Path) -> None:
    params_path = repo / "params.yaml"
    original = params_path.read_text()
    downstream = [repo / "data/processed", repo / "models/model.pt", repo / "reports/evaluate.json"]
    before = digest(downstream)
    try:  # the digits reach 255: pixel_range must fail
        proc = run(["dvc", "exp", "run", *OVERRIDES, "-S", "validate.pixel_max=100"], repo, False)
    finally:
        params_path.write_text(original)
    assert proc.returncode != 0
    assert "pixel_range: pixel_max <= 100" in proc.stderr
    assert "Running stage 'preprocess'" not in proc.stdout
    assert digest(downstream) == before
    assert read_json(repo / "reports/validate.json")["success"] is False


def test_plain_repro_after_an_edit_in_conf_is_refused_until_params_is_recomposed(
    repo: Path,
) -> None:
    """`dvc repro` does not compose: after an edit in conf/ it would run on the stale
    params.yaml. The params stage depends on conf/ and refuses, naming the keys and the fix."""
    conf = repo / "conf/train/smoke.yaml"
    original = conf.read_text()
    outputs = [repo / "models/model.pt", repo / "reports/train.json", repo / "params.yaml"]
    before = digest(outputs)
    conf.write_text(original.replace("epochs:", "epochs: 7 #", 1))
    try:
        proc = run(["dvc", "repro"], repo, check=False)
    finally:
        conf.write_text(original)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("params:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].startswith("params: error: params.yaml does not match conf/: "), errors
    assert "run `make params`" in errors[0]
    assert [s for s in STAGES if f"Running stage '{s}'" in proc.stdout] == ["params"]
    assert digest(outputs) == before


def test_dvc_plots_show_draws_the_intended_plots_offline(repo: Path, tmp_path: Path) -> None:
    """Loss, accuracy and the confusion matrix (+ the PNG), no default-template duplicates;
    the page from `make plots` inlines Vega instead of loading it from a CDN."""
    from tests.unit.test_plots_page import cache_with_fakes

    template = tmp_path / "template.html"
    cache = cache_with_fakes(tmp_path)
    run(
        [sys.executable, "-m", "mlpipe.plots_page", "--cache", str(cache), "--out", str(template)],
        repo,
    )
    run(["dvc", "plots", "show", "--html-template", str(template), "-o", str(tmp_path / "p")], repo)
    html = (tmp_path / "p" / "index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "window['vega-embed']" in html
    assert html.count("vegaEmbed(") == 3, html.count("vegaEmbed(")  # loss, accuracy, confusion
    assert "confusion_matrix.png" in html
    assert "images_per_second" not in html  # the timing columns are not plotted (nor in the CSV)


def test_a_config_seen_before_comes_from_the_run_cache_without_a_new_version(repo: Path) -> None:
    """No `persist` out in train: going back to an earlier config restores train, evaluate
    and register from DVC's run-cache instead of retraining and registering a duplicate."""
    client = mlflow_client(repo)
    run(["dvc", "exp", "run", *OVERRIDES, "-S", "train.lr=0.002"], repo)
    versions = len(client.search_model_versions("name='digits-classifier'"))
    runs = len(client.search_runs(["1"]))
    out = run(["dvc", "exp", "run", *OVERRIDES], repo).stdout  # the fixture's config again
    for stage in ("train", "evaluate", "register"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out
    assert len(client.search_model_versions("name='digits-classifier'")) == versions
    assert len(client.search_runs(["1"])) == runs
