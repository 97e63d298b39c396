"""Several processes on one real SQLite store at the same instant: first use of a fresh
store, alias moves, register stages, and a run whose process was killed.

Each scenario starts real processes (spawn), lines them up on a barrier before the racy
step and repeats it for several rounds: without the locks, these failed 4 to 8 times out
of 8 in probes, and each of these scenarios failed in its first rounds
with the locks taken out. No mocks.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tests.integration.bands import CLASSES, PERFECT, WORSE, Bands, bands_split

from mlpipe.dataset import ImageDataset, load_dataset, save_dataset
from mlpipe.errors import TrackingError
from mlpipe.evaluate.metrics import classification_metrics
from mlpipe.register.aliases import alias_history, stack_tag
from mlpipe.register.config import RegisterConfig
from mlpipe.register.lineage import compared_version
from mlpipe.tracking import logged_model, registry, runs
from mlpipe.tracking import store as tracking_store

pytestmark = [pytest.mark.integration]

WORSE2 = [42.0, 150.0, 212.0]  # accuracy 0.90: above the minimums, below WORSE (0.94)
SPAWN = mp.get_context("spawn")
TIMEOUT_S = 240


def use_store(uri: str) -> None:
    """Point this process at `uri` as a user would: through MLFLOW_TRACKING_URI."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    tracking_store._exported_uri = None
    tracking_store._user_override = None


