"""newstagger: tags news articles with topics and stance, over gRPC, HTTP and Kafka."""

__version__ = "0.1.0"
__distribution__ = "newstagger"  # checked by newstagger.package_conflict
