"""Write the HTTP API's OpenAPI document (generated from service/http_api/schemas.py) to
docs/openapi.json, the copy checked into the repository.

    python scripts/gen_openapi.py          # rewrite docs/openapi.json
    python scripts/gen_openapi.py --check  # exit 1 if docs/openapi.json is out of date (run by the tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.http_api.openapi import build_openapi

DOC = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def render() -> str:
    return json.dumps(build_openapi(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="Fail if docs/openapi.json is out of date.")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is out of date: run python scripts/gen_openapi.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
