"""Stage `train`: the training engine and what it needs, free of MLflow and files.

`config` (the `train` and `runtime` sections), `stage` (one execution: model, resume file,
the MLflow run), `engine` (the loop), `batches`, `augment`, `schedules`, `ema`,
`early_stopping`, `device` (device, precision, threads), `distributed` (torchrun),
`resume` (the resume file), `bench` (`make bench`: engine against a bare loop).
"""
