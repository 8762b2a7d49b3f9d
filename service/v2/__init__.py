"""The Open Inference Protocol (KServe V2): what the model looks like as tensors, shared by the
HTTP (``service.http_api.v2``) and gRPC (``service.v2.grpc_servicer``) adapters."""
