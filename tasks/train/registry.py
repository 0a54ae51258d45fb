"""Register what training kept in the MLflow model registry (the train stage's `after` hook: rank 0, after
training, with the stage's MLflow run active).

Every checkpoint still kept under `<checkpoint_dir>/<fingerprint>/` (`train.keep_checkpoints`) and the final model
(`data/model`) becomes a version of `tracking.model_name` -- once. A version is keyed by the sha256 of its
consolidated weights, so the final model (the same weights as the last checkpoint), a rerun after a crash, or a
resumed run that trained no further step find their existing version instead of adding one.

Per new version (tasks/model_registry.py describes the layout):
1. the checkpoint's weights, consolidated from DCP into one safetensors file (tasks/train/weights.py);
2. its Hugging Face export (tasks/evaluate/export.py), logged as an MLflow transformers model (text-generation,
   signature with generation params, input example) in a checkpoint run nested under the train run, with the
   checkpoint's metrics (tokens seen, validation loss and bits per byte at the last validation);
3. the version, with `version_tags` and a model card (tasks/model_card.py) as its description.
The train run also gets `lineage.json` (tasks/lineage.py): the dvc.lock entries of every stage upstream.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

from tasks.hashing import file_sha256
from tasks.model_registry import FINGERPRINT_TAG, SHA_TAG, STEP_TAG, ensure_registered_model, find_version

log = logging.getLogger("tinyfoundry.train")

ARTIFACT_PATH = "model"
INPUT_EXAMPLE = "The history of the city"
GENERATION_DEFAULTS = {"max_new_tokens": 48, "do_sample": False}
REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors")


def version_tags(meta: dict, sha256: str, train_run_id: str | None) -> dict[str, str]:
    """Tags of a registered version (searchable: `tag.step='750'`). Put further version tags here."""
    val_bpb = checkpoint_metrics(meta).get("val/bpb")
    # the numbers first: the registry's version table shows tags (metrics are on the version's run) in this order
    tags = {STEP_TAG: meta.get("step"), "tokens_seen": meta.get("tokens_seen"),
            "val_bpb": f"{val_bpb:.4f}" if val_bpb is not None else None,
            SHA_TAG: sha256, FINGERPRINT_TAG: meta.get("fingerprint"), "git_commit": meta.get("git_commit"),
            "tokenizer_sha256": meta.get("tokenizer_sha256"), "shard_manifest_sha256": meta.get("shard_manifest_sha256"),
            "preset": meta.get("preset"), "train_run_id": train_run_id}
    # lineage of continued pretraining: the weights this version started from (train.init_from)
    tags.update({f"init_from.{k}": v for k, v in (meta.get("init_from") or {}).items() if v})
    return {k: str(v) for k, v in tags.items() if v is not None}


def checkpoint_metrics(meta: dict) -> dict[str, float]:
    """What training measured at this checkpoint: tokens seen and the last validation before it."""
    last_val = meta.get("last_val") or {"val_loss": meta.get("final_val_loss"), "val_bpb": meta.get("val_bpb")}
    metrics = {"tokens_seen": meta.get("tokens_seen"), "val/loss": last_val.get("val_loss"),
               "val/bpb": last_val.get("val_bpb")}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def requirements() -> list[str]:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={package_version(name).split('+')[0]}")  # torch 2.13.0+cpu → torch==2.13.0
        except PackageNotFoundError:
            pins.append(name)
    return pins


def signature():
    """Prompt strings in, generated text out; generation settings as request params (`mlflow models serve`)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec("max_new_tokens", "long", GENERATION_DEFAULTS["max_new_tokens"]),
                                              ParamSpec("do_sample", "boolean", False),
                                              ParamSpec("temperature", "double", 1.0),
                                              ParamSpec("top_p", "double", 1.0)]))


def kept_checkpoints(output: Path, meta: dict) -> list[tuple[dict, Path | None]]:
    """(meta, DCP folder) of every kept checkpoint in step order, then (meta, None) for the final model."""
    from tasks.train import checkpoint

    root = Path(meta.get("params", {}).get("checkpoint_dir", "checkpoints")) / str(meta.get("fingerprint"))
    found = [(json.loads((d / "meta.json").read_text()), d) for d in checkpoint.step_dirs(root)]
    if not found:
        log.warning("no kept checkpoints in %s: only the final model is registered", root)
    return [*found, (meta, None)]


def write_checkpoint_model(ckpt: Path, output: Path, meta: dict, dest: Path) -> Path:
    """A model folder like data/model (weights, config.json, tokenizer) for one DCP checkpoint."""
    from models import ModelConfig
    from tasks.train.weights import checkpoint_weights, save_weights

    dest.mkdir(parents=True)
    save_weights(checkpoint_weights(ckpt, ModelConfig(**meta["model_config"])), dest / "model.safetensors")
    shutil.copy2(output / "config.json", dest / "config.json")
    (dest / "tokenizer").symlink_to((output / "tokenizer").resolve(), target_is_directory=True)
    return dest


