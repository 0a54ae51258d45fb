"""The MLflow model registry as tinyfoundry uses it: one version per distinct set of weights.

Each checkpoint the train stage keeps, and its final model, is an MLflow 3 logged model (transformers flavour,
text-generation) logged in a *checkpoint run* nested under the train run, and registered as a version of
`tracking.model_name` (tasks/train/registry.py). A version is found by the sha256 of its weights (tag
`checkpoint_sha256`), the versions of one training run by the run's fingerprint (tag `run_fingerprint`).

Every number about a version -- training-time validation, evaluate's benchmark and bits-per-byte scores -- is
an MLflow metric of its checkpoint run, logged with the logged model's id: the version's Source Run, its logged
model page and the registry's Compare view (which compares the versions' runs) all show them. Metric names are
the ones `evaluate.champion_metric` uses: `piqa/acc_norm`, `bpb/web`, `val_loss/code`, ...
"""
from __future__ import annotations

import logging
import math
import re
import time

log = logging.getLogger("tinyfoundry.registry")

ALIAS = "champion"
SHA_TAG = "checkpoint_sha256"
FINGERPRINT_TAG = "run_fingerprint"
STEP_TAG = "step"
LEGACY_EVAL_TAG = "eval."  # versions evaluated before eval results were metrics: `eval.piqa.acc_norm` tags

MODEL_URI = re.compile(r"models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))")
_LOGGED_MODEL_SOURCE = re.compile(r"models:/(m-[0-9a-f]+)$")


def parse_model_uri(uri: str) -> tuple[str, str]:
    """`models:/name@champion` → (name, "champion"); `models:/name@3` or `models:/name/3` → (name, "3")."""
    m = MODEL_URI.fullmatch(uri.strip())
    if not m:
        raise SystemExit(f"expected models:/<name>@<alias|version> or models:/<name>/<version>, got {uri!r}")
    return m["name"], m["alias"] or m["version"]


def resolve_version(client, name: str, ref: str):
    """A ModelVersion from an alias (`champion`) or a version number."""
    try:
        return client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except Exception as e:
        raise SystemExit(f"models:/{name}@{ref} is not in the registry ({type(e).__name__}: {e})") from None


def ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="tinyfoundry Llama-style models: one version per kept "
                                                          "checkpoint; `champion` marks the best evaluated one")
    except MlflowException as e:
        if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise


def _search(client, name: str, tag: str, value: str) -> list:
    try:
        return list(client.search_model_versions(f"name='{name}' and tag.{tag}='{value}'"))
    except Exception as e:  # noqa: BLE001 -- no such registered model yet
        log.debug("registry search for %s=%s in %s failed: %s", tag, value, name, e)
        return []


def find_version(client, name: str, sha256: str):
    """The oldest version of `name` holding these weights (there is only one when registered here), or None."""
    found = _search(client, name, SHA_TAG, sha256)
    return min(found, key=lambda v: int(v.version)) if found else None


def version_step(version) -> int:
    try:
        return int(version.tags.get(STEP_TAG, -1))
    except ValueError:
        return -1


def run_versions(client, name: str, fingerprint: str) -> list:
    """The versions registered by one training run (its fingerprint), in step order."""
    return sorted(_search(client, name, FINGERPRINT_TAG, fingerprint), key=lambda v: (version_step(v), int(v.version)))


def model_id(version) -> str | None:
    """The logged model behind a version (a `models:/m-...` source); None for a plain artifact folder."""
    if getattr(version, "model_id", None):
        return version.model_id
    m = _LOGGED_MODEL_SOURCE.match(version.source or "")
    return m.group(1) if m else None


def version_metrics(client, version) -> dict[str, float]:
    """The latest value of every metric of a version (its checkpoint run), plus legacy `eval.*` tags."""
    metrics: dict[str, float] = {}
    for key, value in version.tags.items():
        if key.startswith(LEGACY_EVAL_TAG) and key != LEGACY_EVAL_TAG + "run_id":
            try:  # `eval.piqa.acc_norm` → `piqa/acc_norm`
                metrics[key[len(LEGACY_EVAL_TAG):].replace(".", "/", 1)] = float(value)
            except ValueError:
                pass
    if version.run_id:
        try:
            metrics.update(client.get_run(version.run_id).data.metrics)
        except Exception as e:  # noqa: BLE001 -- a deleted run: no metrics, not a crash
            log.warning("version %s of %s: cannot read its run %s (%s)", version.version, version.name,
                        version.run_id, e)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def log_version_metrics(client, version, metrics: dict[str, float], step: int = 0) -> None:
    """Log metrics as the version's own: to its checkpoint run, linked to its logged model."""
    from mlflow.entities import Metric

    from tasks.tracking import mlflow_key

    now = int(time.time() * 1000)
    items = [Metric(mlflow_key(k), float(v), now, step, model_id=model_id(version))
             for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and math.isfinite(v)]
    for start in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(version.run_id, metrics=items[start:start + 1000])
