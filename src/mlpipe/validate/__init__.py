"""Stage `validate`: the data gate, a Great Expectations suite over flat tables.

`config` (the `validate` section), `table` (one row per image, one per split and class),
`expectations` (the suite as plain data), `gx` (runs it: the only GX import).
"""
