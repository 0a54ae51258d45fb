"""Champion selection on a real SQLite MLflow registry, and the commands on registered versions.

A version's metrics live on its run (tasks/model_registry.py); the evaluate stage's `update_champion` logs each
candidate's scores there and moves `champion` only to a strictly better version -- never away from a champion
that has no value for the champion metric."""
from __future__ import annotations

import json

import pytest
import yaml
from test_evaluate_fixtures import book_text, make_model_dir, train_tiktoken

from tasks.config.pipeline import TrackingConfig
from tasks.evaluate.registry import best_of, decide, update_champion
from tasks.model_registry import version_metrics

NAME = "tiny-llama"


@pytest.fixture
def client(mlflow_uri, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # artifacts (mlartifacts/) land in the test's folder
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_experiment("registry-test")
    c = MlflowClient(mlflow_uri)
    c.create_registered_model(NAME)
    return c


def _version(client, sha: str, step: int, name: str = NAME, metrics: dict | None = None) -> int:
    """A version with its own (checkpoint) run, as the train stage registers them."""
    import mlflow

    with mlflow.start_run(run_name=f"checkpoint-step-{step:06d}") as run:
        if metrics:
            mlflow.log_metrics(metrics)
    v = client.create_model_version(name, "/nonexistent", run_id=run.info.run_id,
                                    tags={"checkpoint_sha256": sha, "step": str(step)})
    return int(v.version)


def _stats(candidates: dict[int, tuple[int, float | None]], metric: str = "piqa/acc_norm", mode: str = "max") -> dict:
    """evaluate's stats for candidates {version: (step, value)}."""
    head, _, key = metric.partition("/")
    out = {}
    for v, (step, value) in candidates.items():
        entry = {"version": v, "step": step, "sha256": f"sha{v}", "final": False, "bpb": {"books": 2.0 + step / 1000}}
        entry.setdefault(head, {}).update({key: value} if value is not None else {})
        out[f"step_{step}"] = entry
    return {"champion": {"metric": metric, "mode": mode}, "candidates": out}


def _champion(client, name: str = NAME) -> int:
    return int(client.get_model_version_by_alias(name, "champion").version)


def test_decide_is_the_one_rule_for_the_alias():
    assert decide(None, None, 3, 0.5, "max") == (3, False, "no candidate has a value for the champion metric")
    assert decide(2, 0.4, None, None, "max")[:2] == (2, True)
    assert decide(2, 0.4, 2, 0.4, "max")[:2] == (2, False)
    assert decide(2, 0.6, 1, 0.5, "max")[:2] == (2, True)
    assert decide(2, 0.5, 1, 0.5, "max")[:2] == (1, False)  # equal is not better
    assert decide(2, 1.9, 1, 2.0, "min")[:2] == (2, True)
    # a champion without the metric keeps the alias against any version, however good
    champion, moved, why = decide(2, 0.99, 1, None, "max")
    assert (champion, moved) == (1, False) and "keeps the alias" in why
    # ties between candidates go to the later step
    assert best_of({4: (0.5, 100), 5: (0.5, 200), 6: (0.4, 300)}, "max") == 5
    assert best_of({4: (2.1, 100), 5: (2.0, 50)}, "min") == 5 and best_of({}, "max") is None


def test_candidates_get_metrics_and_the_champion_moves_only_to_a_better_one(client):
    tracking = TrackingConfig(model_name=NAME)
    v1, v2 = _version(client, "sha1", 100), _version(client, "sha2", 200)
    client.update_model_version(NAME, str(v1), description="# card\n\n## Evaluation\n\n_Not evaluated yet._\n\n## Use\n\nx")

    first = update_champion(tracking, None, _stats({v1: (100, 0.55), v2: (200, 0.50)}))
    assert first["champion_version"] == v1 == _champion(client) and first["champion_moved"] is True
    assert first["best_version"] == v1
    assert first["candidates"]["step_100"]["champion"] and not first["candidates"]["step_200"]["champion"]
    # each version's scores are metrics of its run (what Compare shows), the champion metric also a tag
    m1 = version_metrics(client, client.get_model_version(NAME, str(v1)))
    assert m1["piqa/acc_norm"] == 0.55 and m1["bpb/books"] == pytest.approx(2.1)
    assert client.get_model_version(NAME, str(v2)).tags["piqa/acc_norm"] == "0.5000"
    card = client.get_model_version(NAME, str(v1)).description
    assert "| piqa | 0.550 (acc_norm) | 0.595 | 0.733 |" in card and card.endswith("## Use\n\nx")

    # a later run: its best (0.52) does not beat the champion's 0.55; then one that does (0.60)
    v3, v4 = _version(client, "sha3", 100), _version(client, "sha4", 200)
    worse = update_champion(tracking, None, _stats({v3: (100, 0.52), v4: (200, 0.40)}))
    assert worse["champion_version"] == v1 and worse["champion_moved"] is False and _champion(client) == v1
    better = update_champion(tracking, None, _stats({v3: (100, 0.52), v4: (200, 0.60)}))
    assert better["champion_version"] == v4 == _champion(client) and better["champion_moved"]

    # re-evaluating the champion among the candidates: its fresh score counts (it dropped to 0.3, v3 leads)
    rescored = update_champion(tracking, None, _stats({v3: (100, 0.52), v4: (200, 0.30)}))
    assert rescored["champion_version"] == v3 == _champion(client)

    # unmeasured candidates do not compete; an unregistered checkpoint is a logged skip
    none = update_champion(tracking, None, _stats({v1: (100, None)}))
    assert none["champion_version"] == v3 and none["champion_moved"] is False
    stray = {"champion": {"metric": "piqa/acc_norm", "mode": "max"},
             "candidates": {"step_5": {"version": None, "step": 5, "sha256": "never-registered", "piqa": {"acc_norm": 1.0}}}}
    assert update_champion(tracking, None, stray)["champion_version"] == v3
    assert update_champion(TrackingConfig(model_name="nope"), None, _stats({v1: (100, 0.9)}))["champion_moved"] is False


def test_a_champion_without_the_metric_keeps_the_alias(client):
    """Issue 14's audit: after `champion_metric` changes, the champion lacks the new metric; no version, however
    good, takes the alias from it until it is scored."""
    tracking = TrackingConfig(model_name=NAME)
    v1, v2 = _version(client, "sha1", 100), _version(client, "sha2", 200)
    update_champion(tracking, None, _stats({v1: (100, 0.55)}))
    assert _champion(client) == v1
    result = update_champion(tracking, None, _stats({v2: (200, 1.9)}, metric="bpb/web", mode="min"))
    assert result["champion_version"] == v1 and result["champion_moved"] is False and _champion(client) == v1
    # once the champion is scored on the new metric, the comparison is fair again
    update_champion(tracking, None, _stats({v1: (100, 2.0)}, metric="bpb/web", mode="min"))
    assert _champion(client) == v1
    moved = update_champion(tracking, None, _stats({v2: (200, 1.9)}, metric="bpb/web", mode="min"))
    assert moved["champion_version"] == v2 == _champion(client)

    # versions evaluated before metrics existed carry `eval.<task>.<metric>` tags: still read
    other = "legacy"
    client.create_registered_model(other)
    old = client.create_model_version(other, "/x", tags={"checkpoint_sha256": "old", "eval.piqa.acc_norm": "0.6"})
    client.set_registered_model_alias(other, "champion", old.version)
    new = _version(client, "new", 100, name=other)
    result = update_champion(TrackingConfig(model_name=other), None, _stats({new: (100, 0.55)}))
    assert result["champion_version"] == int(old.version) and result["champion_moved"] is False


@pytest.fixture
def registered_model(client, tmp_path, shared_data):
    """A tiny model registered the way versions were before MLflow models (a plain artifact folder), champion."""
    import mlflow

    enc = train_tiktoken(book_text(shared_data))
    model_dir = make_model_dir(tmp_path / "model", enc, seed=5)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model_dir), "model")
    version = client.create_model_version(NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          tags={"checkpoint_sha256": "sha-of-tiny"}).version
    client.set_registered_model_alias(NAME, "champion", str(version))
    params = {"fetch": {**{s: {"uris": ["unused"]} for s in ("web", "books", "code", "reference")},
                        "eval": {"uris": [str(shared_data / "eval" / "*.jsonl"), str(shared_data / "eval" / "*.lst")]}},
              "tracking": {"model_name": NAME, "experiment": "registry-test"}, "evaluate": {"max_new_tokens": 6}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return model_dir, tmp_path / "params.yaml"


def test_generate_and_evaluate_registered_versions(registered_model, capsys, tmp_path, shared_data, client):
    """`python -m tasks generate` completes with the champion; `evaluate --model` scores any version and logs
    the scores as that version's metrics."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.evaluate.cli import evaluate_model_main, generate_main
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
    with pytest.raises(SystemExit, match="expected models:/"):
        generate_main(["--prompt", "x", "--model", "runs:/abc/model", "--params", str(params)])

    cfg = yaml.safe_load(params.read_text())
    cfg["evaluate"].update({"tasks": [{"name": "piqa", "data": "piqa_valid.jsonl", "labels": "piqa_valid-labels.lst",
                                       "limit": 4}], "prompts": ["Hello"], "sources": ["books"], "device": "cpu"})
    params.write_text(yaml.safe_dump(cfg))
    client.delete_registered_model_alias(NAME, "champion")
    rc = evaluate_model_main(["--model", f"models:/{NAME}@1", "--params", str(params), "--in",
                              f"eval={shared_data / 'eval'}", "--out", str(tmp_path / "out")])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"model_version": 1, "champion_version": 1, "champion_moved": True}
    metrics = version_metrics(client, client.get_model_version(NAME, "1"))
    assert 0 <= metrics["piqa/acc_norm"] <= 1 and metrics["piqa/acc_norm"] * 4 == round(metrics["piqa/acc_norm"] * 4)
    assert (tmp_path / "out" / "results.json").exists()
