"""docs/openapi.json is the document the server serves: regenerating it changes nothing."""

from __future__ import annotations

import subprocess
import sys

from service.http_api.openapi import build_openapi
from tests.helpers import REPO


def test_checked_in_openapi_document_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_openapi.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def test_v2_statuses_besides_200_are_documented() -> None:
    paths = build_openapi()["paths"]
    assert set(paths["/v2/health/ready"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/v2/health/live"]["get"]["responses"]) == {"200", "503"}  # 503: the batcher died
    model = "/v2/models/{model_name}"
    for path in (model, model + "/versions/{model_version}"):
        assert {"404", "503"} <= set(paths[path]["get"]["responses"])
        assert {"404", "503"} <= set(paths[path + "/ready"]["get"]["responses"])
        infer = paths[path + "/infer"]["post"]["responses"]
        assert {"200", "400", "404", "413", "429", "500", "503", "504"} == set(infer)
        assert infer["400"]["content"]["application/json"]["schema"]["required"] == ["error"]
