"""The resume checkpoint: what a killed training run needs to continue exactly.

After every epoch the state (weights, optimiser, scheduler, batch-order generator, every
rank's RNG states, EMA, early stopping, history) is written atomically to
`<model-dir>/resume.pt`, beside but never inside the final `model.pt`. DVC removes a stage's
outs before it runs it; this file is not an out (nor a `persist` one, which would take the
stage out of DVC's run-cache), so it survives and a rerun of the stage continues where the
killed run stopped.

A file is resumed only if its fingerprint matches this run: the model and train configs,
a digest of the training and validation data, and the number of processes. A corrupt or
foreign file is an error naming the file (or, with train.on_bad_checkpoint=warn, a warning
and a fresh start); never a silent wrong resume. A finished run leaves a small "complete"
marker, so the next run, whatever its params, starts from scratch.

Under torchrun (several nodes each with its own disk) rank 0 alone reads the file and
decides: its state, or its error, is broadcast to every rank, so no rank resumes from a
file another rank does not see (issue 12). Before that the ranks check that they run the
same params on the same data (their fingerprints agree), else all stop with one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlpipe.config import flatten, plain
from mlpipe.errors import DataError, first_line
from mlpipe.io import atomic_write_bytes
from mlpipe.train import distributed
from mlpipe.train.config import OnBadCheckpoint, ResumeMode, RuntimeConfig, TrainConfig
from mlpipe.train.distributed import DistContext

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
FORMAT = "mlpipe-resume"
VERSION = 1
# How a run is resumed, not what it computes: changing them keeps the checkpoint valid.
# (Where the data lives is in the data digest: in memory and streamed ones differ.)
POLICY_KEYS = (
    "resume",
    "on_bad_checkpoint",
    "checkpoint_every_steps",
    "in_memory",
    "memory_share",
    "loader_workers",
)


class ResumeError(DataError):
    """A resume checkpoint that cannot be used for this run."""


def data_digest(data: Any) -> str:
    """Content hash of a split's images and labels (~0.1 s for Fashion-MNIST); a streamed
    split gives its own (`digest()`: its index and shard hashes, no pixels read)."""
    if hasattr(data, "digest"):
        return str(data.digest())
    h = hashlib.blake2b(digest_size=16)
    for tensor in (data.images, data.labels):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array.data)
    return h.hexdigest()


def run_identity(
    model_cfg: Any,
    train_cfg: TrainConfig,
    data: dict[str, Any],
    world_size: int = 1,
    runtime_cfg: RuntimeConfig | None = None,
) -> dict[str, Any]:
    """What a resumable run depends on, as plain values (also shown when it does not match)."""
    train = plain(dataclasses.asdict(train_cfg))
    for key in POLICY_KEYS:
        train.pop(key, None)
    identity = {
        "model": plain(dataclasses.asdict(model_cfg)),
        "train": train,
        "data": {name: data_digest(split) for name, split in data.items()},
        "world_size": world_size,
    }
    if runtime_cfg is not None:  # precision and kernels change the numbers
        identity["runtime"] = plain(dataclasses.asdict(runtime_cfg))
    return identity


def fingerprint(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ResumeFile:
    """Implements engine.Checkpointer. Under torchrun (`ctx`) rank 0 reads and broadcasts
    what it read; only the `is_writer` rank writes."""

    def __init__(
        self,
        path: str | Path,
        identity: dict[str, Any],
        mode: ResumeMode = ResumeMode.auto,
        on_bad: OnBadCheckpoint = OnBadCheckpoint.error,
        is_writer: bool = True,
        ctx: DistContext | None = None,
    ) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.identity = identity
        self.fingerprint = fingerprint(identity)
        self.mode, self.on_bad, self.is_writer = mode, on_bad, is_writer
        self.ctx = ctx or DistContext()
        self.extra: dict[str, Any] = {}  # saved with every checkpoint (e.g. the MLflow run id)
        self._state: dict[str, Any] | None = None
        self._loaded = False

    @classmethod
    def for_run(
        cls,
        path: str | Path,
        model_cfg: Any,
        train_cfg: TrainConfig,
        data: dict[str, Any],
        ctx: DistContext,
        runtime_cfg: RuntimeConfig | None = None,
    ) -> ResumeFile:
        identity = run_identity(model_cfg, train_cfg, data, ctx.world_size, runtime_cfg)
        return cls(path, identity, train_cfg.resume, train_cfg.on_bad_checkpoint, ctx.is_main, ctx)

    def load(self) -> dict[str, Any] | None:
        """The saved state if this run should continue from it; read once, then cached.
        Under torchrun a collective: every rank must call it."""
        if not self._loaded:
            self._loaded = True
            self._state = self._load_shared() if self.ctx.is_distributed else self._load()
        return self._state

    def _load_shared(self) -> dict[str, Any] | None:
        """Rank 0 reads its own file and decides; every rank gets its state or its error."""
        distributed.require_agreement(
            self.fingerprint[:16],
            "the run (fingerprint of params and data)",
            self.ctx,
            "give every node the same params.yaml and data (git pull; dvc pull)",
        )
        decision: tuple[str | None, dict[str, Any] | None, dict[str, Any]] | None = None
        if self.ctx.is_main:
            try:
                state = self._load()
                decision = (None, state, self.extra)
            except ResumeError as exc:
                decision = (str(exc), None, {})
        error, state, extra = distributed.broadcast_object(decision, self.ctx)
        state = state if isinstance(state, dict) else None
        if error is not None:
            raise ResumeError(error)
        self.extra = dict(extra)
        if state is not None and not self.ctx.is_main:
            log.info("rank %d: resume state of rank 0 received", self.ctx.rank)
        return state

    def _load(self) -> dict[str, Any] | None:
        if self.mode is ResumeMode.never:
            if self.path.exists():
                log.info("%s: ignored (train.resume=never); starting from scratch", self.path)
            return None
        payload = self._read()
        if payload is None:
            return None
        if payload.get("complete"):
            self._require("the run that wrote it finished; there is nothing to resume")
            log.info("%s: previous run finished; starting from scratch", self.path)
            return None
        problem = self._mismatch(payload)
        if problem is not None:
            self.reject(problem)
            return None
        self.extra = dict(payload.get("extra") or {})
        state: dict[str, Any] = payload["state"]
        return state

    def _read(self) -> dict[str, Any] | None:
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            self._require("no resume checkpoint")
            return None
        except Exception as exc:  # torch raises many types for a corrupt file
            self.reject(f"unreadable resume checkpoint ({first_line(exc)})")
            return None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            self.reject("not an mlpipe resume checkpoint")
            return None
        if payload.get("version") != VERSION:
            self.reject(f"resume checkpoint version {payload.get('version')}, not {VERSION}")
            return None
        return payload

    def _mismatch(self, payload: dict[str, Any]) -> str | None:
        if payload.get("fingerprint") == self.fingerprint:
            if not isinstance(payload.get("state"), dict):
                return "incomplete resume checkpoint (no state)"
            return None
        before = flatten(payload.get("identity") or {}, render=_json)
        now = flatten(self.identity, render=_json)
        changed = [
            f"{k}: {before.get(k, '<unset>')} -> {now.get(k, '<unset>')}"
            for k in sorted(set(before) | set(now))
            if before.get(k) != now.get(k)
        ]
        detail = "; ".join(changed[:3]) + (
            f"; and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        return f"written by a different run ({detail or 'fingerprint differs'})"

    def _require(self, reason: str) -> None:
        if self.mode is ResumeMode.must:
            raise ResumeError(f"{self.path}: train.resume=must, but {reason}")

    def reject(self, reason: str) -> None:
        """A bad checkpoint: an error, or with on_bad_checkpoint=warn a fresh start."""
        if self.on_bad is OnBadCheckpoint.error or self.mode is ResumeMode.must:
            raise ResumeError(
                f"{self.path}: {reason}. Delete the file, or set train.resume=never or "
                "train.on_bad_checkpoint=warn to start over"
            )
        log.warning("%s: %s; ignoring it and starting from scratch", self.path, reason)
        self._state = None
        self.extra = {}

    def save(self, state: dict[str, Any]) -> None:
        self._write({"complete": False, "state": state})

    def mark_complete(self, summary: dict[str, Any] | None = None) -> None:
        """Replace the (large) state with a marker: the next run starts from scratch."""
        self._write({"complete": True, "summary": summary or {}})

    def _write(self, body: dict[str, Any]) -> None:
        if not self.is_writer:
            return
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "identity": self.identity,
            "extra": self.extra,
            **body,
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(self.path, buf.getvalue())


def _json(value: Any) -> str:
    return json.dumps(value, default=str)
