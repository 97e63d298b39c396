"""Stage `ingest`: images from a source (Fashion-MNIST IDX files, scikit-learn's digits,
your own image folder) into the dataset folder every later stage reads.

`config` (the `data` section), `sources` (one loader per `data.source`), `idx` (the IDX
format), `imagefolder` (PNG/JPEG folders, one per class).
"""
