"""The Open Inference Protocol's liveness (HTTP /v2/health/live, gRPC ServerLive) says what /healthz
says: false once the micro-batcher's thread has died, which only a restart cures (it said live
whatever happened, so a chart probing it with http.probes never restarted such a pod)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from service.dispatch import Dispatcher
from service.gen.inference import open_inference_grpc_pb2 as pb
from service.http_api.v2 import V2Api
from service.v2.grpc_servicer import InferenceServicer


class _Batcher:
    def __init__(self, died: bool) -> None:
        self._died = died

    def died(self) -> bool:
        return self._died


@pytest.mark.parametrize("died", [False, True])
def test_v2_liveness_follows_the_micro_batcher(died: bool) -> None:
    dispatcher = Dispatcher(tagger=None, batcher=_Batcher(died), metrics=None)  # type: ignore[arg-type]
    response: Any = asyncio.run(V2Api(dispatcher, 8).live(None))  # type: ignore[arg-type]
    assert (response.status_code, json.loads(response.body)) == (
        (503, {"live": False}) if died else (200, {"live": True})
    )
    answer = asyncio.run(InferenceServicer(dispatcher, 8).ServerLive(pb.ServerLiveRequest(), None))  # type: ignore[arg-type]
    assert answer.live is not died
