"""train.init_from (continued pretraining): model folders, DCP checkpoints, registered versions and Hugging Face
Llama folders load the exact weights; shapes are checked when the config loads, tokenizers before training;
the lineage reaches meta.json, the run fingerprint, the MLflow run and the registered version."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_evaluate_fixtures import book_text, make_model_dir, train_tiktoken

import tasks.train as train
from models import Llama, build_config
from tasks.config import ConfigError, parse_config, read_yaml
from tasks.config.pipeline import TrackingConfig
from tasks.config.train import TrainConfig
from tasks.hashing import file_sha256
from tasks.train.init import InitError, inspect_local, load_weights, resolve
from tasks.train.registry import register_checkpoints
from train_helpers import VOCAB, book_shards, byte_lengths, byte_tokenizer_dir, write_shards

SHAPE = {"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "ffn_hidden": 128}


def cfg(tmp_path, name: str, **kw) -> TrainConfig:
    base = dict(model={"preset": "10m", "overrides": SHAPE}, seq_len=64, micro_batch_size=8, global_batch_tokens=512,
                max_steps=10, lr=1e-2, min_lr=1e-3, warmup_steps=2, eval_every=5, eval_batches=2, log_every=1,
                checkpoint_every=5, checkpoint_dir=str(tmp_path / name / "ckpt"), device="cpu", cpu_threads=1)
    return TrainConfig(**{**base, **kw})


def first_loss(model_dir) -> float:
    return float(next(csv.DictReader((model_dir / "train_curve.csv").open()))["train_loss"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """A short byte-level run on real books: its output folder and checkpoints are init sources."""
    root = tmp_path_factory.mktemp("init")
    shards = book_shards(root / "shards", shared_data, max_chars=150_000)
    train.load_token_bytes, saved = (lambda _d: byte_lengths()), train.load_token_bytes
    try:
        stats = train.run_train(cfg(root, "src"), {"shards": shards, "tokenizer": byte_tokenizer_dir(root / "tok")},
                                root / "src" / "model")
    finally:
        train.load_token_bytes = saved
    return {"root": root, "shards": shards, "tokenizer": root / "tok", "model": root / "src" / "model", "stats": stats,
            "ckpt": root / "src" / "ckpt" / stats["fingerprint"]}


def fresh() -> Llama:
    torch.manual_seed(123)
    return Llama(build_config("10m", VOCAB, **SHAPE))


@pytest.mark.parametrize("which", ["model", "checkpoint step", "checkpoint run folder"])
def test_local_sources_load_the_exact_final_weights(trained, which):
    path = {"model": trained["model"], "checkpoint step": trained["ckpt"] / "step_000010",
            "checkpoint run folder": trained["ckpt"]}[which]
    source = resolve(str(path), trained["root"] / "dl")
    assert source.kind == ("model" if which == "model" else "checkpoint")
    assert source.tokenizer_sha256 == "byte-level-test" and len(source.sha256) == 64
    model = fresh()
    load_weights(source, model)
    want = load_file(trained["model"] / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], want[k]) for k in want)


def test_continued_pretraining_records_lineage_and_keys_resume_on_the_weights(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "load_token_bytes", lambda _d: byte_lengths())
    src = trained["model"]
    scratch = train.run_train(cfg(tmp_path, "scratch", max_steps=2), {"shards": trained["shards"]}, tmp_path / "s")
    cont = train.run_train(cfg(tmp_path, "cont", max_steps=2, init_from=str(src)), {"shards": trained["shards"]},
                           tmp_path / "c")
    # starts where the source ended, far below a random init (ln 257 = 5.55 nats)
    assert first_loss(tmp_path / "c") < trained["stats"]["final_train_loss"] + 0.3 < first_loss(tmp_path / "s")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["init_from"] == {"uri": str(src), "kind": "model", "sha256": file_sha256(src / "model.safetensors")}
    assert cont["fingerprint"] != scratch["fingerprint"]
    # same path, other weights: a new fingerprint, so the old run's checkpoints are not resumed
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    a = train.run_train(cfg(tmp_path, "k", max_steps=1, warmup_steps=1, init_from=str(copy)), {"shards": trained["shards"]},
                        tmp_path / "k1")
    state = load_file(copy / "model.safetensors")
    state["norm.weight"] = state["norm.weight"] * 1.5
    save_file(state, copy / "model.safetensors")
    b = train.run_train(cfg(tmp_path, "k", max_steps=1, warmup_steps=1, init_from=str(copy)), {"shards": trained["shards"]},
                        tmp_path / "k2")
    assert a["fingerprint"] != b["fingerprint"] and b["resumed_from_step"] == 0


def test_registry_source_is_pinned_to_a_version_and_tagged(trained, tmp_path, monkeypatch, mlflow_uri):
    from tasks.tracking import setup

    monkeypatch.setattr(train, "load_token_bytes", lambda _d: byte_lengths())
    mlflow = setup("init-test", root=tmp_path)
    tracking = TrackingConfig(model_name="tiny-init")
    with mlflow.start_run():
        first = register_checkpoints(tracking, trained["model"], {"step": 10})["registered_version"]
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("tiny-init", "champion", str(first))
    with mlflow.start_run() as run:
        train.run_train(cfg(tmp_path, "reg", max_steps=2, init_from="models:/tiny-init@champion"),
                        {"shards": trained["shards"], "tokenizer": trained["tokenizer"]}, tmp_path / "out")
        second = register_checkpoints(tracking, tmp_path / "out", {"step": 2})["registered_version"]
    sha = file_sha256(trained["model"] / "model.safetensors")
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["init_from.uri"] == "models:/tiny-init@champion" and tags["init_from.version"] == str(first)
    assert tags["init_from.sha256"] == sha and tags["init_from.kind"] == "registry"
    v2 = client.get_model_version("tiny-init", str(second))
    assert v2.tags["init_from.version"] == str(first) and v2.tags["init_from.sha256"] == sha
    assert v2.tags["init_from.name"] == "tiny-init"
    assert first_loss(tmp_path / "out") < trained["stats"]["final_train_loss"] + 0.3
    # a registered version of another shape fails before the first step, naming the field
    with pytest.raises(InitError, match=r"n_layer 2 in the source vs 3 configured"):
        train.run_train(cfg(tmp_path, "bad", init_from="models:/tiny-init/1",
                            model={"preset": "10m", "overrides": {**SHAPE, "n_layer": 3}}),
                        {"shards": trained["shards"]}, tmp_path / "bad")
    assert not list((tmp_path / "bad" / "ckpt").glob("*/step_*"))


def test_shapes_are_checked_when_the_config_loads(trained):
    data = read_yaml("params.yaml")
    data["train"] = {**data["train"], "init_from": str(trained["model"]),
                     "model": {"preset": "10m", "overrides": {**SHAPE, "d_model": 128, "n_kv_head": 4}}}
    with pytest.raises(ConfigError, match=r"train .*init_from: .*n_kv_head 2 in the source vs 4 configured; "
                                          r"d_model 64 in the source vs 128 configured"):
        parse_config(data)
    data["train"]["model"] = {"preset": "10m", "overrides": SHAPE}
    assert parse_config(data).train.init_from == str(trained["model"])  # vocab is checked against the shards later
    for bad, msg in ((str(trained["root"] / "nope"), "does not exist"), ("models:/x@", "must look like models:/"),
                     (str(trained["root"]), "is not a model folder")):
        data["train"]["init_from"] = bad
        with pytest.raises(ConfigError, match=msg):
            parse_config(data)


def test_tokenizer_mismatch_stops_before_training(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "load_token_bytes", lambda _d: byte_lengths())
    tokens = np.fromfile(trained["shards"] / "train_0000.bin", dtype="<u2")
    other = write_shards(tmp_path / "other", {"train": [tokens]}, tokenizer_sha256="another-tokenizer")
    with pytest.raises(InitError, match=r"tokenizer mismatch: .* was trained with tokenizer byte-level-t.*, the "
                                        r"shards were encoded with another-toke"):
        train.run_train(cfg(tmp_path, "tok", init_from=str(trained["model"])), {"shards": other}, tmp_path / "o")


def our_tokenizer_dir(folder, enc):
    """`enc` saved as the tokenizer stage saves it (ranks + meta.json with its sha256)."""
    from tasks.tokenizer import META_FILE, RANKS_FILE, meta_sha256, write_ranks

    folder.mkdir(parents=True)
    rank_bytes = write_ranks(enc._mergeable_ranks, folder / RANKS_FILE)
    meta = {"pattern": enc._pat_str, "bpe_ranks": len(enc._mergeable_ranks), "vocab_size": enc.n_vocab,
            "special_tokens": dict(enc._special_tokens)}
    meta["sha256"] = meta_sha256(rank_bytes, meta)
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder, meta["sha256"]


def test_hugging_face_llama_folder(tmp_path, shared_data, monkeypatch):
    from tasks.evaluate.export import export_hf

    text = book_text(shared_data, max_chars=200_000)
    enc = train_tiktoken(text)  # vocab 512
    tok_dir, sha = our_tokenizer_dir(tmp_path / "tok", enc)
    ids = [enc.eot_token] + enc.encode_ordinary(text[:120_000])
    shards = write_shards(tmp_path / "shards", {"train": [np.array(ids)], "val": [np.array(ids[:6000])]},
                          vocab_size=enc.n_vocab, eot_id=enc.eot_token, tokenizer_sha256=sha)
    src = make_model_dir(tmp_path / "src", enc, seed=7, **{k: SHAPE[k] for k in ("n_layer", "d_model", "n_head",
                                                                                 "n_kv_head")})
    export_hf(src, tmp_path / "hf")
    source = inspect_local(str(tmp_path / "hf"))
    assert source.kind == "hf" and source.model_config["n_kv_head"] == 2 and source.model_config["vocab_size"] == 512
    model = Llama(build_config("10m", 512, **SHAPE, max_seq_len=256))
    load_weights(source, model)
    want = load_file(src / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], want[k]) for k in want)

    monkeypatch.setattr(train, "load_token_bytes", lambda _d: None)
    stats = train.run_train(cfg(tmp_path, "hf", max_steps=2, init_from=str(tmp_path / "hf")),
                            {"shards": shards, "tokenizer": tok_dir}, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["init_from"]["kind"] == "hf" and stats["step"] == 2 and math.isfinite(stats["final_train_loss"])
    # the same weights with a tokenizer trained on other text: ids mean other tokens
    other = train_tiktoken(text[::-1])
    src2 = make_model_dir(tmp_path / "src2", other, seed=7, **{k: SHAPE[k] for k in ("n_layer", "d_model", "n_head",
                                                                                     "n_kv_head")})
    export_hf(src2, tmp_path / "hf2")
    with pytest.raises(InitError, match=r"tokenizer mismatch: .*tokenizer.json has 512 tokens, the shards' "
                                        r"tokenizer 512; \d+ \(token, id\) pairs differ"):
        train.run_train(cfg(tmp_path, "hf2", init_from=str(tmp_path / "hf2")),
                        {"shards": shards, "tokenizer": tok_dir}, tmp_path / "out2")
