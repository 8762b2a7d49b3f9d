"""Regenerate the gRPC/protobuf stubs in service/gen/ from protos/.

    python scripts/gen_protos.py           # regenerate in place
    python scripts/gen_protos.py --check   # regenerate into a temp dir; exit 1 if anything differs

The include mapping ``-Iservice/gen=protos`` makes the generated imports absolute
(``from service.gen.newstagger.v1 import tagger_pb2``), so no post-processing is needed.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTOS = REPO / "protos"
GEN_PREFIX = Path("service/gen")
GEN = REPO / GEN_PREFIX


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out_root: Path) -> None:
    """Write the stubs under ``out_root / service/gen``, with __init__.py files."""
    out_root.mkdir(parents=True, exist_ok=True)
    sources = [str(GEN_PREFIX / p.relative_to(PROTOS)) for p in proto_files()]
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{GEN_PREFIX}={PROTOS}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *sources,
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)  # noqa: S603 - fixed argv
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"protoc failed with exit code {done.returncode}")
    gen = out_root / GEN_PREFIX
    for directory in [gen, *(d for d in gen.rglob("*") if d.is_dir())]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")


def tree(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, committed = tree(Path(tmp) / GEN_PREFIX), tree(GEN)
        problems = sorted(set(fresh) ^ set(committed))
        problems += sorted(
            name
            for name in set(fresh) & set(committed)
            if not filecmp.cmp(fresh[name], committed[name], shallow=False)
        )
    if problems:
        print(
            "generated stubs are out of date with protos/ (run `python scripts/gen_protos.py`): "
            + ", ".join(problems),
            file=sys.stderr,
        )
        return 1
    print("generated stubs are up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if regenerating would change anything")
    args = parser.parse_args()
    if args.check:
        return check()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if GEN.exists():
            shutil.rmtree(GEN)
        shutil.copytree(Path(tmp) / GEN_PREFIX, GEN)
    print(f"regenerated {GEN.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
