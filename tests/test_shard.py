"""shard stage: the tinyfoundry-shards-v1 format, exact content, ratio, determinism, uint32 vocabularies."""
from __future__ import annotations

import base64
import gzip
import hashlib
import json

import numpy as np
import pytest

from tasks.config.shard import ShardConfig
from tasks.docs import iter_docs, write_docs
from tasks.shard import run_shard, token_dtype
from tasks.tokenizer import load_tokenizer
from tests.test_tokenizer_helpers import build_pipeline


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, shared_data):
    return build_pipeline(tmp_path_factory.mktemp("shard"), shared_data)


def read_split(folder, manifest, split):
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    files = [s["file"] for s in manifest["shards"] if s["split"] == split]
    return np.concatenate([np.fromfile(folder / f, dtype=dtype) for f in files])


def split_docs(tokens, eot):
    starts = np.flatnonzero(tokens == eot)
    assert len(starts) and starts[0] == 0
    return [tokens[a + 1:b] for a, b in zip(starts, list(starts[1:]) + [len(tokens)])]


def test_manifest_describes_the_files(pipeline):
    paths, stats = pipeline
    out = paths["shards"]
    m = json.loads((out / "manifest.json").read_text())
    tok_meta = json.loads((paths["tokenizer"] / "meta.json").read_text())
    assert m["format"] == "tinyfoundry-shards-v1" and m["dtype"] == "uint16"
    assert m["vocab_size"] == 1024 and m["eot_id"] == 1023 and m["tokenizer_sha256"] == tok_meta["sha256"]
    for split in ("train", "val"):
        shards = [s for s in m["shards"] if s["split"] == split]
        assert [s["file"] for s in shards] == [f"{split}_{i:04d}.bin" for i in range(len(shards))]
        assert all(s["tokens"] == 300_000 for s in shards[:-1]) and 0 < shards[-1]["tokens"] <= 300_000
        assert sum(s["tokens"] for s in shards) == m["splits"][split]["tokens"]
        for s in shards:
            data = (out / s["file"]).read_bytes()
            assert len(data) == 2 * s["tokens"] and hashlib.sha256(data).hexdigest() == s["sha256"]
            assert sum(s["tokens_per_source"].values()) == s["tokens"]
    assert len([s for s in m["shards"] if s["split"] == "train"]) >= 3
    assert m["splits"]["train"]["docs"] == stats["mix"]["train_docs"]


def test_shards_hold_the_mixed_documents_in_plan_order(pipeline):
    paths, _ = pipeline
    m = json.loads((paths["shards"] / "manifest.json").read_text())
    enc = load_tokenizer(paths["tokenizer"])
    docs = list(iter_docs(paths["mix"]))
    order = np.load(paths["mix"] / "order.npy")
    pieces = split_docs(read_split(paths["shards"], m, "train"), enc.eot_token)
    assert len(pieces) == len(order)
    for piece, i in zip(pieces, order):
        assert enc.decode(piece.tolist()) == docs[i]["text"]
    assert sum(len(docs[i]["text"].encode()) for i in order) == m["splits"]["train"]["bytes"]


def test_training_shards_have_the_7_to_3_ratio(pipeline):
    paths, stats = pipeline
    m = json.loads((paths["shards"] / "manifest.json").read_text())
    per_source = m["splits"]["train"]["tokens_per_source"]
    assert per_source == stats["mix"]["tokens_per_source"]  # the mix's counts are the shards' counts
    share = per_source["code"] / sum(per_source.values())
    assert abs(share - 0.306416) / 0.306416 <= 0.01


