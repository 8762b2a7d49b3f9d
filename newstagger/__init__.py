"""newstagger's Python API, and the entry point of the installed ``newstagger`` program.

Tag articles in this process (no server)::

    import newstagger

    tagger = newstagger.load("models")            # a registry (its current model) or an artifact
    for result in tagger.tag([newstagger.Article("a1", "Pyongyang sent troops to Kursk.")]):
        print(result.article_id, [(h.head, [s.label for s in h.labels]) for h in result.heads])

or through a running server, with the same result types::

    with newstagger.TaggerClient("127.0.0.1:50051") as client:
        print(client.tag("Pyongyang sent troops to Kursk.").heads)

The code lives in the top-level packages ``service`` and ``training`` (the repository's layout).
Those names are common, so every use of this module first checks that they are newstagger's own
and not another project's, and fails with a message saying which one is in the way.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.client import RemoteError, TaggerClient
    from service.core.errors import NewstaggerError
    from service.core.tagger import Tagger
    from service.core.types import Article, TagOptions, TagResult

__all__ = [
    "Article",
    "NewstaggerError",
    "RemoteError",
    "TagOptions",
    "TagResult",
    "Tagger",
    "TaggerClient",
    "load",
    "main",
]

PACKAGES = ("service", "training")
_API = {
    "Article": "service.core.types",
    "TagOptions": "service.core.types",
    "TagResult": "service.core.types",
    "Tagger": "service.core.tagger",
    "NewstaggerError": "service.core.errors",
    "TaggerClient": "service.client",
    "RemoteError": "service.client",
}


@functools.cache
def package_conflict() -> str | None:
    """Why ``service`` or ``training`` is not newstagger's own, or None when both are."""
    home = Path(__file__).resolve().parent.parent
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        found = Path(spec.origin).resolve().parent if spec is not None and spec.origin else None
        if found is None or found != home / name:
            return (
                f"the top-level package {name!r} at {found or 'nowhere'} is not newstagger's (expected "
                f"{home / name}): another project in this environment has a package of that name. "
                "Install newstagger in its own virtual environment."
            )
        if getattr(importlib.import_module(name), "__distribution__", None) != "newstagger":
            return (
                f"{home / name} holds another project's files (no newstagger marker): another "
                f"distribution installed a top-level {name!r} over newstagger's. Reinstall newstagger "
                "in its own virtual environment."
            )
    return None


def _check() -> None:
    problem = package_conflict()
    if problem is not None:
        raise ImportError(f"newstagger: {problem}")


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'newstagger' has no attribute {name!r}")
    _check()
    return getattr(importlib.import_module(module), name)


def load(path: str | Path, max_text_bytes: int = 1_000_000) -> Tagger:
    """A Tagger serving the model at ``path``: a registry's current version or an artifact
    directory. Raises ArtifactError (a NewstaggerError) saying what is wrong."""
    _check()
    from service.core.tagger import Tagger
    from service.model.locate import load_model

    return Tagger(load_model(Path(path)), max_text_bytes=max_text_bytes)


def main() -> int:
    """The ``newstagger`` program."""
    problem = package_conflict()
    if problem is not None:
        print(f"newstagger: {problem}", file=sys.stderr)
        return 2
    from service.cli import main as cli_main

    return cli_main()
