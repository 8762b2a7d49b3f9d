"""The tagging core: articles in, results out. Imports no transport (grpc, kafka, prometheus)."""
