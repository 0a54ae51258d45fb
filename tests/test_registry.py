"""The `champion` alias on a real SQLite MLflow registry: better moves it, worse does not; registry commands."""
from __future__ import annotations

import json

import pytest
import yaml
from test_evaluate_fixtures import book_text, make_model_dir, train_tiktoken

from tasks.config.pipeline import TrackingConfig
from tasks.evaluate.registry import update_champion

NAME = "tiny-llama"


@pytest.fixture
def client(mlflow_uri, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # artifacts (mlartifacts/) land in the test's folder
    c = MlflowClient(mlflow_uri)
    c.create_registered_model(NAME)
    return c


def _version(client, sha: str, source: str = "/nonexistent", run_id: str | None = None) -> int:
    version = client.create_model_version(NAME, source, run_id=run_id, tags={"checkpoint_sha256": sha}).version
    return int(version)


def _stats(sha: str, value: float | None, metric: str = "piqa/acc_norm", mode: str = "max") -> dict:
    head, _, key = metric.partition("/")
    return {head: {key: value, "acc": 0.5} if value is not None else {"acc": 0.5}, "bpb": {"web": 1.9},
            "champion": {"metric": metric, "mode": mode, "value": value}, "checkpoint_sha256": sha}


def _champion(client) -> str:
    return int(client.get_model_version_by_alias(NAME, "champion").version)


def test_champion_moves_only_to_a_better_version(client):
    tracking = TrackingConfig(model_name=NAME)
    v1, v2, v3 = _version(client, "a"), _version(client, "b"), _version(client, "c")

    first = update_champion(tracking, None, _stats("a", 0.50))
    assert first == {"model_version": v1, "champion_version": v1, "champion_moved": True} and _champion(client) == v1

    worse = update_champion(tracking, None, _stats("b", 0.40))
    assert worse["champion_moved"] is False and worse["champion_version"] == v1 and _champion(client) == v1
    tags = client.get_model_version(NAME, str(v2)).tags
    assert float(tags["eval.piqa.acc_norm"]) == 0.40 and float(tags["eval.bpb.web"]) == 1.9  # tagged anyway

    tie = update_champion(tracking, None, _stats("c", 0.50))
    assert tie["champion_moved"] is False and _champion(client) == v1  # equal is not better

    better = update_champion(tracking, None, _stats("c", 0.55))
    assert better == {"model_version": v3, "champion_version": v3, "champion_moved": True} and _champion(client) == v3

    unmeasured = update_champion(tracking, None, _stats("a", None))
    assert unmeasured["champion_moved"] is False and _champion(client) == v3

    # an unregistered checkpoint or model is a logged skip, not a crash
    assert update_champion(tracking, None, _stats("never-registered", 0.9)) == {"champion_moved": False,
                                                                                "champion_version": None}
    assert update_champion(TrackingConfig(model_name="nope"), None, _stats("a", 0.9))["champion_moved"] is False

    # mode min (bits per byte): lower wins; another registered model, its own champion
    other = TrackingConfig(model_name=NAME + "-bpb")
    client.create_registered_model(other.model_name)
    w1, w2 = (int(client.create_model_version(other.model_name, "/x", tags={"checkpoint_sha256": s}).version)
              for s in ("d", "e"))
    assert update_champion(other, None, _stats("d", 1.8, "bpb/web", "min"))["champion_version"] == w1
    assert update_champion(other, None, _stats("e", 1.9, "bpb/web", "min"))["champion_version"] == w1
    assert update_champion(other, None, _stats("e", 1.7, "bpb/web", "min"))["champion_version"] == w2
    assert _champion(client) == v3  # untouched


@pytest.fixture
def registered_model(client, tmp_path, shared_data):
    """A tiny model logged as run artifacts and registered as the champion."""
    import mlflow

    enc = train_tiktoken(book_text(shared_data))
    model_dir = make_model_dir(tmp_path / "model", enc, seed=5)
    mlflow.set_experiment("tinyfoundry")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model_dir), "model")
    version = _version(client, "sha-of-tiny", f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias(NAME, "champion", str(version))
    params = {"fetch": {**{s: {"uris": ["unused"]} for s in ("web", "books", "code", "reference")},
                        "eval": {"uris": [str(shared_data / "eval" / "*.jsonl"), str(shared_data / "eval" / "*.lst")]}},
              "tracking": {"model_name": NAME}, "evaluate": {"max_new_tokens": 6}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return model_dir, tmp_path / "params.yaml"


def test_generate_and_evaluate_registered_versions(registered_model, capsys, tmp_path, shared_data, client):
    """`python -m tasks generate` completes with the champion; `evaluate --model` scores any version."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.evaluate.cli import generate_main
    from tasks.evaluate.export import export_hf

    model_dir, params = registered_model
    assert generate_main(["--prompt", "It was a dark and stormy night", "--params", str(params)]) == 0
    printed = capsys.readouterr().out.strip()
    export_hf(model_dir, tmp_path / "direct")  # the same weights, exported and completed directly
    model, tok = AutoModelForCausalLM.from_pretrained(tmp_path / "direct"), AutoTokenizer.from_pretrained(tmp_path / "direct")
    ids = tok("It was a dark and stormy night", return_tensors="pt", add_special_tokens=False)["input_ids"]
    new = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
    assert printed == "It was a dark and stormy night" + tok.decode(new[0, ids.shape[1]:])
    with pytest.raises(SystemExit, match="not in the registry"):
        generate_main(["--prompt", "x", "--model", f"models:/{NAME}@no-such-alias", "--params", str(params)])
    with pytest.raises(SystemExit, match="must look like"):
        generate_main(["--prompt", "x", "--model", "runs:/abc/model", "--params", str(params)])

    # `python -m tasks evaluate --model models:/<name>@<version>` tags that version with its metrics
    from tasks.hashing import file_sha256
    from tasks.evaluate.cli import evaluate_model_main

    cfg = yaml.safe_load(params.read_text())
    cfg["evaluate"].update({"tasks": [{"name": "piqa", "data": "piqa_valid.jsonl", "labels": "piqa_valid-labels.lst",
                                       "limit": 4}], "prompts": ["Hello"], "sources": ["books"], "device": "cpu"})
    params.write_text(yaml.safe_dump(cfg))
    client.set_model_version_tag(NAME, "1", "checkpoint_sha256", file_sha256(model_dir / "model.safetensors"))
    client.delete_registered_model_alias(NAME, "champion")
    rc = evaluate_model_main(["--model", f"models:/{NAME}@1", "--params", str(params), "--in",
                              f"eval={shared_data / 'eval'}", "--out", str(tmp_path / "out")])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"model_version": 1, "champion_version": 1, "champion_moved": True}
    tags = client.get_model_version(NAME, "1").tags
    assert 0 <= float(tags["eval.piqa.acc_norm"]) <= 1 and "eval.run_id" in tags
    assert (tmp_path / "out" / "hf" / "model.safetensors").exists()
