"""Fixed-seed loss comparison (torchtitan's way of shipping training changes): every layout of the same math —
FSDP2 or a plain module on one rank, activation checkpointing, loader prefetch, async checkpoints — gives
bit-identical losses and weights, and checkpoints move between the plain and the FSDP2 layout."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tasks.train as train
from tasks.config.train import TrainConfig
from train_helpers import byte_lengths, byte_tokens, write_shards

MODEL = {"preset": "10m", "overrides": {"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "ffn_hidden": 128}}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    text = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, {i * 7 % 13} times.\n" for i in range(4000))
    tokens = byte_tokens([text[i:i + 3000] for i in range(0, len(text), 3000)])
    return write_shards(tmp_path_factory.mktemp("parity") / "shards",
                        {"train": np.array_split(tokens, 2), "val": [tokens[:6000]]})


def cfg(tmp_path, name, **kw) -> TrainConfig:
    # seq 64 × 4 × accum 2: gradient accumulation is part of what must stay exact
    base = dict(model=MODEL, seq_len=64, micro_batch_size=4, global_batch_tokens=512, max_steps=8, lr=1e-2,
                min_lr=1e-3, warmup_steps=2, eval_every=4, eval_batches=2, log_every=1, checkpoint_every=4,
                checkpoint_dir=str(tmp_path / name / "ckpt"), device="cpu", cpu_threads=1, seed=11)
    return TrainConfig(**{**base, **kw})


def curve(model_dir):
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in csv.DictReader((model_dir / "train_curve.csv").open())]


def run(tmp_path, shards, name, monkeypatch, **kw):
    monkeypatch.setattr(train, "load_token_bytes", lambda _d: byte_lengths())
    stats = train.run_train(cfg(tmp_path, name, **kw), {"shards": shards}, tmp_path / name / "model")
    return stats, curve(tmp_path / name / "model"), load_file(tmp_path / name / "model" / "model.safetensors")


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_every_one_rank_layout_gives_identical_losses_and_weights(tmp_path, shards, monkeypatch):
    # the path before this change: FSDP2 at world size 1, synchronous loading and saving
    ref_stats, ref_curve, ref_w = run(tmp_path, shards, "fsdp", monkeypatch, fsdp="always", prefetch=0)
    assert len(ref_curve) == 8 and ref_stats["step"] == 8
    variants = {"plain": {},  # the default now: unsharded module, prefetch 2
                "plain+ac+async": {"activation_checkpointing": True, "async_checkpoint": True},
                "fsdp+ac+prefetch": {"fsdp": "always", "activation_checkpointing": True, "prefetch": 3}}
    for name, kw in variants.items():
        stats, got_curve, got_w = run(tmp_path, shards, name, monkeypatch, **kw)
        assert got_curve == ref_curve, name  # the logged strings: every step's train and val loss, bit for bit
        assert_same_weights(got_w, ref_w)
        assert stats["fingerprint"] == ref_stats["fingerprint"]  # layout options do not change what is trained
        steps = sorted(p.name for p in (tmp_path / name / "ckpt" / stats["fingerprint"]).glob("step_*"))
        assert steps == ["step_000004", "step_000008"], (name, steps)  # async saves published too


@pytest.mark.parametrize("first,then", [("auto", "always"), ("always", "auto")], ids=["plain→fsdp", "fsdp→plain"])
def test_checkpoints_resume_across_the_plain_and_fsdp_layouts(tmp_path, shards, monkeypatch, first, then):
    _, ref_curve, ref_w = run(tmp_path, shards, "ref", monkeypatch, fsdp=first)
    fp_dir = next((tmp_path / "ref" / "ckpt").iterdir())
    shutil.rmtree(fp_dir / "step_000008")  # as if killed after the step-4 checkpoint
    stats, got_curve, got_w = run(tmp_path, shards, "ref", monkeypatch, fsdp=then)
    assert stats["resumed_from_step"] == 4
    assert got_curve == ref_curve
    assert_same_weights(got_w, ref_w)
