"""train.doc_mask: attention stays inside each document of a packed window (the EOT token starts a document)."""
from __future__ import annotations

import csv
import math

import numpy as np
import torch

import tasks.train as train
from models import Llama, ModelConfig, document_ids
from tasks.config.train import TrainConfig
from train_helpers import EOT, VOCAB, book_texts, byte_lengths, byte_tokens, write_shards


def model(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(ModelConfig(vocab_size=VOCAB, n_layer=2, n_head=4, n_kv_head=2, d_model=64, ffn_hidden=128,
                             max_seq_len=256)).eval()


def test_document_ids_start_a_document_at_each_eot():
    x = torch.tensor([[EOT, 5, 6, EOT, 7, EOT], [1, 2, EOT, 3, 4, 5]])
    assert document_ids(x, EOT).tolist() == [[1, 1, 1, 2, 2, 3], [0, 0, 1, 1, 1, 1]]


@torch.no_grad()
def test_a_packed_document_computes_as_if_it_were_alone(shared_data):
    text = book_texts(shared_data, n_books=2, max_chars=20_000)
    a, b = (torch.from_numpy(byte_tokens([t[5000:5000 + n]]).astype(np.int64)) for t, n in zip(text, (90, 120)))
    packed = torch.cat([a, b])[None]  # (1, 212): EOT doc_a EOT doc_b
    m = model()
    masked = m(packed, doc_ids=document_ids(packed, EOT))
    alone_b, alone_a = m(b[None]), m(a[None])
    assert torch.allclose(masked[0, len(a):], alone_b[0], atol=1e-5)  # RoPE is relative: position shift is harmless
    assert torch.allclose(masked[0, :len(a)], alone_a[0], atol=1e-5)
    unmasked = m(packed)
    assert (unmasked[0, len(a):] - alone_b[0]).abs().max() > 1e-2  # without the mask doc b sees doc a


def shards_of(folder, docs: list[str]):
    tokens = byte_tokens(docs)
    return write_shards(folder, {"train": [tokens], "val": [tokens[: len(tokens) // 4]]})


def run(tmp_path, shards, name, monkeypatch, doc_mask: bool) -> list[tuple[float, float | None]]:
    monkeypatch.setattr(train, "load_token_bytes", lambda _d: byte_lengths())
    cfg = TrainConfig(model={"preset": "10m", "overrides": {"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2,
                                                            "ffn_hidden": 128}},
                      seq_len=64, micro_batch_size=4, global_batch_tokens=256, max_steps=6, lr=1e-2, min_lr=1e-3,
                      warmup_steps=1, eval_every=3, eval_batches=2, log_every=1, checkpoint_every=6, device="cpu",
                      checkpoint_dir=str(tmp_path / name / "ckpt"), doc_mask=doc_mask, cpu_threads=1)
    train.run_train(cfg, {"shards": shards}, tmp_path / name / "model")
    rows = csv.DictReader((tmp_path / name / "model" / "train_curve.csv").open())
    return [(float(r["train_loss"]), float(r["val_loss"]) if r["val_loss"] else None) for r in rows]


def close(a, b, rel):
    return all(math.isclose(x, y, rel_tol=rel) for (x, vx), (y, vy) in zip(a, b)) and \
        all((vx is None and vy is None) or math.isclose(vx, vy, rel_tol=rel) for (_, vx), (_, vy) in zip(a, b))


def test_masking_leaves_single_document_windows_alone_and_changes_packed_ones(tmp_path, shared_data, monkeypatch):
    book = book_texts(shared_data, n_books=1, max_chars=120_000)[0]
    # one long document: every window lies inside it (its EOT can only be a window's first token)
    single = shards_of(tmp_path / "single", [book])
    assert close(run(tmp_path, single, "s-off", monkeypatch, False), run(tmp_path, single, "s-on", monkeypatch, True),
                 1e-5)
    # paragraphs as documents (~60 bytes): most windows hold several, so masking changes what is computed
    paragraphs = [p for p in book.split("\n\n") if p.strip()][:1500]
    packed = shards_of(tmp_path / "packed", paragraphs)
    off, on = run(tmp_path, packed, "p-off", monkeypatch, False), run(tmp_path, packed, "p-on", monkeypatch, True)
    assert not close(off, on, 1e-3)
    assert all(math.isfinite(x) for x, _ in on) and on[-1][0] < on[0][0]  # still learns with the mask
