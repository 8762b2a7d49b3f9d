"""The HTTP adapter: a REST/JSON API and the Open Inference Protocol (V2) over HTTP, on Starlette
and uvicorn, in front of the same Tagger and MicroBatcher as the gRPC API and the Kafka worker."""
