"""tokenizer stage: rustbpe training on the shared data, tiktoken rank-file format, HF export identity."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import tiktoken
import tiktoken.load
from pydantic import ValidationError

from tasks.config.tokenizer import TokenizerConfig
from tasks.docs import iter_docs, read_docs
from tasks.tokenizer import load_tokenizer, run_tokenizer, token_byte_lengths
from tests.test_tokenizer_helpers import corrupt_docs_folder, make_corpus, small_tokenizer_config

TRICKY = [
    "Hello world! It's 2024; numbers 1234567 and 3.14159.",
    "  leading spaces,\ttabs,\r\nCRLF lines\n\n\nand trailing   ",
    "Ünïcödé — “quotes”, emoji 🤖🚀, 中文字符, русский текст, العربية",
    "def f(x):\n    return {'a': [x ** 2 for x in range(10)]}  # comment\n",
    "don't you'll we've THEY'RE I'M",
    "\x00\x01 control bytes \x7f and a lone surrogate-free string",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("tok")
    corpus = make_corpus(root / "filter", shared_data)
    # a vocabulary large enough for long merge chains: transformers' own converter went wrong at this size
    cfg = small_tokenizer_config(vocab_size=4096)
    stats = run_tokenizer(cfg, {"docs": corpus}, root / "tokenizer")
    return corpus, root / "tokenizer", cfg, stats


def test_files_follow_the_documented_format(trained, monkeypatch):
    _, out, cfg, stats = trained
    for name in ("tokenizer.tiktoken", "meta.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "meta.json").read_text())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's own reader, uncached
    ranks = tiktoken.load.load_tiktoken_bpe(str(out / "tokenizer.tiktoken"))
    assert sorted(ranks.values()) == list(range(len(ranks)))
    assert all(ranks[bytes([b])] == b for b in range(256))
    assert meta["vocab_size"] == cfg.vocab_size == len(ranks) + len(cfg.special_tokens)
    assert meta["special_tokens"] == {"<|endoftext|>": len(ranks)}
    body = {k: v for k, v in meta.items() if k != "sha256"}
    expected = hashlib.sha256((out / "tokenizer.tiktoken").read_bytes() + json.dumps(body, sort_keys=True).encode())
    assert meta["sha256"] == expected.hexdigest() == stats["sha256"]
    enc = load_tokenizer(out)
    assert enc.n_vocab == cfg.vocab_size and enc.eot_token == len(ranks)
    assert enc.encode_single_token("<|endoftext|>") == enc.eot_token


def test_hf_export_encodes_shared_data_identically(trained, shared_data):
    from transformers import AutoTokenizer

    corpus, out, _, stats = trained
    enc = load_tokenizer(out)
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.eos_token_id == enc.eot_token and len(hf) == enc.n_vocab
    seen: Counter = Counter()
    for doc in iter_docs(corpus):
        text = doc["text"][:40_000]  # every document, a slice of the long books (HF encoding is slow)
        assert hf.encode(text, add_special_tokens=False) == enc.encode_ordinary(text), doc["id"]
        seen[doc["metadata"]["source"]] += 1
    for text in TRICKY:
        ids = enc.encode_ordinary(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == enc.decode(ids) == text
    piqa = shared_data / "eval" / "piqa_valid.jsonl"
    for row in map(json.loads, piqa.read_text().splitlines()[:300]):  # real benchmark text, as lm-eval feeds it
        for text in (row["goal"], " " + row["sol1"], " " + row["sol2"]):
            assert hf.encode(text, add_special_tokens=False) == enc.encode_ordinary(text), text
    # special tokens written in text: HF treats them as specials, like tiktoken's allowed_special="all"
    text = "end of doc<|endoftext|>next doc"
    assert hf.encode(text, add_special_tokens=False) == enc.encode(text, allowed_special="all")
    assert enc.eot_token in enc.encode(text, allowed_special="all")
    assert set(seen) == {"web", "books", "code"}
    assert stats["hf_check"]["docs"] > 0 and stats["hf_check"]["mismatched_docs"] == 0


def test_token_byte_lengths_sum_to_text_bytes(trained):
    corpus, out, _, _ = trained
    enc = load_tokenizer(out)
    lengths = token_byte_lengths(enc)
    assert lengths.shape == (enc.n_vocab,) and lengths[enc.eot_token] == 0
    assert (lengths[: enc.eot_token] >= 1).all()
    for doc in list(iter_docs(corpus))[:20] + [{"text": t} for t in TRICKY]:
        ids = np.array(enc.encode_ordinary(doc["text"]))
        assert lengths[ids].sum() == len(doc["text"].encode("utf-8"))


def test_stats_report_bytes_per_token_per_source_and_sample_shares(trained):
    _, _, cfg, stats = trained
    assert set(stats["bytes_per_token"]) == {"web", "books", "code"}
    assert all(1.0 < v < 8.0 for v in stats["bytes_per_token"].values())
    assert stats["train_seconds"] > 0
    total_w = sum(cfg.sample_weights.values())
    for source, w in cfg.sample_weights.items():
        budget = cfg.sample_bytes * w / total_w
        got = stats["sample_bytes"][source]
        # each source's budget is met (the corpus has enough of each) and overshot by less than one document
        assert budget <= got <= min(stats["available_bytes"][source], budget + 600_000), source


def test_training_is_deterministic(trained, tmp_path):
    corpus, out, cfg, stats = trained
    again = run_tokenizer(cfg, {"docs": corpus}, tmp_path / "tok")
    assert again["sha256"] == stats["sha256"]
    assert (tmp_path / "tok" / "tokenizer.tiktoken").read_bytes() == (out / "tokenizer.tiktoken").read_bytes()
    other = run_tokenizer(cfg.model_copy(update={"seed": 1, "sample_bytes": 300_000}), {"docs": corpus}, tmp_path / "t2")
    assert other["sha256"] != stats["sha256"]


def test_corrupt_input_is_skipped_and_counted(trained, tmp_path):
    corpus, _, _, _ = trained
    good = list(iter_docs(corpus))
    folder = corrupt_docs_folder(tmp_path / "bad", good)
    skipped: Counter = Counter()
    docs = list(read_docs(folder, skipped=skipped))
    assert len(docs) == len(good) + 1 + sum(1 for d in docs if d["id"].startswith("t"))
    assert skipped["malformed_json"] == 1 and skipped["empty_text"] == 1 and skipped["missing_source"] == 1
    assert skipped["corrupt_file"] == 1
    stats = run_tokenizer(small_tokenizer_config(hf_check_bytes=0), {"docs": folder}, tmp_path / "tok")
    assert stats["skipped"]["malformed_json"] == 1 and stats["vocab_size"] == 1024


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="endoftext"):
        TokenizerConfig(special_tokens=["<|pad|>"])
    with pytest.raises(ValidationError, match="valid regex"):
        TokenizerConfig(split_pattern="(unclosed")
    with pytest.raises(ValidationError, match="no room"):
        TokenizerConfig(vocab_size=260, special_tokens=[f"<|s{i}|>" for i in range(9)] + ["<|endoftext|>"])
    assert TokenizerConfig(vocab_size=4096).bpe_vocab_size() == 4095
