"""Model registry glue: evaluated metrics become tags of the model version; the `champion` alias moves to a
version only when it beats the current champion on the configured metric.

The version is found by its `checkpoint_sha256` tag (set by the train stage's `register_final_model`), so the
same code serves `dvc repro` (data/model) and `python -m tasks evaluate --model models:/<name>@<ref>`.
"""
from __future__ import annotations

import logging
import math

from tasks.tracking import flatten, setup

log = logging.getLogger("tinyfoundry.evaluate")

ALIAS = "champion"
TAG_PREFIX = "eval."


def metric_tag(metric: str) -> str:
    """`piqa/acc_norm` → `eval.piqa.acc_norm` (the tag holding that metric on a model version)."""
    return TAG_PREFIX + metric.replace("/", ".")


def find_version(client, name: str, sha256: str):
    """The newest version of `name` tagged checkpoint_sha256=sha256, or None."""
    versions = [v for v in client.search_model_versions(f"name='{name}'")
                if v.tags.get("checkpoint_sha256") == sha256]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _beats(new: float, old: float | None, mode: str) -> bool:
    if old is None or not math.isfinite(old):
        return True
    return new > old if mode == "max" else new < old


def promote(client, name: str, version: str, stats: dict, metric: str, mode: str, value: float | None,
            run_id: str | None = None) -> dict:
    """Tag `version` with its metrics; point `champion` at it if it beats the current champion's value."""
    for key, v in flatten({k: val for k, val in stats.items() if k not in ("champion", "checkpoint_sha256", "timing")}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            client.set_model_version_tag(name, version, TAG_PREFIX + key, repr(float(v)))
    if run_id:
        client.set_model_version_tag(name, version, TAG_PREFIX + "run_id", run_id)
    try:
        current = client.get_model_version_by_alias(name, ALIAS)
    except Exception:  # MlflowException RESOURCE_DOES_NOT_EXIST: no champion yet
        current = None
    tag = metric_tag(metric)
    old = float(current.tags[tag]) if current is not None and tag in current.tags else None
    if value is None:
        log.warning("version %s of %s has no %s: the champion stays %s", version, name, metric,
                    current.version if current else "unset")
        moved = False
    elif current is not None and int(current.version) == int(version):
        moved = False  # re-evaluated champion: tags refreshed, alias unchanged
    elif _beats(value, old, mode):
        client.set_registered_model_alias(name, ALIAS, str(version))
        moved = True
        log.info("champion of %s moves to version %s: %s %.4f beats %s", name, version, metric, value,
                 "no champion" if current is None else f"version {current.version} ({old})")
    else:
        moved = False
        log.info("champion of %s stays version %s: %s %.4f does not beat %.4f (%s)", name, current.version,
                 metric, value, old, mode)
    champion = int(version) if moved else (int(current.version) if current is not None else None)
    return {"model_version": int(version), "champion_version": champion, "champion_moved": moved}


def update_champion(tracking_cfg, output, stats: dict) -> dict:
    """CLI `after` hook of the evaluate stage (rank 0, the stage's MLflow run active)."""
    from mlflow import MlflowClient

    mlflow = setup(tracking_cfg.experiment, tracking_cfg.tracking_uri)
    client = MlflowClient()
    name, sha = tracking_cfg.model_name, stats.get("checkpoint_sha256")
    champion = stats.get("champion") or {}
    try:
        client.get_registered_model(name)
    except Exception:
        log.warning("no registered model %s: champion selection skipped (the train stage registers it)", name)
        return {"champion_moved": False, "champion_version": None}
    version = find_version(client, name, sha) if sha else None
    if version is None:
        log.warning("no version of %s is tagged checkpoint_sha256=%s: champion selection skipped", name, sha)
        return {"champion_moved": False, "champion_version": None}
    run = mlflow.active_run()
    return promote(client, name, version.version, stats, champion.get("metric", ""), champion.get("mode", "max"),
                   champion.get("value"), run.info.run_id if run else None)
