"""mlpipe: a reproducible image-classification pipeline."""

__version__ = "0.1.0"
