"""Training: load labelled data, fit the pipeline, tune, evaluate, write artifacts."""

__distribution__ = "newstagger"  # checked by newstagger.package_conflict
