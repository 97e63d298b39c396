"""Watching production: is a batch of incoming images still like the training data?

- `stats`: the tests, pure numpy/scipy (per-image pixel features, per-dimension KS with a
  Bonferroni correction, chi-squared on predicted-class counts, the decision).
- `reference`: what the model version carries to be watched (built by the register stage):
  training statistics and a TorchScript probe giving (embedding, logits) for raw images.
- `batch`: read the incoming images (a folder of PNG/JPEG, or an .npz).
- `checks`: the validate stage's Great Expectations suite, restricted to what a batch
  without labels can be checked for (shape, pixel range, blank images).
- `report`: the JSON report, one line per finding, the PNG summary.
- `command`: `mlpipe monitor`, with its exit codes.
- `bench`: `make bench-monitor`, false-alarm and detection rates.
"""
