"""Model artifacts: the fitted model, its manifest, safe loading, and the on-disk registry."""
