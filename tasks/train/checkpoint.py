"""Checkpoints with torch.distributed.checkpoint (DCP), written atomically, last k kept.

Layout of one checkpoint, `<root>/step_000100/`:
  DCP files (`.metadata`, `__N_0.distcp`)  model + optimizer, sharded as trained, reshardable on load
  rank{r}.pt                               that rank's RNG states and data-loader state
  meta.json                                step, scheduler, training state, model config, params, git commit,
                                           tokenizer hash, world size (self-describing)
`<root>/key.json` holds the run's resume key (tasks/resume.py: code, input contents, params) that names `<root>`.
Everything is written into `.tmp_step_000100/` first and renamed when all ranks are done, so a folder
named `step_*` is always complete; a crash leaves at most a `.tmp_*` folder that the next save replaces.

The state dicts come from `get_state_dict`, which names parameters the same way with or without FSDP2
(plain tensors or DTensors): a checkpoint written by a one-rank run (plain module) resumes under FSDP2 on
more ranks and the other way round. With `async_save`, `dcp.async_save` copies the state to CPU memory
and writes it in a background thread while training goes on (torchtitan); the rename to `step_*` happens
when that write is done, at the next save or at `wait()`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

log = logging.getLogger("tinyfoundry.train")

STEP_DIR = re.compile(r"^step_(\d{6,})$")
KEY_FILE = "key.json"


def step_dirs(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest(root: str | Path) -> Path | None:
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _barrier():
    if dist.is_initialized():
        dist.barrier()


class Checkpointer:
    """Saves to `<root>/step_NNNNNN/`, keeping the last `keep`. Every method is collective (all ranks call it)."""

    def __init__(self, root: str | Path, keep: int, async_save: bool = False):
        self.root, self.keep, self.async_save = Path(root), keep, async_save
        self._pending = None  # (future, tmp, final, step) of an async save still being written
        # DCP's background thread runs collectives of its own: give them a group apart from training's (torchtitan)
        self._group = dist.new_group(backend="gloo") if async_save and dist.is_initialized() else None

    def save(self, step: int, model, optimizer, rank_state: dict, meta: dict) -> Path:
        """Returns the final folder (still being written with `async_save` until the next save or `wait()`)."""
        self.wait()
        rank = dist.get_rank() if dist.is_initialized() else 0
        tmp, final = self.root / f".tmp_step_{step:06d}", self.root / f"step_{step:06d}"
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        torch.save({**rank_state, "rng": rng_state()}, tmp / f"rank{rank}.pt")
        if rank == 0:
            (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2, sort_keys=True, default=str))
        state = {"model": model_sd, "optim": optim_sd}
        if self.async_save:
            self._pending = (dcp.async_save(state, checkpoint_id=tmp, process_group=self._group), tmp, final, step)
        else:
            dcp.save(state, checkpoint_id=tmp)
            self._publish(tmp, final, step)
        return final

    def wait(self) -> None:
        """Finish an async save in flight: wait for this rank's write, then publish the folder."""
        if self._pending is None:
            return
        future, tmp, final, step = self._pending
        self._pending = None
        future.result()  # re-raises a failed background write here, on the training thread
        self._publish(tmp, final, step)

    def _publish(self, tmp: Path, final: Path, step: int) -> None:
        _barrier()  # every rank's shards are on disk
        if (dist.get_rank() if dist.is_initialized() else 0) == 0:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in step_dirs(self.root)[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
                log.info("checkpoint: removed old %s (keeping the last %d)", old.name, self.keep)
            log.info("checkpoint: saved step %d to %s", step, final)
        _barrier()


def load(path: str | Path, model, optimizer) -> tuple[dict, dict]:
    """Collective: restore model and optimizer in place (resharded to the current world size).
    Returns (meta, this rank's saved state without RNG, which is restored here)."""
    path = Path(path)
    rank = dist.get_rank() if dist.is_initialized() else 0
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    meta = json.loads((path / "meta.json").read_text())
    rank_file = path / f"rank{rank}.pt"
    if not rank_file.is_file():  # resumed on more ranks than saved: fall back to rank 0's loader state
        log.warning("checkpoint: %s has no state for rank %d; using rank 0's (RNG streams differ)", path.name, rank)
        rank_file = path / "rank0.pt"
    rank_state = torch.load(rank_file, weights_only=True)  # tensors and plain containers only: no code runs on load
    set_rng_state(rank_state.pop("rng"))
    return meta, rank_state


def load_model_weights(path: str | Path, model) -> dict:
    """Collective: only the model weights of checkpoint `path` into `model` (sharded or not); returns its meta."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    path = Path(path)
    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    return json.loads((path / "meta.json").read_text())