def run_workers(target: Any, args_per_worker: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned process per args tuple, all sharing a barrier; collect results."""
    barrier, results = SPAWN.Barrier(len(args_per_worker)), SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(barrier, results, *a)) for a in args_per_worker]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=TIMEOUT_S) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return out


# -- first use of a fresh store --------------------------------------------------------


def first_use_worker(barrier: Any, results: Any, root: str, rounds: int) -> None:
    failures = []
    for r in range(rounds):
        use_store(f"sqlite:///{root}/round{r}/mlflow.db")
        barrier.wait()
        try:
            with runs.start_run("first-use", f"pid{os.getpid()}", {}):
                runs.log_metrics({"x": 1.0})
        except Exception as exc:
            failures.append(f"round {r}: {type(exc).__name__}: {str(exc)[:200]}")
    results.put(failures)


def test_many_first_users_of_a_fresh_store(tmp_path: Path) -> None:
    rounds, workers = 2, 3
    failures = run_workers(first_use_worker, [(str(tmp_path), rounds)] * workers)
    assert [f for fs in failures for f in fs] == []
    for r in range(rounds):
        use_store(f"sqlite:///{tmp_path}/round{r}/mlflow.db")
        exp = tracking_store.client().get_experiment_by_name("first-use")
        assert exp is not None
        found = tracking_store.client().search_runs([exp.experiment_id])
        assert len(found) == workers and {r.info.status for r in found} == {"FINISHED"}


# -- alias moves -----------------------------------------------------------------------


def promote_worker(
    barrier: Any, results: Any, uri: str, params: str, version: str, rounds: int
) -> None:
    from mlpipe.cli import main

    use_store(uri)
    codes = []
    for r in range(rounds):
        barrier.wait()
        argv = ["registry", "--name", f"race{r}", "--params", params, "promote", version]
        codes.append(main([*argv, "--force", "--reason", f"worker {version}"]))
    results.put(codes)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A SQLite store with three logged Bands models (each in its own run) and test data."""
    root = tmp_path_factory.mktemp("concurrency")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    save_dataset(ImageDataset({"test": bands_split()}, CLASSES, "bands"), root / "processed")
    params = root / "params.yaml"
    paths = {"processed": str(root / "processed")}
    params.write_text(yaml.safe_dump({"register": {"model_name": "unused"}, "paths": paths}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        use_store(uri)
        models = {}
        for key, centres in [("perfect", PERFECT), ("worse", WORSE), ("worse2", WORSE2)]:
            with runs.start_run("concurrency", key, {}) as run_id:
                images = bands_split().images[::40]
                model_uri = logged_model.log_classifier(
                    Bands(centres).eval(), CLASSES, images, name=key
                )
            models[key] = {"centres": centres, "uri": model_uri, "run_id": run_id}
        yield {"root": root, "uri": uri, "params": params, "models": models}
        import mlflow

        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def test_concurrent_promotes_keep_every_move_in_order(world: Any) -> None:
    rounds = 4
    for r in range(rounds):
        for _ in range(3):
            registry.register(world["models"]["perfect"]["uri"], f"race{r}", {})
    args = [(world["uri"], str(world["params"]), v, rounds) for v in ("1", "2", "3")]
    codes = run_workers(promote_worker, args)
    assert codes == [[0] * rounds] * 3
    for r in range(rounds):
        name = f"race{r}"
        history = alias_history(name, "champion")
        assert sorted(e["version"] for e in history) == ["1", "2", "3"], (r, history)
        chain = [None] + [e["version"] for e in history[:-1]]
        assert [e["previous"] for e in history] == chain, (r, history)
        champion = registry.model_aliases(name)["champion"]
        assert champion == history[-1]["version"]
        stack = registry.model_tags(name)[stack_tag("champion")]
        assert yaml.safe_load(stack) == [e["version"] for e in history]
        from mlpipe.cli import main

        argv = ["registry", "--name", name, "--params", str(world["params"]), "rollback"]
        assert main(argv) == 0
        assert registry.model_aliases(name)["champion"] == history[-1]["previous"]


# -- register stages -------------------------------------------------------------------


def candidate_inputs(
    world: dict[str, Any], key: str
) -> tuple[ImageDataset, dict[str, Any], list[str], Bands]:
    dataset = load_dataset(Path(world["root"]) / "processed")
    test = dataset.splits["test"]
    model = Bands(world["models"][key]["centres"]).eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(test.images)).argmax(1).numpy()
    scores = classification_metrics(test.labels, predicted, CLASSES)
    names = [CLASSES[int(i)] for i in predicted]
    return dataset, scores, names, model


def register_worker(
    barrier: Any, results: Any, world: dict[str, Any], key: str, prefix: str, rounds: int
) -> None:
    from mlpipe.register.stage import register_candidate

    use_store(world["uri"])
    dataset, scores, predicted, model = candidate_inputs(world, key)
    entry = world["models"][key]
    run = runs.get_run(entry["run_id"])
    outcomes = []
    for r in range(rounds):
        cfg = RegisterConfig(model_name=f"{prefix}{r}", parity_images=16)
        barrier.wait()
        report = register_candidate(
            cfg, dataset, scores, predicted, model, entry["uri"], run, "md5"
        )
        outcomes.append((report["version"], report["outcome"], report["champion_version"]))
    results.put({key: outcomes})


def plain_world(world: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in world.items()}


def test_concurrent_registers_on_a_new_model_compare_with_each_other(world: Any) -> None:
    rounds = 3
    args = [(plain_world(world), key, "fresh", rounds) for key in ("worse", "perfect")]
    run_workers(register_worker, args)
    for r in range(rounds):
        name = f"fresh{r}"
        versions = {v.version: v for v in registry.list_versions(name)}
        assert len(versions) == 2
        history = alias_history(name, "champion")
        assert history, r
        first = history[0]["version"]
        other = next(v for v in versions if v != first)
        # the second decision saw the first version as champion: no blind promotion
        assert compared_version(versions[other].tags) == first, r
        assert "no current champion" not in versions[other].tags["decision_reason"]
        for event in history[1:]:
            assert compared_version(versions[event["version"]].tags) == event["previous"]
        champions = [a for a in registry.model_aliases(name) if a == "champion"]
        assert champions == ["champion"]
        # whatever the order, the perfect model ends as champion (it beats worse)
        perfect_run = world["models"]["perfect"]["run_id"]
        champion = registry.model_aliases(name)["champion"]
        assert versions[champion].run_id == perfect_run


def test_challenger_is_the_best_unpromoted_candidate(world: Any) -> None:
    rounds = 3
    p = world["models"]["perfect"]
    for r in range(rounds):
        version = registry.register(p["uri"], f"chal{r}", {})
        registry.set_alias(f"chal{r}", "champion", version)
    args = [(plain_world(world), key, "chal", rounds) for key in ("worse2", "worse")]
    run_workers(register_worker, args)
    for r in range(rounds):
        name = f"chal{r}"
        aliases = registry.model_aliases(name)
        assert aliases["champion"] == "1"
        held = registry.get_version(name, aliases["challenger"])
        assert held.run_id == world["models"]["worse"]["run_id"], r


def test_a_rerun_finishes_the_half_registered_version(world: Any) -> None:
    from mlpipe.register.stage import register_candidate

    entry = world["models"]["perfect"]
    half = registry.register(entry["uri"], "rerun", {"decision": "promoted"})  # then killed
    dataset, scores, predicted, model = candidate_inputs(world, "perfect")
    cfg = RegisterConfig(model_name="rerun", parity_images=16)
    run = runs.get_run(entry["run_id"])
    report = register_candidate(cfg, dataset, scores, predicted, model, entry["uri"], run, "m")
    assert report["version"] == half
    versions = registry.list_versions("rerun")
    assert [v.version for v in versions] == [half]
    assert versions[0].aliases == ["champion"] and "rerun" in versions[0].description


def test_lease_lock_serialises_writers_where_no_file_lock_exists(world: Any) -> None:
    """The lease (for tracking servers) on the same store: one holder at a time."""
    use_store(world["uri"])
    with registry.locked("leased", lease=True):
        found = tracking_store.client().get_registered_model("leased" + registry.LEASE_SUFFIX)
        assert found is not None
        with (
            pytest.raises(TrackingError, match="still locked"),
            registry.locked("leased", lease=True, wait_s=0.5),
        ):
            pass
    with registry.locked("leased", lease=True, wait_s=0.5):  # released: free again
        pass


# -- a run whose process died ----------------------------------------------------------


def test_next_run_marks_a_killed_stages_run_killed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import os, signal\n"
        "from mlpipe.tracking import runs\n"
        "with runs.start_run('killed', 'doomed', {}) as run_id:\n"
        "    print(run_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == -signal.SIGKILL
    doomed = out.stdout.split()[0]
    use_store(uri)
    assert tracking_store.client().get_run(doomed).info.status == "RUNNING"
    with runs.start_run("killed", "next", {}) as run_id:
        assert tracking_store.client().get_run(doomed).info.status == "KILLED"
        assert tracking_store.client().get_run(run_id).info.status == "RUNNING"


def test_credentials_never_reach_the_error_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:9/",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    out = subprocess.run(
        [sys.executable, "-m", "mlpipe.cli", "registry", "--name", "m", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert "s3cret" not in out.stderr + out.stdout
    assert "http://alice:***@127.0.0.1:9" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# -- experiments started together go under one parent run ------------------------------


def sweep_worker(barrier: Any, results: Any, root: str, rounds: int) -> None:
    parents = []
    for r in range(rounds):
        use_store(f"sqlite:///{root}/mlflow.db")
        tags = {"mlpipe.stage": "train", runs.BASELINE_TAG: str(r) * 40}  # a commit
        tracking_store.setup("sweeps")
        barrier.wait()
        with runs.start_run("sweeps", f"exp-{os.getpid()}-{r}", tags) as run_id:
            parents.append(tracking_store.client().get_run(run_id).data.tags["mlflow.parentRunId"])
    results.put(parents)


def test_experiments_of_one_baseline_share_one_parent_run(tmp_path: Path) -> None:
    rounds, workers = 4, 4
    out = run_workers(sweep_worker, [(str(tmp_path), rounds)] * workers)
    use_store(f"sqlite:///{tmp_path}/mlflow.db")
    client = tracking_store.client()
    exp_id = tracking_store.experiment_id("sweeps")
    for r in range(rounds):
        assert len({parents[r] for parents in out}) == 1, [p[r] for p in out]
        alive = client.search_runs([exp_id], f"tags.`{runs.SWEEP_TAG}` = '{str(r) * 40}'")
        assert [a.info.run_id for a in alive] == [out[0][r]]
        assert alive[0].info.run_name == f"experiments from {str(r) * 8}"
