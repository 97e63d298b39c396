"""Stage `preprocess`: the stratified train/val split and train-only normalisation
statistics. `config` (the `preprocess` section), `split`.
"""
