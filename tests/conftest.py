"""Shared pytest setup.

Its presence matters: `tests` is a package, so pytest puts the folder above it
(the repo root) on sys.path when it loads this file, which makes
`from pipelines.<stage> import main` work under a plain `pytest`.
"""
