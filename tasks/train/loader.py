"""Training data: memory-mapped token shards → (B, T) input/target batches for one rank.

Shards are raw little-endian token arrays (`train_NNNN.bin`, `val_NNNN.bin`, dtype from manifest.json).
Each shard is cut into non-overlapping windows of T+1 tokens (input = window[:-1], target = window[1:]);
windows never cross a shard boundary. Every epoch visits the windows in a seeded permutation (the
validation split in file order). A micro-batch is B consecutive windows of that order: rank r of w
takes positions [pos + r·B, pos + (r+1)·B), then `pos` advances by w·B, so ranks never overlap.

The whole state is two integers (epoch, pos) that are the same on every rank, so `state_dict()` /
`load_state_dict()` make a resumed run continue with exactly the next batch.

`Prefetcher` prepares the next batches in a background thread (and pins them for an asynchronous copy to
the GPU); the batches and the resumable state are the same as without it.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("tinyfoundry.train")

MANIFEST = "manifest.json"
FORMAT = "tinyfoundry-shards-v1"


class ShardError(ValueError):
    """The shard folder is missing, malformed or inconsistent with its manifest."""


@dataclass(frozen=True)
class Manifest:
    dtype: np.dtype
    vocab_size: int
    eot_id: int
    tokenizer_sha256: str | None
    files: dict[str, list[Path]]
    """split → shard paths in manifest order."""
    raw: dict

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise ShardError(f"{path} not found: the shard stage writes it next to the .bin files")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ShardError(f"{path} is not valid JSON: {e}") from None
        if raw.get("format") != FORMAT:
            raise ShardError(f"{path}: format is {raw.get('format')!r}, expected {FORMAT!r}")
        dtype = np.dtype(raw.get("dtype", "uint16")).newbyteorder("<")
        if dtype.kind != "u":
            raise ShardError(f"{path}: dtype must be an unsigned integer type, got {raw.get('dtype')!r}")
        files: dict[str, list[Path]] = {}
        for entry in raw.get("shards", []):
            files.setdefault(entry["split"], []).append(folder / entry["file"])
        return cls(dtype, int(raw["vocab_size"]), int(raw["eot_id"]), raw.get("tokenizer_sha256"), files, raw)


class TokenLoader:
    """Yields (x, y) int64 tensors of shape (B, T) for `rank` of `world_size`; infinite when `shuffle`."""

    def __init__(self, folder: str | Path, split: str, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = True, device: str | torch.device = "cpu"):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.manifest = Manifest.read(folder)
        self.split, self.B, self.T = split, batch_size, seq_len
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.device = torch.device(device)
        self.maps: list[np.memmap] = []
        self.skipped: list[str] = []
        starts, shard_ids = [], []
        for path in self.manifest.files.get(split, []):
            mm = self._open(path)
            if mm is None:
                continue
            n = (len(mm) - 1) // seq_len  # windows of T+1 tokens overlapping by one token
            starts.append(np.arange(n, dtype=np.int64) * seq_len)
            shard_ids.append(np.full(n, len(self.maps), dtype=np.int32))
            self.maps.append(mm)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.shard_ids = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int32)
        self.per_step = batch_size * world_size
        if len(self.starts) < self.per_step:
            raise ShardError(f"split {split!r} has {len(self.starts)} windows of {seq_len + 1} tokens, fewer than one "
                             f"micro-batch over all ranks ({batch_size} × {world_size}); need more data or smaller batches")
        self.epoch, self.pos = 0, 0
        self._order = self._permutation(0)

    def _open(self, path: Path) -> np.memmap | None:
        """Memory-map one shard; a missing, empty or ragged file is skipped with a logged reason."""
        itemsize = self.manifest.dtype.itemsize
        if not path.is_file():
            reason = "missing"
        elif path.stat().st_size % itemsize:
            reason = f"size {path.stat().st_size} is not a multiple of the token size {itemsize}"
        elif path.stat().st_size < (self.T + 1) * itemsize:
            reason = f"shorter than one window of {self.T + 1} tokens"
        else:
            return np.memmap(path, dtype=self.manifest.dtype, mode="r")
        log.warning("skipping shard %s: %s", path.name, reason)
        self.skipped.append(f"{path.name}: {reason}")
        return None

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.starts))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.starts))

    @property
    def num_windows(self) -> int:
        return len(self.starts)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.starts) // self.per_step

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_device(self.next_host())

    def next_host(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y) on the CPU (pinned when the loader's device is a GPU); advances the state."""
        if self.pos + self.per_step > len(self._order):
            if not self.shuffle:
                raise StopIteration
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
            log.info("data: starting epoch %d of split %s", self.epoch, self.split)
        lo = self.pos + self.rank * self.B
        idx = self._order[lo:lo + self.B]
        self.pos += self.per_step
        buf = np.stack([self.maps[self.shard_ids[i]][self.starts[i]:self.starts[i] + self.T + 1] for i in idx])
        buf = torch.from_numpy(buf.astype(np.int64))  # (B, T+1)
        x, y = buf[:, :-1].contiguous(), buf[:, 1:].contiguous()  # (B, T) each
        if self.device.type == "cuda":
            return x.pin_memory(), y.pin_memory()
        return x, y

    def to_device(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cpu":
            return batch
        return tuple(t.to(self.device, non_blocking=True) for t in batch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "num_windows": len(self.starts),
                "seq_len": self.T, "per_step": self.per_step}

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("num_windows", len(self.starts)), ("seq_len", self.T), ("seed", self.seed)):
            if state.get(key) != mine:
                raise ValueError(f"data-loader state was saved with {key}={state.get(key)}, this loader has {mine}: "
                                 "the shards or training params changed since the checkpoint")
        if state.get("per_step") != self.per_step:
            log.warning("data: resuming with %d sequences per micro-step over all ranks (saved with %s)",
                        self.per_step, state.get("per_step"))
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation(self.epoch)


class Prefetcher:
    """Wraps a TokenLoader: a background thread keeps up to `depth` batches ready (read from the memory maps,
    stacked, pinned), so the training step does not wait for the disk. The host→device copy stays on the
    training thread (on its CUDA stream). `state_dict()` is the loader's state after the last batch handed
    out, not after the ones read ahead, so a resumed run continues with exactly the next batch."""

    def __init__(self, loader: TokenLoader, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self.loader, self.depth = loader, depth
        self._state = loader.state_dict()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _produce(self) -> None:
        while not self._stop.is_set():
            try:
                item = (self.loader.next_host(), self.loader.state_dict())
            except BaseException as e:  # noqa: BLE001 — handed to the consumer, raised on its thread
                item = e
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="token-prefetch", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return self.loader.to_device(batch)

    def state_dict(self) -> dict:
        return dict(self._state)

    def load_state_dict(self, state: dict) -> None:
        if self._thread is not None:
            raise RuntimeError("load the prefetcher's state before taking the first batch")
        self.loader.load_state_dict(state)
        self._state = self.loader.state_dict()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
