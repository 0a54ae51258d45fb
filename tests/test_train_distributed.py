"""The GPU path's parts on CPU, 2 ranks under torchrun (gloo), in one launch: FSDP2's bf16 MixedPrecisionPolicy
(bf16 compute, fp32 gradients and master weights), and activation checkpointing + async DCP saves + loader
prefetch giving the same losses as the plain sharded run; that run agrees with one rank (same global batch)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tasks.train as train
from tasks.config.train import TrainConfig
from train_helpers import byte_lengths, byte_tokens, free_port, losses, torchrun, write_shards

MODEL = {"preset": "10m", "overrides": {"n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1, "ffn_hidden": 64}}


def cfg(tmp_path, name: str, **kw) -> dict:
    return {"model": MODEL, "seq_len": 32, "micro_batch_size": 2, "global_batch_tokens": 256, "max_steps": 8,
            "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 2, "eval_every": 4, "eval_batches": 2, "log_every": 1,
            "checkpoint_every": 4, "checkpoint_dir": str(tmp_path / name / "ckpt"), "device": "cpu", "seed": 3, **kw}


@pytest.mark.slow
def test_two_rank_gpu_path_parts_on_cpu(tmp_path, monkeypatch):
    text = "".join(f"row {i}: pack my box with five dozen liquor jugs {i * 5 % 11}\n" for i in range(3000))
    tokens = byte_tokens([text[i:i + 4000] for i in range(0, len(text), 4000)])
    shards = write_shards(tmp_path / "shards", {"train": np.array_split(tokens, 2), "val": [tokens[:4000]]})
    runs = {"plain": cfg(tmp_path, "plain", prefetch=0),
            "options": cfg(tmp_path, "options", activation_checkpointing=True, async_checkpoint=True, prefetch=3),
            "bf16": cfg(tmp_path, "bf16", dtype="bfloat16")}
    spec = [{"probe": "mixed_precision", "out": str(tmp_path / "probe.json")}]
    spec += [{"cfg": c, "shards": str(shards), "out": str(tmp_path / name / "model")} for name, c in runs.items()]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = torchrun(tmp_path / "spec.json", free_port())
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]

    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["fp32"] == {**probe["fp32"], "fsdp": True, "autocast": "None", "weight": "torch.float32",
                             "activation": "torch.float32", "grad": "torch.float32", "master": "torch.float32"}
    # bf16 all-gathered weights and compute, fp32 sharded master weights and gradients, no autocast
    assert probe["bf16"] == {**probe["bf16"], "fsdp": True, "autocast": "None", "weight": "torch.bfloat16",
                             "activation": "torch.bfloat16", "grad": "torch.float32", "master": "torch.float32",
                             "grad_is_sharded": True}
    assert abs(probe["bf16"]["loss"] - probe["fp32"]["loss"]) < 0.02 * probe["fp32"]["loss"]

    plain = losses(tmp_path / "plain" / "model")
    assert len(plain) == 8 and losses(tmp_path / "options" / "model") == plain  # bit for bit
    stats = {n: json.loads((tmp_path / n / "model.stats.json").read_text()) for n in runs}
    assert stats["options"]["fingerprint"] == stats["plain"]["fingerprint"]
    ckpts = sorted(p.name for p in (tmp_path / "options" / "ckpt" / stats["options"]["fingerprint"]).glob("step_*"))
    assert ckpts == ["step_000004", "step_000008"]  # async saves published, no .tmp_ left
    # bf16 compute trains the same model: close to fp32, clearly learning
    bf16 = losses(tmp_path / "bf16" / "model")
    for (_, a, _), (_, b, _) in zip(plain, bf16):
        assert abs(float(a) - float(b)) < 0.05 * float(a)
    assert float(bf16[-1][1]) < float(bf16[0][1]) - 0.5

    # one unsharded rank with the same global batch (accumulation 2 instead of 2 ranks): same training losses up
    # to the order of floating-point sums (validation differs: eval_batches counts micro-batches per rank)
    monkeypatch.setattr(train, "load_token_bytes", lambda _d: byte_lengths())
    one = train.run_train(TrainConfig(**cfg(tmp_path, "one")), {"shards": shards}, tmp_path / "one" / "model")
    assert one["world_size"] == 1
    for (_, a, _), (_, b, _) in zip(plain, losses(tmp_path / "one" / "model")):
        assert math.isclose(float(a), float(b), rel_tol=1e-4)
