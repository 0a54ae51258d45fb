"""tasks/train/registry.py: the final model becomes an MLflow model version that loads back byte for byte."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from models import Llama, ModelConfig
from tasks.config.pipeline import TrackingConfig
from tasks.tracking import setup
from tasks.train.registry import register_final_model


def test_register_final_model_and_download_it_back(tmp_path, mlflow_uri):
    out = tmp_path / "model"
    out.mkdir()
    cfg = ModelConfig(vocab_size=40, n_layer=1, n_head=2, n_kv_head=1, d_model=16, ffn_hidden=32, max_seq_len=8)
    save_file(Llama(cfg).state_dict(), out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "preset": "10m"}))
    (out / "meta.json").write_text(json.dumps({"preset": "10m", "tokenizer_sha256": "abc", "git_commit": "deadbeef"}))
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    mlflow = setup("test-exp", root=tmp_path)
    tracking = TrackingConfig(model_name="tiny-test")
    with mlflow.start_run() as run:
        first = register_final_model(tracking, out, {"step": 7, "val_bpb": 2.5})
        second = register_final_model(tracking, out, {"step": 8})
    assert first == {"registered_version": 1} and second == {"registered_version": 2}
    client = mlflow.MlflowClient()
    version = client.get_model_version("tiny-test", "1")
    assert version.run_id == run.info.run_id
    assert version.tags["checkpoint_sha256"] == digest and version.tags["step"] == "7"
    found = client.search_model_versions(f"name='tiny-test' and tag.checkpoint_sha256='{digest}'")
    assert sorted(str(v.version) for v in found) == ["1", "2"]
    local = Path(mlflow.artifacts.download_artifacts("models:/tiny-test/1", dst_path=str(tmp_path / "dl")))
    assert (local / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert json.loads((local / "config.json").read_text())["preset"] == "10m"
    Llama(cfg).load_state_dict(load_file(local / "model.safetensors"))


def test_no_active_run_registers_nothing(tmp_path, mlflow_uri):
    assert register_final_model(TrackingConfig(), tmp_path, {}) == {}
