"""MLflow, and nothing else: the only package that imports mlflow.

- `store`: which store (SQLite at the repository root by default), one client per process.
- `runs`: the pipeline execution's run: open, reopen, log params, metrics, artifacts.
- `logged_model`: the served model (a pyfunc over TorchScript), logged and loaded.
- `registry`: registered versions, their tags and aliases.
- `serving`: the pyfunc's own code, which MLflow copies into every logged model.
- `server`: `mlpipe serve`, MLflow's scoring server behind `guard` (pure ASGI: 415, 413,
  400 before MLflow parses a request); `serve_bench`: its latency (`make bench-serve`).

Importing this package imports nothing: `mlpipe.tracking.config` is read by every rank
under torchrun, and only rank 0 ever imports mlflow.
"""
