"""Register the trained model in MLflow (called by the CLI on rank 0 with the train stage's run active).

MLflow 3.17's `mlflow.register_model("runs:/<id>/model", name)` only accepts a *logged model* (it fails
with "Unable to find a logged_model with artifact_path model under run" for a plain artifact folder,
after creating the registered model). A plain folder of safetensors + JSON needs no pyfunc flavour, so we
log it as artifacts and create the version with `MlflowClient.create_model_version(source=<artifact URI>)`;
`mlflow.artifacts.download_artifacts("models:/<name>/<version>")` then returns the folder as written.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from tasks.hashing import file_sha256

log = logging.getLogger("tinyfoundry.train")

ARTIFACT_PATH = "model"


def register_final_model(tracking_cfg, output: str | Path, stats: dict) -> dict:
    import mlflow
    from mlflow.exceptions import MlflowException

    output = Path(output)
    run = mlflow.active_run()
    if run is None:
        log.warning("no active MLflow run: the model in %s is not registered", output)
        return {}
    weights = output / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: training did not write its output")
    digest = file_sha256(weights)
    mlflow.log_artifacts(str(output), ARTIFACT_PATH)
    client = mlflow.MlflowClient()
    name = tracking_cfg.model_name
    try:
        client.create_registered_model(name, description="tinyfoundry Llama-style models; one version per training run")
    except MlflowException as e:
        if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise
    meta = json.loads((output / "meta.json").read_text()) if (output / "meta.json").is_file() else {}
    tags = {"checkpoint_sha256": digest, "preset": str(meta.get("preset", "")),
            "tokenizer_sha256": str(meta.get("tokenizer_sha256", "")), "git_commit": str(meta.get("git_commit", "")),
            "step": str(stats.get("step", "")), "val_bpb": str(stats.get("val_bpb", ""))}
    # lineage of continued pretraining: the weights this version started from (train.init_from)
    tags.update({f"init_from.{k}": str(v) for k, v in (meta.get("init_from") or {}).items() if v})
    version = client.create_model_version(name, source=mlflow.get_artifact_uri(ARTIFACT_PATH), run_id=run.info.run_id,
                                          tags=tags)
    log.info("registered %s version %s (model.safetensors sha256 %s…)", name, version.version, digest[:12])
    return {"registered_version": int(version.version)}
