"""`python -m mlpipe.stack up|down|status`."""

from __future__ import annotations

import sys

from mlpipe.stack.core import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
