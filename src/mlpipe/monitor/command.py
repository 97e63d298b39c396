"""`mlpipe monitor`: compare a batch of incoming images with a model version's reference.

    mlpipe monitor --model models:/fashion-mnist@champion --images incoming/ [--out DIR]
                   [--alpha 0.01] [--no-log]
    mlpipe monitor --reference models/monitor --images batch.npz    (no store needed)

One line per finding on stdout; the JSON report and a PNG summary in --out; a run in the
MLflow experiment `mlpipe-monitor` (and tags on the model version) when the store is
reachable. Exit codes (the highest that applies): 0 no finding, 1 drift, 2 a data check
of severity error failed, 3 bad input (unreadable batch, empty folder, wrong shape or
channels, unknown model URI), 4 the version has no monitoring reference, 5 the MLflow
store cannot be reached. False alarms: at most `alpha` of in-distribution batches are
flagged (Bonferroni over every test; see mlpipe.monitor.stats).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from mlpipe.errors import ConfigError
from mlpipe.monitor.report import Exit
from mlpipe.runner import error_line

PROG = "mlpipe monitor"
DEFAULT_OUT = Path("monitor_reports")


def add_parser(groups: Any) -> None:
    """The `monitor` subcommand on `mlpipe`'s subparsers."""
    p = groups.add_parser("monitor", help="drift and data checks on incoming images",
                          description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="models:/<name>@<alias> or models:/<name>/<version>")
    where.add_argument("--reference", type=Path, help="a reference folder (models/monitor)")
    p.add_argument("--images", type=Path, required=True, help="a folder of images or an .npz")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}/")
    p.add_argument("--alpha", type=float, default=0.01, help="false-alarm rate per batch")
    p.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="its `validate` sets the checks"
    )
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")


def main(args: argparse.Namespace) -> int:
    """Run the monitor; the exit code. MLflow, torch, scipy and GX load only here."""
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    if not 0.0 < args.alpha < 1.0:
        return fail(Exit.bad_input, ConfigError(f"--alpha must be in (0, 1), got {args.alpha}"))
    from mlpipe.monitor import watch

    return watch.run(args)


def fail(code: Exit, exc: BaseException) -> int:
    print(error_line(PROG, exc), file=sys.stderr)
    return int(code)
