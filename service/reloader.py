"""ModelReloader: keeps the Tagger on the registry's ``current`` model, safely.

A candidate is loaded and verified in the background (checksum, trusted types), smoke-tested
on a few known articles, and only then swapped in atomically; calls in flight finish on the old
model. A poll compares the files' sizes and modification times, not only the path: a version
deleted and written again under its name is another model. A candidate that fails any step is
refused: the old model keeps serving, the reason is logged and counted
(``newstagger_model_reloads_total{result="refused"}``). The files of a version being copied in
(``cp -r`` into the version ``current`` names) change from poll to poll: each state is an attempt
and is counted, but the reason is logged once while it stays the same problem, and again when it
changes or is over (the model loads, or ``current`` names the served model again). A file that
cannot be read (permission denied, an I/O error, a symlink loop) is the environment's problem,
not the model's: it is refused and logged the same way but tried again at every poll, since
restoring its permissions changes neither its size nor its modification time; a ``current``
that cannot be read is like one that names no version (the old model keeps serving).

A ``current`` that takes away heads, head kinds or labels the served model has (changed by hand,
``models promote --allow-head-changes``, or a rollback) is served: the registry's pointer is
what every process serves, so a restarted one agrees with the others. The loss is logged as a
warning naming what callers lose (``models promote`` is where it is refused).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.core.errors import ArtifactError, NewstaggerError
from service.core.tagger import Tagger
from service.core.types import Article
from service.metrics import Metrics
from service.model.artifact import MODEL_FILE, LoadedModel, load_artifact
from service.model.locate import resolve_model
from service.model.manifest import MANIFEST_FILE, lost_heads

logger = logging.getLogger(__name__)

SMOKE_ARTICLES = (
    Article("smoke-1", "Officials met in the capital on Monday to discuss the agreement and next steps."),
    Article(
        "smoke-2", "Troops were deployed near the border as talks on sanctions stalled.", "Border tensions"
    ),
    Article("smoke-3", "The home side won the cup final after extra time.", "Cup final", "sport"),
)


@dataclass(frozen=True)
class ReloadOutcome:
    result: str  # "loaded" | "unchanged" | "refused" | "missing"
    version: str
    message: str = ""


def smoke_check(candidate: LoadedModel) -> None:
    """Raise ArtifactError unless the candidate tags known articles sensibly."""
    if not candidate.manifest.heads:
        raise ArtifactError("smoke check failed: the model has no heads (it would tag nothing)")
    try:
        results = Tagger(candidate).tag(list(SMOKE_ARTICLES))
    except Exception as exc:
        raise ArtifactError(f"smoke check failed: {type(exc).__name__}: {exc}") from exc
    for result in results:
        if len(result.heads) != len(candidate.manifest.heads):
            raise ArtifactError("smoke check failed: a head gave no result")
        for head in result.heads:
            if not all(math.isfinite(s.score) and 0.0 <= s.score <= 1.0 for s in head.scores):
                raise ArtifactError(f"smoke check failed: head {head.head!r} gave scores outside [0, 1]")


class ModelReloader:
    def __init__(
        self, tagger: Tagger, model_dir: Path, metrics: Metrics | None = None, interval: float = 10.0
    ):
        self.tagger = tagger
        self.model_dir = Path(model_dir)
        self.metrics = metrics
        self.interval = interval
        # refused as they were (not retried): the problem, as compared and as logged
        self._refused: dict[tuple[str, tuple[int, ...]], tuple[str, str]] = {}
        self._served: tuple[str, tuple[int, ...]] | None = None  # the served model's files, as loaded
        # the last problem logged (no model to load, or a refused one), as compared and as shown,
        # and on how many polls it was met: logged again only once it changes
        self._problem, self._problem_text, self._problem_polls = "", "", 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> ReloadOutcome:
        """Load the registry's current model if it is not the one being served."""
        with self._lock:
            try:
                path, version = resolve_model(self.model_dir)
            except (ArtifactError, OSError) as exc:  # `current` names no version; cannot be read
                if self._first(f"missing: {exc}", f"no model to load: {exc}"):
                    logger.warning("no model to load from %s: %s", self.model_dir, exc)
                return ReloadOutcome("missing", "", str(exc))
            serving = self.tagger.model
            # the served files as loaded: a version deleted and written again under its name is
            # another model at the same path; a version fixed in place is tried again
            key = (str(path.resolve()), _fingerprint(path))
            if serving is not None and key == self._served:
                self._over()
                return ReloadOutcome("unchanged", serving.manifest.version)
            if key in self._refused:  # refused as it is now: not tried again, logged if it is news
                self._log_refusal(*self._refused[key], path)
                return ReloadOutcome("refused", path.name, "already refused")
            started = time.perf_counter()
            try:
                candidate = load_artifact(path, version)
                smoke_check(candidate)
            except NewstaggerError as exc:
                self._refused[key] = (f"refused {path}: {_problem(str(exc))}", f"refused model {path}: {exc}")
                if self.metrics:
                    self.metrics.model_reloads.labels("refused").inc()
                self._log_refusal(*self._refused[key], path)
                return ReloadOutcome("refused", path.name, str(exc))
            except OSError as exc:  # the files' fault or the disk's, not the model's: tried again
                if self.metrics:
                    self.metrics.model_reloads.labels("refused").inc()
                self._log_refusal(f"unreadable {path}: {exc}", f"cannot read model {path}: {exc}", path)
                return ReloadOutcome("refused", path.name, f"cannot read: {exc}")
            old, self._served = self.tagger.swap(candidate), key
            version = candidate.manifest.version
            lost = [] if old is None else lost_heads(old.manifest, candidate.manifest)
            if lost:
                logger.warning(
                    "serving model %s although it takes away what %s served: %s (callers asking "
                    "for them now get errors or nothing)",
                    version,
                    old.manifest.version if old else "",
                    "; ".join(lost),
                    extra={"model_version": version},
                )
            if self.metrics:
                self.metrics.model_load.observe(time.perf_counter() - started)
                self.metrics.model_reloads.labels("loaded").inc()
                heads = {h.name: h.labels for h in candidate.manifest.heads}
                self.metrics.set_model(candidate.manifest.name, version, candidate.loaded_at, heads)
            logger.info(
                "serving model %s %s (was %s)",
                candidate.manifest.name,
                version,
                old.manifest.version if old else "none",
                extra={"model_version": version},
            )
            self._over()
            return ReloadOutcome("loaded", version)

    def _first(self, problem: str, text: str) -> bool:
        """Whether ``problem`` is new (to be logged), rather than the last one met again."""
        if problem == self._problem:
            self._problem_polls += 1
            return False
        self._problem, self._problem_text, self._problem_polls = problem, text, 1
        return True

    def _log_refusal(self, problem: str, text: str, path: Path) -> None:
        if self._first(problem, text):
            logger.error(
                "%s (logged again only when the problem changes)", text, extra={"model_version": path.name}
            )

    def _over(self) -> None:
        """The model is served: the last problem, if any, is over; say so, and how long it lasted."""
        if self._problem:
            logger.info("resolved after %d poll(s): %s", self._problem_polls, self._problem_text)
        self._problem, self._problem_text, self._problem_polls = "", "", 0

    def start(self) -> None:
        """Poll every ``interval`` seconds in a background thread (interval 0: never)."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="model-reloader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                logger.exception("model reload check failed")


def _fingerprint(path: Path) -> tuple[int, ...]:
    """Modification times and sizes of the artifact's files: changes when any is rewritten."""
    out: list[int] = []
    for name in (MANIFEST_FILE, MODEL_FILE):
        try:
            stat = (path / name).stat()
        except OSError:
            out += [0, 0]
            continue
        out += [stat.st_mtime_ns, stat.st_size]
    return tuple(out)


def _problem(reason: str) -> str:
    """``reason`` without its numbers and digests, which change as a file is written (a checksum
    mismatch names the file's digest, a JSON error its offset): the problem, not the file's state."""
    return re.sub(r"[0-9a-f]{6,}…?|\d+", "#", reason)
