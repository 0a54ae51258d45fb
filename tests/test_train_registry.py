"""tasks/train/registry.py on a real training run: every kept checkpoint and the final model become MLflow
transformers-model versions, once (keyed by the weights' sha256), that load back as text-generation pipelines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tasks.train as train
from tasks.config.pipeline import TrackingConfig
from tasks.config.train import TrainConfig
from tasks.hashing import file_sha256
from tasks.tracking import setup
from train_helpers import book_texts, byte_lengths, byte_tokenizer_dir, byte_tokens, write_shards

NAME = "tiny-registry-test"
TINY = {"preset": "10m", "overrides": {"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "ffn_hidden": 192}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """30 steps, a checkpoint every 10, the last 2 kept: checkpoints at steps 20 and 30, final = step 30."""
    root = tmp_path_factory.mktemp("train-registry")
    texts = book_texts(shared_data, n_books=2, max_chars=150_000)
    shards = write_shards(root / "shards", {"train": [byte_tokens(texts[:1])], "val": [byte_tokens([texts[1][:30_000]])]})
    tokenizer = byte_tokenizer_dir(root / "tokenizer")
    cfg = TrainConfig(model=TINY, seq_len=64, micro_batch_size=8, global_batch_tokens=512, max_steps=30, lr=1e-2,
                      min_lr=1e-3, warmup_steps=3, eval_every=10, eval_batches=2, log_every=10, checkpoint_every=10,
                      keep_checkpoints=2, checkpoint_dir=str(root / "ckpt"), device="cpu")
    load_token_bytes = train.load_token_bytes
    train.load_token_bytes = lambda _dir: byte_lengths()
    try:
        stats = train.run_train(cfg, {"shards": shards, "tokenizer": tokenizer}, root / "model")
    finally:
        train.load_token_bytes = load_token_bytes
    return root, stats


def register(root: Path, monkeypatch):
    from tasks.train.registry import register_checkpoints

    monkeypatch.chdir(root)  # checkpoint_dir in meta.json is absolute here; lineage reads ./dvc.lock (absent)
    mlflow = setup("registry-test", f"sqlite:///{root / 'mlflow.db'}", root)
    with mlflow.start_run(run_name="train") as run:
        out = register_checkpoints(TrackingConfig(model_name=NAME), root / "model", {})
    return mlflow, run, out


@pytest.mark.slow
def test_kept_checkpoints_become_versions_once_and_load_as_pipelines(trained, monkeypatch):
    root, stats = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow, run, out = register(root, monkeypatch)
    client = mlflow.MlflowClient()
    versions = sorted(client.search_model_versions(f"name='{NAME}'"), key=lambda v: int(v.version))
    # steps 20 and 30 kept (10 was pruned); the final model is step 30's weights: no third version
    assert [v.tags["step"] for v in versions] == ["20", "30"]
    assert out == {"registered_version": int(versions[1].version), "registered_versions": 2, "registered_new": 2}
    final_sha = file_sha256(root / "model" / "model.safetensors")
    assert versions[1].tags["checkpoint_sha256"] == final_sha != versions[0].tags["checkpoint_sha256"]

    meta = json.loads((root / "model" / "meta.json").read_text())
    for v, step in zip(versions, (20, 30)):
        assert v.tags["tokens_seen"] == str(step * 512) and v.tags["run_fingerprint"] == meta["fingerprint"]
        assert v.tags["shard_manifest_sha256"] == file_sha256(root / "shards" / "manifest.json")
        assert v.tags["tokenizer_sha256"] == "byte-level-test" and v.tags["train_run_id"] == run.info.run_id
        assert float(v.tags["val_bpb"]) > 0
        # the version's source is a logged model in a checkpoint run nested under the train run, with metrics
        assert v.source.startswith("models:/m-")
        ck = client.get_run(v.run_id)
        assert ck.data.tags["mlflow.parentRunId"] == run.info.run_id and ck.info.run_name == f"checkpoint-step-{step:06d}"
        assert ck.data.metrics["tokens_seen"] == step * 512 and ck.data.metrics["val/loss"] > 0
        logged = client.get_logged_model(v.source.removeprefix("models:/"))
        assert {m.key for m in logged.metrics} >= {"tokens_seen", "val/loss", "val/bpb"}
        assert f"version {v.version} (step {step})" in v.description and "## Data mix" in v.description
    # the consolidated checkpoint weights are the final model's, tensor for tensor
    from models import ModelConfig
    from tasks.train.weights import checkpoint_weights

    last = checkpoint_weights(Path(meta["params"]["checkpoint_dir"]) / meta["fingerprint"] / "step_000030",
                              ModelConfig(**meta["model_config"]))
    final = load_file(root / "model" / "model.safetensors")
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in final)

    # loads the way MLflow users expect: a text-generation pipeline, greedy output = the HF export's
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.evaluate.export import export_hf

    pipe = mlflow.transformers.load_model(f"models:/{NAME}/{versions[1].version}")
    text = pipe("It was a dark and stormy night", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    export_hf(root / "model", root / "hf")
    model, tok = AutoModelForCausalLM.from_pretrained(root / "hf"), AutoTokenizer.from_pretrained(root / "hf")
    ids = tok("It was a dark and stormy night", return_tensors="pt", add_special_tokens=False)["input_ids"]
    new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert text == tok.decode(new[0], skip_special_tokens=True)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/{versions[0].version}")
    assert {p.name for p in pyfunc.metadata.signature.params.params} >= {"max_new_tokens", "do_sample"}
    assert isinstance(pyfunc.predict(["def add(a, b):"], params={"max_new_tokens": 4})[0], str)

    # idempotent: registering again adds nothing; after a crash between logging and registering (the version
    # is gone, its logged model is not), the logged model is registered again instead of a new upload
    _, _, again = register(root, monkeypatch)
    assert again == {"registered_version": int(versions[1].version), "registered_versions": 2, "registered_new": 0}
    client.delete_model_version(NAME, versions[1].version)
    _, _, after_crash = register(root, monkeypatch)
    assert after_crash["registered_new"] == 1
    experiment = client.get_experiment_by_name("registry-test").experiment_id
    logged = client.search_logged_models([experiment], filter_string=f"tags.checkpoint_sha256 = '{final_sha}'")
    assert len(logged) == 1
    assert len(client.search_model_versions(f"name='{NAME}' and tag.checkpoint_sha256='{final_sha}'")) == 1


def test_no_active_run_registers_nothing(tmp_path):
    from tasks.train.registry import register_checkpoints

    assert register_checkpoints(TrackingConfig(), tmp_path, {}) == {}


def test_version_tags_and_metrics_come_from_the_checkpoint_meta():
    from tasks.train.registry import checkpoint_metrics, version_tags

    meta = {"step": 625, "tokens_seen": 1_280_000, "fingerprint": "abc", "git_commit": "deadbeef",
            "tokenizer_sha256": "t", "shard_manifest_sha256": "m", "preset": "10m",
            "last_val": {"val_loss": 6.1, "val_bpb": 2.8, "step": 625}}
    assert checkpoint_metrics(meta) == {"tokens_seen": 1_280_000.0, "val/loss": 6.1, "val/bpb": 2.8}
    tags = version_tags(meta, "sha", "run1")
    assert tags == {"checkpoint_sha256": "sha", "step": "625", "tokens_seen": "1280000", "run_fingerprint": "abc",
                    "git_commit": "deadbeef", "tokenizer_sha256": "t", "shard_manifest_sha256": "m", "preset": "10m",
                    "train_run_id": "run1", "val_bpb": "2.8000"}
    # the final model's meta (data/model/meta.json) names its last validation differently
    assert checkpoint_metrics({"tokens_seen": 10, "final_val_loss": 5.0, "val_bpb": np.float64(4.0).item()}) == \
        {"tokens_seen": 10.0, "val/loss": 5.0, "val/bpb": 4.0}