def find_logged_model(client, experiment_id: str, sha256: str):
    """A finished logged model with these weights whose registration a crash interrupted, or None."""
    try:
        found = client.search_logged_models([experiment_id], filter_string=f"tags.{SHA_TAG} = '{sha256}'")
    except Exception as e:  # noqa: BLE001 -- a store without logged-model search: log the model again
        log.debug("logged-model search failed: %s", e)
        return None
    ready = [m for m in found if str(m.status).upper().endswith("READY")]
    return min(ready, key=lambda m: m.creation_timestamp) if ready else None


def log_checkpoint_model(model_dir: Path, meta: dict, sha256: str, work: Path):
    """Log one checkpoint as an MLflow transformers model in a checkpoint run nested under the active run."""
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from tasks.evaluate.export import export_hf

    hf = work / "hf"
    export_hf(model_dir, hf)
    generator = pipeline("text-generation", model=AutoModelForCausalLM.from_pretrained(hf),
                         tokenizer=AutoTokenizer.from_pretrained(hf))
    step = int(meta.get("step", 0))
    tags = {"tinyfoundry.kind": "checkpoint", STEP_TAG: str(step), SHA_TAG: sha256}
    with mlflow.start_run(run_name=f"checkpoint-step-{step:06d}", nested=True, tags=tags) as run:
        mlflow.log_params({"step": step, FINGERPRINT_TAG: meta.get("fingerprint"), "preset": meta.get("preset")})
        info = mlflow.transformers.log_model(
            generator, name=ARTIFACT_PATH, task="text-generation", step=step, tags={SHA_TAG: sha256},
            signature=signature(), input_example=([INPUT_EXAMPLE], {"max_new_tokens": 8}),
            model_config=GENERATION_DEFAULTS, pip_requirements=requirements())
        mlflow.log_metrics(checkpoint_metrics(meta), step=step, model_id=info.model_id)
    return info.model_uri, run.info.run_id


def register_checkpoints(tracking_cfg, output: str | Path, stats: dict) -> dict:
    import mlflow
    from mlflow import MlflowClient

    from tasks.lineage import log_snapshot
    from tasks.model_card import render_card

    output = Path(output)
    run = mlflow.active_run()
    if run is None:
        log.warning("no active MLflow run: the model in %s is not registered", output)
        return {}
    if not (output / "model.safetensors").is_file():
        raise FileNotFoundError(f"{output / 'model.safetensors'} not found: training did not write its output")
    meta = json.loads((output / "meta.json").read_text())
    client, name = MlflowClient(), tracking_cfg.model_name
    ensure_registered_model(client, name)
    log_snapshot(Path.cwd())
    versions, new, seen = {}, 0, set()
    with tempfile.TemporaryDirectory(prefix="tinyfoundry-register-") as tmp:
        for i, (ck_meta, ckpt) in enumerate(kept_checkpoints(output, meta)):
            started = time.time()
            step = int(ck_meta.get("step", 0))
            model_dir = output if ckpt is None else write_checkpoint_model(ckpt, output, ck_meta, Path(tmp) / f"{i}")
            sha = file_sha256(model_dir / "model.safetensors")
            if sha in seen:
                continue  # the final model is the last checkpoint's weights
            seen.add(sha)
            existing = find_version(client, name, sha)
            if existing is not None:
                versions[step] = int(existing.version)
                log.info("step %d: these weights (sha256 %s…) are already version %s of %s: not registered again",
                         step, sha[:12], existing.version, name)
                continue
            logged = find_logged_model(client, run.info.experiment_id, sha)
            if logged is not None:
                model_uri, ck_run = f"models:/{logged.model_id}", logged.source_run_id
                log.info("step %d: registering logged model %s, left unregistered by an interrupted run", step,
                         logged.model_id)
            else:
                model_uri, ck_run = log_checkpoint_model(model_dir, ck_meta, sha, Path(tmp) / f"{i}-hf")
            tags = version_tags(ck_meta, sha, run.info.run_id)
            version = mlflow.register_model(model_uri, name, tags=tags)
            client.update_model_version(name, version.version,
                                        description=render_card(name, version.version, ck_meta, None, run.info.run_id))
            versions[step] = int(version.version)
            new += 1
            log.info("registered %s version %s: step %d, %s tokens, checkpoint run %s, sha256 %s… (%.1f s)", name,
                     version.version, step, ck_meta.get("tokens_seen"), ck_run, sha[:12], time.time() - started)
    final = versions.get(int(meta.get("step", -1)))
    log.info("%s: %d version(s) from this run (steps %s), %d new", name, len(versions),
             ", ".join(map(str, sorted(versions))), new)
    return {"registered_version": final, "registered_versions": len(versions), "registered_new": new}
