"""The evaluate stage's registry side, run by the CLI around the stage function with the stage's MLflow run active.

Before (`fetch_candidates`): the versions the train stage registered for this training run (tag
`run_fingerprint`, see tasks/model_registry.py) are the candidates; `evaluate.candidates` picks `final` (data/model
only), the `last` `last_k` by step, or `all`, and each one other than data/model is downloaded as a Hugging Face
folder for the stage function (`--in candidates=<folder>`).

After (`update_champion`): every scored version gets its scores as metrics (`piqa/acc_norm`, `bpb/web`, ...) and
an evaluation table in its model card; then `champion` moves to the best candidate by `evaluate.champion_metric`
-- only when it beats the current champion, and never away from a champion that has no value for that metric
(say, after `champion_metric` changed): that champion keeps the alias until it is scored
(`python -m tasks evaluate --model models:/<name>@champion`) or the alias is moved by hand.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from tasks.hashing import file_sha256
from tasks.model_registry import (ALIAS, SHA_TAG, find_version, log_version_metrics, run_versions, version_metrics,
                                  version_step)
from tasks.tracking import flatten

log = logging.getLogger("tinyfoundry.evaluate")

SCORE_KEYS = ("version", "step", "tokens_seen", "sha256", "final", "champion", "best")


# ------------------------------------------------------------------------------------------- candidates


def select_versions(versions: list, mode: str, last_k: int, final_sha: str | None) -> list:
    """`versions` in step order → the ones `evaluate.candidates` asks for."""
    if mode == "final":
        return [v for v in versions if v.tags.get(SHA_TAG) == final_sha][-1:]
    if mode == "last":
        return versions[-last_k:]
    return list(versions)


def download_hf(version, dest: Path) -> Path:
    """A version's weights and tokenizer as one Hugging Face folder at `dest` (what lm-eval and the Auto classes load).

    Versions are MLflow transformers models (`model/` + `components/tokenizer/`); versions registered as a plain
    folder of our checkpoint (model.safetensors + config.json) are exported to Hugging Face format."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="tinyfoundry-download-") as tmp:
        uri = f"models:/{version.name}/{version.version}"
        try:
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except Exception:  # noqa: BLE001 -- a plain artifact folder registered as the version's source
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=tmp))
        dest.mkdir(parents=True, exist_ok=True)
        if (root / "MLmodel").is_file() and (root / "model" / "config.json").is_file():
            for sub in ("model", "components/tokenizer"):
                for f in sorted((root / sub).glob("*")) if (root / sub).is_dir() else []:
                    shutil.copy2(f, dest / f.name)
        else:
            from tasks.evaluate.cli import find_model_dir
            from tasks.evaluate.export import export_hf

            export_hf(find_model_dir(root), dest)
    return dest


def fetch_candidates(tracking_cfg, cfg, inputs: dict[str, Path], workdir: Path) -> dict[str, Path]:
    """CLI `before` hook of the evaluate stage: `inputs` plus `candidates=<workdir>` when there are any."""
    from mlflow import MlflowClient

    from tasks.evaluate import CANDIDATES_FILE

    if "candidates" in inputs or "model" not in inputs:
        return inputs
    model_dir = Path(inputs["model"])
    meta = json.loads((model_dir / "meta.json").read_text()) if (model_dir / "meta.json").exists() else {}
    sha = file_sha256(model_dir / "model.safetensors")
    client, name = MlflowClient(), tracking_cfg.model_name
    versions = run_versions(client, name, meta["fingerprint"]) if meta.get("fingerprint") else []
    if not versions:
        log.warning("no version of %s comes from this training run (fingerprint %s): only data/model is scored",
                    name, meta.get("fingerprint"))
        return inputs
    chosen = select_versions(versions, cfg.candidates, cfg.last_k, sha)
    listing = []
    for v in chosen:
        entry = {"version": int(v.version), "step": version_step(v), "tokens_seen": tag_int(v.tags.get("tokens_seen")),
                 "sha256": v.tags.get(SHA_TAG), "path": None}
        if entry["sha256"] != sha:  # data/model itself is read from disk
            entry["path"] = f"v{v.version}"
            download_hf(v, workdir / entry["path"])
        listing.append(entry)
    (workdir / CANDIDATES_FILE).write_text(json.dumps(listing, indent=2) + "\n")
    log.info("candidates (%s): versions %s of %s, steps %s", cfg.candidates if cfg.candidates != "last" else
             f"last {cfg.last_k}", ", ".join(str(e["version"]) for e in listing), name,
             ", ".join(str(e["step"]) for e in listing))
    return {**inputs, "candidates": workdir}


