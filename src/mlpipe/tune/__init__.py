"""Hyperparameter search with Optuna: a study in shared storage, workers on any machine,
each trial an MLflow child run of the study's run, trained by the train stage's engine on
the pipeline's processed data. Trials never register models or move aliases:
`mlpipe tune apply` writes the best trial as a config option, and the normal pipeline
(with its gates) takes it from there.

`config` reads and checks a search space (conf/tune/<name>.yaml), `trial` trains one
configuration, `study` runs workers against the storage, `apply` writes the winner.
"""
