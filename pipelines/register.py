"""Stage `register`: a new registry version; champion only on evidence (mlpipe.register)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from mlpipe.config import load_sections
from mlpipe.dataset import load_dataset
from mlpipe.io import atomic_write_json, read_json
from mlpipe.models.checkpoint import load_checkpoint
from mlpipe.register import candidate, lineage
from mlpipe.register.config import RegisterConfig
from mlpipe.register.publish import MODEL_CARD, publish
from mlpipe.runner import run_stage
from mlpipe.tracking import registry, runs

log = logging.getLogger("mlpipe.register")
SECTIONS = {"register": RegisterConfig}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="register", description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--train-report", type=Path, required=True, help="train.json (run)")
    parser.add_argument("--evaluate-report", type=Path, required=True, help="evaluate.json")
    parser.add_argument("--predictions", type=Path, required=True, help="evaluate's CSV")
    parser.add_argument("--data", type=Path, required=True, help="processed dataset folder")
    parser.add_argument("--model-dir", type=Path, required=True, help="holds model.pt")
    parser.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="for data lineage")
    parser.add_argument("--out", type=Path, required=True, help="register.json to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg: RegisterConfig = load_sections(args.params, SECTIONS)["register"]
        train, dataset = read_json(args.train_report), load_dataset(args.data)
        scores = read_json(args.evaluate_report)
        predicted = candidate.read_predicted(args.predictions)
        model, _ = load_checkpoint(args.model_dir / "model.pt")
        run = runs.get_run(train["run_id"])
        with tempfile.TemporaryDirectory() as tmp:
            export_dir = Path(tmp) / "export"
            found = candidate.assess_candidate(
                cfg, dataset, scores, predicted, model, train["model_uri"],
                registry.find_model(cfg.model_name), export_dir,
            )  # fmt: skip
            md5 = lineage.data_md5(args.lock, "train", args.data)
            origin = lineage.lineage(run.run_id, run.params, run.tags, md5)
            report = found.report
            report["lineage"] = {k: v for k, v in origin.items() if k != "params"}
            report["model_card"] = f"runs:/{run.run_id}/{MODEL_CARD}"
            tags = lineage.version_tags(
                found.decision, report["candidate_metrics"], report["champion_metrics"],
                origin, report["exports"],
            )  # fmt: skip
            card = candidate.card_builder(cfg, dataset, found, run)
            version, aliases = publish(
                cfg, train["model_uri"], run.run_id, found.decision, tags, export_dir, card
            )
        head = {"model_name": cfg.model_name, "version": version, "aliases": aliases}
        atomic_write_json(args.out, head | {"run_id": run.run_id} | report)
        exported = "; ".join(
            f"{fmt} max diff {c['max_abs_diff']:.1e}" for fmt, c in report["exports"].items()
        )
        log.info("%s v%s %s: %s [%s]", cfg.model_name, version, found.decision.outcome.value,
                 found.decision.reason, exported)  # fmt: skip

    return run_stage("register", body)


if __name__ == "__main__":
    sys.exit(main())