def tag_int(value) -> int | None:
    """A version tag as a number (None when absent or not one)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------- champion


def flat_scores(entry: dict) -> dict[str, float]:
    """A candidate's scores as metric names: {"piqa": {"acc_norm": x}} → {"piqa/acc_norm": x}."""
    nested = {k: v for k, v in entry.items() if isinstance(v, dict)}
    return {k.replace(".", "/", 1): float(v) for k, v in flatten(nested).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def beats(new: float, old: float, mode: str) -> bool:
    return new > old if mode == "max" else new < old


def best_of(values: dict[int, tuple[float, int]], mode: str) -> int | None:
    """The version with the best value ({version: (value, step)}); a tie goes to the later step (more training)."""
    if not values:
        return None
    sign = 1 if mode == "max" else -1
    return max(values, key=lambda v: (sign * values[v][0], values[v][1]))


def decide(best: int | None, best_value: float | None, current: int | None, current_value: float | None,
           mode: str) -> tuple[int | None, bool, str]:
    """(champion version, moved, why) -- the one rule for moving the alias."""
    if best is None:
        return current, False, "no candidate has a value for the champion metric"
    if current is None:
        return best, True, "there was no champion"
    if current == best:
        return current, False, "the champion is the best candidate"
    if current_value is None:
        return current, False, (f"champion version {current} has no value for the champion metric, so it keeps the "
                                "alias (score it with `python -m tasks evaluate --model models:/<name>@champion`)")
    if beats(best_value, current_value, mode):
        return best, True, f"{best_value:.4f} beats the champion's {current_value:.4f}"
    return current, False, f"{best_value:.4f} does not beat the champion's {current_value:.4f} ({mode})"


def update_champion(tracking_cfg, output, stats: dict) -> dict:
    """CLI `after` hook of the evaluate stage (rank 0, the stage's MLflow run active)."""
    from mlflow import MlflowClient

    from tasks.model_card import with_evaluation

    client, name = MlflowClient(), tracking_cfg.model_name
    champion_cfg = stats.get("champion") or {}
    metric, mode = champion_cfg.get("metric", ""), champion_cfg.get("mode", "max")
    candidates = dict(stats.get("candidates") or {})
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001
        log.warning("no registered model %s: champion selection skipped (the train stage registers it)", name)
        return {"champion_moved": False, "champion_version": None}
    values: dict[int, tuple[float, int]] = {}
    for key, entry in candidates.items():
        version = (client.get_model_version(name, str(entry["version"])) if entry.get("version") is not None
                   else find_version(client, name, entry.get("sha256") or ""))
        if version is None:
            log.warning("%s (sha256 %s…) is not a version of %s: its scores stay in metrics only", key,
                        str(entry.get("sha256"))[:12], name)
            continue
        entry = candidates[key] = {**entry, "version": int(version.version)}
        scores = flat_scores(entry)
        log_version_metrics(client, version, scores, step=entry.get("step") or 0)
        if scores.get(metric) is not None:  # also a tag: the registry's version table shows tags, not metrics
            client.set_model_version_tag(name, version.version, metric, f"{scores[metric]:.4f}")
        if version.description:
            client.update_model_version(name, version.version, description=with_evaluation(version.description, scores))
        if scores.get(metric) is not None:
            values[int(version.version)] = (scores[metric], entry.get("step") or 0)
    try:
        current = int(client.get_model_version_by_alias(name, ALIAS).version)
    except Exception:  # noqa: BLE001 -- RESOURCE_DOES_NOT_EXIST: no champion yet
        current = None
    if current is not None and current in {e.get("version") for e in candidates.values()}:
        current_value = values.get(current, (None,))[0]  # just scored
    elif current is not None:
        current_value = version_metrics(client, client.get_model_version(name, str(current))).get(metric)
    else:
        current_value = None
    best = best_of(values, mode)
    champion, moved, why = decide(best, values.get(best, (None,))[0], current, current_value, mode)
    if moved:
        client.set_registered_model_alias(name, ALIAS, str(champion))
    log.info("champion of %s %s version %s by %s (%s): %s", name, "moves to" if moved else "stays", champion, metric,
             mode, why)
    for entry in candidates.values():
        entry["best"] = entry.get("version") == best and best is not None
        entry["champion"] = entry.get("version") == champion and champion is not None
    final = next((e.get("version") for e in candidates.values() if e.get("final")), None)
    return {"candidates": candidates, "model_version": final, "best_version": best, "champion_version": champion,
            "champion_moved": moved}
