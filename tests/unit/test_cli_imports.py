"""`mlpipe --help`, `mlpipe params` and the parser load no heavy library: MLflow, torch and
scipy (seconds each) load in the commands that need them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_loads_no_heavy_library():
    code = (
        "import sys, mlpipe.cli; mlpipe.cli.build_parser(); "
        "print(' '.join(m for m in ('mlflow', 'torch', 'scipy', 'sklearn', 'pandas') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
