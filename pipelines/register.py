"""Stage `register`: a new registry version; champion only on evidence (mlpipe.register)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlpipe.config import load_sections
from mlpipe.dataset import ImageDataset, ImageSplit, open_dataset
from mlpipe.io import atomic_write_json, read_json
from mlpipe.models.checkpoint import load_checkpoint
from mlpipe.monitor.reference import build_reference, save_reference
from mlpipe.register import candidate, lineage
from mlpipe.register.config import RegisterConfig
from mlpipe.register.stage import register_candidate
from mlpipe.runner import run_stage
from mlpipe.tracking import monitoring, runs

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
    parser.add_argument(
        "--monitor-dir", type=Path, default=None, help="the monitoring reference (and on the run)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg: RegisterConfig = load_sections(args.params, SECTIONS)["register"]
        train, data = read_json(args.train_report), open_dataset(args.data)
        # in memory: the test split only (the champion is scored on it); the monitoring
        # reference reads its sample from the shards, and the model card counts every split
        test = data.splits["test"]
        held = ImageDataset(
            {"test": ImageSplit(test.load(), test.labels, test.ids)},
            data.class_names,
            data.source,
            data.extra,
        )
        scores = read_json(args.evaluate_report)
        predicted = candidate.read_predicted(args.predictions)
        model, _ = load_checkpoint(args.model_dir / "model.pt")
        run = runs.get_run(train["run_id"])
        md5 = lineage.data_md5(args.lock, "train", args.data)
        if args.monitor_dir is not None:  # before registering: every version has one
            save_reference(build_reference(model, data), args.monitor_dir)
            monitoring.log_reference(run.run_id, args.monitor_dir)
        report = register_candidate(
            cfg, held, scores, predicted, model, train["model_uri"], run, md5, described=data
        )
        atomic_write_json(args.out, report)
        exported = "; ".join(
            f"{fmt} max diff {c['max_abs_diff']:.1e}" for fmt, c in report["exports"].items()
        )
        log.info("%s v%s %s: %s [%s]", cfg.model_name, report["version"], report["outcome"],
                 report["reason"], exported)  # fmt: skip

    return run_stage("register", body)


if __name__ == "__main__":
    sys.exit(main())