def test_validation_split_and_val_docs(pipeline):
    paths, _ = pipeline
    out = paths["shards"]
    m = json.loads((out / "manifest.json").read_text())
    enc = load_tokenizer(paths["tokenizer"])
    held_out = list(iter_docs(paths["mix"], "val"))
    assert held_out and m["splits"]["val"]["docs"] == len(held_out)
    pieces = split_docs(read_split(out, m, "val"), enc.eot_token)
    assert [enc.decode(p.tolist()) for p in pieces] == [d["text"] for d in held_out]
    texts = {}
    for d in held_out:
        texts.setdefault(d["metadata"]["source"], []).append(d["text"])
    assert sorted(p.name for p in (out / "val_docs").iterdir()) == sorted(f"{s}.jsonl.gz" for s in texts)
    for source, want in texts.items():
        with gzip.open(out / "val_docs" / f"{source}.jsonl.gz", "rt") as f:
            got = [json.loads(line) for line in f]
        assert [g["text"] for g in got] == want and all(g["metadata"]["source"] == source for g in got)
    train_ids = {d["id"] for d in iter_docs(paths["mix"])}
    assert not train_ids & {d["id"] for d in held_out}


def test_output_is_deterministic_across_thread_counts(pipeline, tmp_path):
    paths, _ = pipeline
    run_shard(ShardConfig(shard_tokens=300_000, threads=1, batch_docs=3),
              {"docs": paths["mix"], "tokenizer": paths["tokenizer"]}, tmp_path / "again")
    a = sorted(p.relative_to(paths["shards"]) for p in paths["shards"].rglob("*") if p.is_file())
    b = sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert a == b
    for rel in a:
        assert (paths["shards"] / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def test_plain_docs_folder_and_special_token_text(pipeline, tmp_path):
    paths, _ = pipeline
    docs = [{"text": "a tokenizer doc mentioning <|endoftext|> literally", "id": "a", "metadata": {"source": "code"}},
            {"text": "second document", "id": "b", "metadata": {"source": "web"}},
            {"text": "", "id": "empty", "metadata": {"source": "web"}}]
    write_docs(tmp_path / "in" / "docs" / "0.jsonl.gz", docs)
    stats = run_shard(ShardConfig(shard_tokens=7), {"docs": tmp_path / "in", "tokenizer": paths["tokenizer"]},
                      tmp_path / "out")
    enc = load_tokenizer(paths["tokenizer"])
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    tokens = read_split(tmp_path / "out", m, "train")
    assert np.count_nonzero(tokens == enc.eot_token) == 2  # the literal string is text, not an EOT
    assert [enc.decode(p.tolist()) for p in split_docs(tokens, enc.eot_token)] == [docs[0]["text"], docs[1]["text"]]
    assert stats["skipped"] == {"empty_text": 1} and m["splits"]["val"] == {"tokens": 0, "docs": 0, "bytes": 0,
                                                                           "tokens_per_source": {}}


def test_large_vocabulary_uses_uint32(tmp_path):
    """A vocabulary over 65,536 ids (256 bytes + all 65,536 byte pairs) must be stored as uint32."""
    ranks = {bytes([b]): b for b in range(256)}
    lower = set(range(ord("a"), ord("z") + 1))
    # pairs of lowercase letters get the last ranks, so that plain text needs ids above 65,535
    for a, b in sorted(((a, b) for a in range(256) for b in range(256)), key=lambda p: (set(p) <= lower, p)):
        ranks[bytes([a, b])] = len(ranks)
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.tiktoken").write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items()))
    meta = {"pattern": r"[\s\S]+", "bpe_ranks": len(ranks), "vocab_size": len(ranks) + 1,
            "special_tokens": {"<|endoftext|>": len(ranks)}, "sha256": "synthetic"}
    (tok / "meta.json").write_text(json.dumps(meta))
    text = "qrstuvwxyz" * 40 + " and 中文"
    write_docs(tmp_path / "in" / "docs" / "0.jsonl.gz", [{"text": text, "id": "x", "metadata": {"source": "web"}}])
    run_shard(ShardConfig(), {"docs": tmp_path / "in", "tokenizer": tok}, tmp_path / "out")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["dtype"] == "uint32" and m["eot_id"] == 65792
    tokens = read_split(tmp_path / "out", m, "train")
    assert tokens[0] == 65792 and tokens[1:].max() > 65535
    assert load_tokenizer(tok).decode(tokens[1:].tolist()) == text
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
