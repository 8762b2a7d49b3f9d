"""Training: load labelled data, fit the pipeline, tune, evaluate, write artifacts."""
