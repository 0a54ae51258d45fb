"""tasks/train: schedule, non-finite handling, bits per byte, a real training run and its output, config."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tasks.train as train
from models import Llama, ModelConfig
from tasks.config import ConfigError, load_config, parse_config, read_yaml
from tasks.config.train import TrainConfig
from tasks.train.loader import TokenLoader
from tasks.train.trainer import NonFiniteError, Trainer, lr_at, token_bytes_tensor
from train_helpers import VOCAB, book_shards, byte_lengths, write_shards

TINY = {"preset": "10m", "overrides": {"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "ffn_hidden": 192}}


def tiny_cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model=TINY, seq_len=64, micro_batch_size=8, global_batch_tokens=512, max_steps=30, lr=1e-2,
                min_lr=1e-3, warmup_steps=3, eval_every=15, eval_batches=4, log_every=5, checkpoint_every=15,
                checkpoint_dir=str(tmp_path / "ckpt"), device="cpu")
    return TrainConfig(**{**base, **kw})


def test_lr_schedule_warmup_cosine_floor():
    lrs = [lr_at(s, 4e-4, 4e-5, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(4e-5) and lrs[9] == pytest.approx(4e-4)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx((4e-4 + 4e-5) / 2)  # cosine midpoint
    assert lr_at(100, 4e-4, 4e-5, 10, 100) == 4e-5 and min(lrs) >= 4e-5


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return Llama(ModelConfig(vocab_size=32, n_layer=1, n_head=2, n_kv_head=1, d_model=16, ffn_hidden=32,
                             max_seq_len=16))


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nonfinite_loss_is_caught_before_the_optimizer_step(policy):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    trainer = Trainer(model, opt, grad_clip=1.0, nonfinite=policy, amp_dtype=None, device=torch.device("cpu"))
    x = torch.randint(0, 32, (2, 8))
    ok = trainer.step([(x, x)], 1e-2, 0)
    assert not ok.skipped and math.isfinite(ok.loss)
    with torch.no_grad():
        model.layers[0].feed_forward.w1.weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if policy == "stop":
        with pytest.raises(NonFiniteError, match="step 1: loss nan .*not finite; stopping"):
            trainer.step([(x, x)], 1e-2, 1)
        return
    res = trainer.step([(x, x)], 1e-2, 1)
    assert res.skipped and trainer.skipped_steps == 1 and math.isnan(res.loss)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).any() for k in before)
    assert torch.equal(before["tok_embeddings.weight"], after["tok_embeddings.weight"])  # no update went through


def test_bits_per_byte_uses_target_bytes_and_drops_specials(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 32, 2000)
    folder = write_shards(tmp_path / "s", {"val": [tokens]}, vocab_size=32, eot_id=31)
    model = tiny_model()
    trainer = Trainer(model, None, grad_clip=1.0, nonfinite="skip", amp_dtype=None, device=torch.device("cpu"))
    loader = TokenLoader(folder, "val", 4, 16, shuffle=False)
    ones = np.ones(32, dtype=np.int64)
    one = trainer.evaluate(loader, 5, token_bytes_tensor(ones, 32, "cpu"))
    assert one["val_bpb"] == pytest.approx(one["val_loss"] / math.log(2))  # 1 byte per token
    two = trainer.evaluate(loader, 5, token_bytes_tensor(2 * ones, 32, "cpu"))
    assert two["val_bpb"] == pytest.approx(one["val_bpb"] / 2)
    special = ones.copy()
    special[31] = 0
    y = torch.cat([y for _, (_, y) in zip(range(5), TokenLoader(folder, "val", 4, 16, shuffle=False))])
    _, per_tok = model(torch.cat([x for _, (x, _) in zip(range(5), TokenLoader(folder, "val", 4, 16, shuffle=False))]),
                       y, reduction="none")
    mask = y != 31
    expected = per_tok[mask].double().sum().item() / (math.log(2) * mask.sum().item())
    got = trainer.evaluate(loader, 5, token_bytes_tensor(special, 32, "cpu"))["val_bpb"]
    assert got == pytest.approx(expected, rel=1e-6)
    assert trainer.evaluate(loader, 5, None).keys() == {"val_loss", "val_tokens"}


def test_trains_on_real_books_and_writes_a_loadable_model(tmp_path, shared_data, monkeypatch):
    monkeypatch.setattr(train, "load_token_bytes", lambda _d: byte_lengths())
    shards = book_shards(tmp_path / "shards", shared_data, max_chars=200_000)
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.json").write_text("{}")
    (tok_dir / "meta.json").write_text(json.dumps({"kind": "test tokenizer"}))  # same name as our meta.json
    cfg = tiny_cfg(tmp_path)
    stats = train.run_train(cfg, {"shards": shards, "tokenizer": tok_dir}, tmp_path / "model")
    assert stats["step"] == 30 and stats["tokens_seen"] == 30 * 512 and stats["skipped_steps"] == 0
    # clearly learns: far below the uniform ln(257) ≈ 5.55 nats, and bpb = loss / ln 2 for byte tokens
    assert stats["final_val_loss"] < math.log(VOCAB) - 1.5
    assert stats["val_bpb"] == pytest.approx(stats["final_val_loss"] / math.log(2), rel=0.02)
    out = tmp_path / "model"
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "meta.json", "train_curve.csv",
                                               "tokenizer.json", "tokenizer"}
    assert json.loads((out / "tokenizer" / "meta.json").read_text()) == {"kind": "test tokenizer"}
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "10m" and config["vocab_size"] == VOCAB and config["n_layer"] == 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["step"] == 30 and meta["tokenizer_sha256"] == "byte-level-test" and meta["params"]["lr"] == 1e-2
    rows = list(csv.DictReader((out / "train_curve.csv").open()))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert rows[2]["val_loss"] and not rows[0]["val_loss"]
    assert float(rows[-1]["val_loss"]) < float(rows[2]["val_loss"])  # still improving at the end
    # the consolidated weights reproduce the final validation loss outside FSDP
    model = Llama(ModelConfig(**{k: v for k, v in config.items() if k != "preset"}))
    model.load_state_dict(load_file(out / "model.safetensors"))
    trainer = Trainer(model, None, grad_clip=1.0, nonfinite="skip", amp_dtype=None, device=torch.device("cpu"))
    again = trainer.evaluate(TokenLoader(shards, "val", 8, 64, shuffle=False), 4, None)
    assert again["val_loss"] == pytest.approx(stats["final_val_loss"], rel=1e-5)
    # checkpoints: last 2 kept beside the run's resume key, and a rerun with the same code, inputs and params
    # resumes at the end instead of retraining
    ckpts = sorted(p.name for p in (tmp_path / "ckpt" / stats["fingerprint"]).iterdir())
    assert ckpts == ["key.json", "step_000015", "step_000030"]
    again = train.run_train(cfg, {"shards": shards, "tokenizer": tok_dir}, tmp_path / "model2")
    assert again["resumed_from_step"] == 30 and again["final_val_loss"] == pytest.approx(stats["final_val_loss"])
    other = train.run_train(tiny_cfg(tmp_path, max_steps=2, warmup_steps=1, eval_every=1), {"shards": shards},
                            tmp_path / "m3")
    assert other["fingerprint"] != stats["fingerprint"] and other["resumed_from_step"] == 0


def test_runtime_batch_and_length_checks(tmp_path):
    shards = write_shards(tmp_path / "s", {"train": [np.arange(5000) % 200]}, vocab_size=200, eot_id=199)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
        train.run_train(tiny_cfg(tmp_path, seq_len=1024, global_batch_tokens=8192), {"shards": shards}, tmp_path / "o")
    with pytest.raises(ValueError, match="needs --in shards"):
        train.run_train(tiny_cfg(tmp_path), {}, tmp_path / "o")


def test_params_yaml_train_section_is_valid_and_errors_name_the_key():
    cfg = load_config("params.yaml").train
    assert cfg.global_batch_tokens % (cfg.seq_len * cfg.micro_batch_size) == 0
    data = read_yaml("params.yaml")
    data["train"] = {**data["train"], "min_lr": 1.0}
    with pytest.raises(ConfigError, match=r"train.*min_lr .* must not exceed lr"):
        parse_config(data)
    data["train"] = {**read_yaml("params.yaml")["train"], "global_batch_tokens": 1000}
    with pytest.raises(ConfigError, match="train.global_batch_tokens .* multiple of seq_len × micro_batch_size"):
        parse_config(data)
    data["train"] = {**read_yaml("params.yaml")["train"], "nonfinite": "ignore"}
    with pytest.raises(ConfigError, match="train.nonfinite"):
        parse_config(data)
