"""One published Open Inference Protocol client, unmodified, against a running server; prints what
it saw as one JSON object. Run as its own process by test_v2_clients.py: tritonclient.grpc, kserve
and service.gen.inference each register the protocol's messages (``inference.*``) in protobuf's
default descriptor pool, so no two of them can be imported into one process.

    python tests/integration/v2_client.py CLIENT --grpc HOST:PORT --http HOST:PORT --model NAME TEXT...

CLIENT is ``triton-grpc``, ``triton-http``, ``kserve-grpc`` or ``kserve-rest``. Nothing from this
repository is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

UNKNOWN = "no-such-model"


def plain(array: Any) -> Any:
    """A numpy output tensor as JSON: BYTES elements decoded, numbers and bools as Python's."""
    if np.ndim(array):
        return [plain(x) for x in array]
    if isinstance(array, bytes):
        return array.decode()
    return array.item() if isinstance(array, np.generic) else array


def tensors(metadata: Any) -> list[list[Any]]:
    """Name, datatype and shape of each tensor, from a protobuf message or a JSON dict."""
    return [
        [t["name"], t["datatype"], [int(x) for x in t["shape"]]]
        if isinstance(t, dict)
        else [t.name, t.datatype, [int(x) for x in t.shape]]
        for t in metadata
    ]


def run_triton(args: argparse.Namespace, over_grpc: bool) -> dict[str, Any]:
    from tritonclient.utils import InferenceServerException

    if over_grpc:
        import tritonclient.grpc as triton

        client: Any = triton.InferenceServerClient(args.grpc)
    else:
        import tritonclient.http as triton

        client = triton.InferenceServerClient(args.http, network_timeout=20)
    text = triton.InferInput("text", [len(args.texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in args.texts], dtype=object))
    meta = (
        client.get_model_metadata(args.model, as_json=True)
        if over_grpc
        else client.get_model_metadata(args.model)
    )
    result = client.infer(args.model, [text], request_id="triton")
    response = result.get_response(as_json=True) if over_grpc else result.get_response()
    try:
        client.infer(UNKNOWN, [text])
        unknown = "no error"
    except InferenceServerException as exc:
        unknown = f"{exc.status()}: {exc.message()}"
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(args.model),
        "unknown_model_ready": client.is_model_ready(UNKNOWN),
        "metadata": {
            "name": meta["name"],
            "versions": meta["versions"],
            "inputs": tensors(meta["inputs"]),
            "outputs": tensors(meta["outputs"]),
        },
        "id": response["id"],
        "outputs": {o["name"]: plain(result.as_numpy(o["name"])) for o in response["outputs"]},
        "unknown_model_infer": unknown,
    }
    client.close()
    return out


def kserve_request(args: argparse.Namespace, model: str, binary: bool) -> Any:
    from kserve import InferInput, InferRequest

    text = InferInput("text", [len(args.texts)], "BYTES")
    if binary:
        text.set_data_from_numpy(np.array([t.encode() for t in args.texts], dtype=object), binary_data=True)
    else:
        text.data = list(args.texts)
    return InferRequest(model_name=model, infer_inputs=[text], request_id="kserve")


def kserve_outputs(response: Any) -> dict[str, Any]:
    return {o.name: plain(o.as_numpy()) for o in response.outputs}


async def run_kserve_grpc(args: argparse.Namespace) -> dict[str, Any]:
    """kserve.InferenceGRPCClient has no metadata call: metadata is read with the stubs kserve
    publishes for the protocol (kserve.protocol.grpc), over the same kind of channel."""
    import grpc
    from kserve import InferenceGRPCClient
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as v2_grpc

    async with InferenceGRPCClient(args.grpc, timeout=20, retries=0) as client:
        out: dict[str, Any] = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(args.model),
            "unknown_model_ready": await client.is_model_ready(UNKNOWN),
        }
        response = await client.infer(kserve_request(args, args.model, binary=False))
        out["id"], out["outputs"] = response.id, kserve_outputs(response)
        try:
            await client.infer(kserve_request(args, UNKNOWN, binary=False))
            out["unknown_model_infer"] = "no error"
        except grpc.RpcError as exc:
            out["unknown_model_infer"] = f"{exc.code().name}: {exc.details()}"
    async with grpc.aio.insecure_channel(args.grpc) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        meta = await stub.ModelMetadata(v2.ModelMetadataRequest(name=args.model), timeout=20)
    out["metadata"] = {
        "name": meta.name,
        "versions": list(meta.versions),
        "inputs": tensors(meta.inputs),
        "outputs": tensors(meta.outputs),
    }
    return out


async def run_kserve_rest(args: argparse.Namespace) -> dict[str, Any]:
    """kserve.InferenceRESTClient (protocol v2) has no metadata call either; binary tensors in."""
    import httpx
    from kserve import InferenceRESTClient, RESTConfig

    base = f"http://{args.http}"
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=20)) as client:
        out: dict[str, Any] = {
            "live": await client.is_server_live(base),
            "ready": await client.is_server_ready(base),
            "model_ready": await client.is_model_ready(base, args.model),
            "unknown_model_ready": await client.is_model_ready(base, UNKNOWN),
            "metadata": None,
        }
        response = await client.infer(base, kserve_request(args, args.model, binary=True), args.model)
        out["id"], out["outputs"] = response.id, kserve_outputs(response)
        try:
            await client.infer(base, kserve_request(args, UNKNOWN, binary=False), UNKNOWN)
            out["unknown_model_infer"] = "no error"
        except httpx.HTTPStatusError as exc:
            out["unknown_model_infer"] = f"{exc.response.status_code}: {exc}"
    return out


CLIENTS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "triton-grpc": lambda args: run_triton(args, over_grpc=True),
    "triton-http": lambda args: run_triton(args, over_grpc=False),
    "kserve-grpc": lambda args: asyncio.run(run_kserve_grpc(args)),
    "kserve-rest": lambda args: asyncio.run(run_kserve_rest(args)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--grpc", required=True, help="HOST:PORT of the gRPC server")
    parser.add_argument("--http", required=True, help="HOST:PORT of the HTTP API")
    parser.add_argument("--model", required=True)
    parser.add_argument("texts", nargs="+")
    args = parser.parse_args()
    sys.argv[
        1:
    ] = []  # `import kserve` parses the process's command line (kserve.model_server) and exits on ours
    print(json.dumps(CLIENTS[args.client](args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
