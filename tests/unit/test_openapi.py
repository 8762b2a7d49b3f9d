"""docs/openapi.json is the document the server serves: regenerating it changes nothing."""

from __future__ import annotations

import subprocess
import sys

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
