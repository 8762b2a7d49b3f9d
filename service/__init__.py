"""newstagger: tags news articles with topics and stance, over gRPC and Kafka."""

__version__ = "0.1.0"
__distribution__ = "newstagger"  # checked by newstagger.package_conflict
