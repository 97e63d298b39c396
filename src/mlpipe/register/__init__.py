"""Stage `register`: a new registry version, made champion only on evidence; also what
`mlpipe registry` runs.

`config` (the `register` section), `gates` (the decision, pure), `promote` (the decision
against the current champion, for the stage and the CLI), `candidate` (the stage's
candidate: scores from evaluate, checked exports), `lineage` (tags), `aliases` (alias
moves with history), `publish` (the run's one version and its aliases), `stage` (the
steps in order: check, then under the registry lock decide and publish), `model_card`.
"""
