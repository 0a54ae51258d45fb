"""The pipeline DAG, read from dvc.yaml through DVC's own API — never a second hand-written DAG.

DVC takes a repo-wide lock for `repro`, so it cannot run two stages of one repo at once
(treeverse/dvc#755, #10465). The flow therefore runs each stage's `cmd` itself, concurrently
where the DAG allows, and serialises the short DVC bookkeeping calls (`status`, `commit`) behind
one lock. `commit` records deps/params/outs exactly as `repro` does; `reorder_lock` restores the
stage order `repro` would have written.
"""
from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

DVC_LOCK = threading.Lock()


@dataclass(frozen=True)
class StageNode:
    name: str
    """DVC address, e.g. `ingest@web`."""
    cmd: str
    upstream: tuple[str, ...]
    outs: tuple[str, ...]
    """Outputs that DVC removes before running the stage (not `persist`)."""

    @property
    def family(self) -> str:
        return self.name.split("@")[0]

    @property
    def source(self) -> str | None:
        return self.name.split("@")[1] if "@" in self.name else None


def _repo(root: str | Path):
    from dvc.repo import Repo

    return Repo(str(root))


def load_dag(root: str | Path = ".") -> list[StageNode]:
    """Stages in the order `dvc repro` would evaluate them (a topological order)."""
    from dvc.repo.reproduce import plan_repro

    with DVC_LOCK, _repo(root) as repo:
        graph = repo.index.graph
        nodes = []
        for stage in plan_repro(graph):
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            nodes.append(StageNode(
                name=stage.addressing,
                cmd=cmd,
                upstream=tuple(sorted(u.addressing for u in graph.successors(stage))),
                outs=tuple(str(o.def_path) for o in stage.outs if not o.persist),
            ))
    return nodes


def stage_changed(root: str | Path, name: str) -> bool:
    """True when DVC would rerun the stage (`dvc status <stage>` reports it)."""
    with DVC_LOCK, _repo(root) as repo:
        return bool(repo.status(targets=[name]))


def remove_outs(root: str | Path, node: StageNode) -> None:
    """What `dvc repro` does before a stage runs: its non-persistent outputs are removed."""
    for out in node.outs:
        path = Path(root) / out
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def commit_stage(root: str | Path, name: str) -> None:
    """Record the stage's deps, params and outs in dvc.lock and the cache, as `dvc repro` does after a run."""
    with DVC_LOCK, _repo(root) as repo:
        repo.commit(name, force=True)


def reorder_lock(root: str | Path, order: list[str]) -> None:
    """Concurrent commits append lock entries in completion order; restore `dvc repro`'s order."""
    from dvc.utils.serialize import modify_yaml

    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return
    with DVC_LOCK, modify_yaml(str(lock)) as data:
        stages = data.get("stages", {})
        ordered = {k: stages[k] for k in order if k in stages}
        ordered.update({k: v for k, v in stages.items() if k not in ordered})
        if list(ordered) != list(stages):
            for key in list(stages):
                del stages[key]
            stages.update(ordered)
