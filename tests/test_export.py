"""HF export: LlamaForCausalLM + tokenizer load with Auto* classes offline and reproduce our model's logits."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_evaluate_fixtures import book_text, make_model_dir, train_tiktoken

from tasks.evaluate.export import export_hf, hf_key, load_our_model


@pytest.fixture(scope="module")
def enc(shared_data):
    return train_tiktoken(book_text(shared_data))


@pytest.fixture(scope="module")
def text(shared_data):
    return book_text(shared_data)[50_000:52_000]


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_export_logits_match_ours_in_fp32(tmp_path, enc, text, tie):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = make_model_dir(tmp_path / "model", enc, tie=tie, seed=3)
    stats = export_hf(model_dir, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = load_our_model(model_dir)

    ids = enc.encode(text)[:200]
    assert tok(text, add_special_tokens=False)["input_ids"][:200] == ids  # same ids as the tiktoken encoding
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == enc.eot_token
    assert stats["params"] == ours.num_params() and stats["tied"] is tie
    x = torch.tensor([ids, ids[::-1]])  # (2, T)
    with torch.no_grad():
        diff = (ours(x) - hf(x).logits).abs().max().item()
    assert diff < 1e-4, f"exported logits differ from ours by {diff}"


def test_parity_check_catches_a_wrong_mapping(tmp_path, enc, text):
    """Swapping SwiGLU gate and up weights (a plausible export bug) must show up as a logits mismatch."""
    from transformers import AutoModelForCausalLM

    model_dir = make_model_dir(tmp_path / "model", enc, seed=4)
    ours = load_our_model(model_dir)
    state = load_file(model_dir / "model.safetensors")
    state["layers.0.feed_forward.w1.weight"], state["layers.0.feed_forward.w3.weight"] = (
        state["layers.0.feed_forward.w3.weight"], state["layers.0.feed_forward.w1.weight"])
    save_file(state, model_dir / "model.safetensors")
    export_hf(model_dir, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    x = torch.tensor([enc.encode(text)[:64]])
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() > 1e-4


def test_export_rejects_incomplete_or_foreign_checkpoints(tmp_path, enc):
    model_dir = make_model_dir(tmp_path / "model", enc)
    state = load_file(model_dir / "model.safetensors")
    del state["layers.1.attention.wk.weight"]
    save_file(state, model_dir / "model.safetensors")
    with pytest.raises(ValueError, match="missing.*layers.1.self_attn.k_proj"):
        export_hf(model_dir, tmp_path / "hf")
    with pytest.raises(KeyError, match="no Hugging Face Llama counterpart"):
        hf_key("layers.0.attention.bias")
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or tokenizer.tiktoken"):
        export_hf(model_dir, tmp_path / "hf2")


def test_export_converts_tiktoken_ranks_in_tokenizer_subfolder(tmp_path, enc, text):
    """data/model with only the tokenizer stage's files (tokenizer/{tokenizer.tiktoken, meta.json})."""
    from transformers import AutoTokenizer

    from tasks.tokenizer import META_FILE, RANKS_FILE, meta_sha256, write_ranks

    model_dir = make_model_dir(tmp_path / "model", enc)
    (model_dir / "tokenizer.json").unlink()
    tok_dir = model_dir / "tokenizer"
    tok_dir.mkdir()
    rank_bytes = write_ranks(enc._mergeable_ranks, tok_dir / RANKS_FILE)
    meta = {"pattern": enc._pat_str, "bpe_ranks": len(enc._mergeable_ranks), "vocab_size": enc.n_vocab,
            "special_tokens": enc._special_tokens}
    meta["sha256"] = meta_sha256(rank_bytes, meta)
    (tok_dir / META_FILE).write_text(json.dumps(meta))
    export_hf(model_dir, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok(text, add_special_tokens=False)["input_ids"] == enc.encode(text)
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "meta.json", "model.safetensors", "tokenizer"]


def test_export_is_deterministic(tmp_path, enc):
    model_dir = make_model_dir(tmp_path / "model", enc)
    export_hf(model_dir, tmp_path / "a")
    export_hf(model_dir, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    shutil.rmtree(tmp_path / "b")
