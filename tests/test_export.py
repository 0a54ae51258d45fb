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


def reference_hf_model(ours, cfg: dict, tie: bool):
    """LlamaForCausalLM filled from our model's modules, one attribute at a time: a route to the HF weights that
    shares nothing with export.py (no key strings, no hf_key). SwiGLU: ours is w2(silu(w1 x) * w3 x), HF's is
    down_proj(silu(gate_proj x) * up_proj x)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["d_model"], intermediate_size=cfg["ffn_hidden"],
                         num_hidden_layers=cfg["n_layer"], num_attention_heads=cfg["n_head"],
                         num_key_value_heads=cfg["n_kv_head"], max_position_embeddings=cfg["max_seq_len"],
                         rms_norm_eps=cfg["norm_eps"], rope_theta=cfg["rope_theta"], tie_word_embeddings=tie)
    ref = LlamaForCausalLM(config).eval()
    pairs = [(ref.model.embed_tokens, ours.tok_embeddings), (ref.model.norm, ours.norm)]
    for theirs, mine in zip(ref.model.layers, ours.layers, strict=True):
        pairs += [(theirs.input_layernorm, mine.attention_norm), (theirs.post_attention_layernorm, mine.ffn_norm),
                  (theirs.self_attn.q_proj, mine.attention.wq), (theirs.self_attn.k_proj, mine.attention.wk),
                  (theirs.self_attn.v_proj, mine.attention.wv), (theirs.self_attn.o_proj, mine.attention.wo),
                  (theirs.mlp.gate_proj, mine.feed_forward.w1), (theirs.mlp.up_proj, mine.feed_forward.w3),
                  (theirs.mlp.down_proj, mine.feed_forward.w2)]
    if not tie:
        pairs.append((ref.lm_head, ours.output))
    with torch.no_grad():
        for theirs, mine in pairs:
            theirs.weight.copy_(mine.weight)
    ref.tie_weights()
    return ref


def export_mismatches(model_dir, hf_dir, tie: bool = False) -> list[str]:
    """Exported tensors that differ from the independently built reference, and a logits check against both."""
    from safetensors.torch import load_file as load

    ours = load_our_model(model_dir)
    ref = reference_hf_model(ours, json.loads((model_dir / "config.json").read_text()), tie)
    exported = load(hf_dir / "model.safetensors")
    expected = {k: v for k, v in ref.state_dict().items() if not (tie and k == "lm_head.weight")}
    bad = sorted(k for k in expected if k not in exported or not torch.equal(exported[k], expected[k]))
    bad += sorted(f"unexpected {k}" for k in set(exported) - set(expected))
    x = torch.arange(1, 65).remainder(ours.cfg.vocab_size)[None]  # (1, 64)
    with torch.no_grad():
        if (ref(x).logits - ours(x)).abs().max() > 1e-4:
            bad.append("the reference's logits differ from ours")  # the reference itself is wrong: fix the test
    return bad


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_export_equals_an_hf_model_built_from_our_modules(tmp_path, enc, tie):
    model_dir = make_model_dir(tmp_path / "model", enc, tie=tie, seed=4)
    export_hf(model_dir, tmp_path / "hf")
    assert export_mismatches(model_dir, tmp_path / "hf", tie) == []


@pytest.mark.parametrize("first, second", [
    ("feed_forward.w1.weight", "feed_forward.w3.weight"),  # SwiGLU gate and up: same shape
    ("attention_norm.weight", "ffn_norm.weight"),  # the two norms of a block: same shape
    ("attention.wk.weight", "attention.wv.weight"),  # key and value projections: same shape under GQA
])
def test_a_wrong_hf_key_mapping_is_caught(tmp_path, enc, text, monkeypatch, first, second):
    """Break the real mapping the export uses (two same-shaped weights swapped, so loading still succeeds):
    both the tensor comparison and the logits parity must fail."""
    from transformers import AutoModelForCausalLM

    from tasks.evaluate import export

    keys = dict(export._LAYER_KEYS)
    keys[first], keys[second] = keys[second], keys[first]
    monkeypatch.setattr(export, "_LAYER_KEYS", keys)
    model_dir = make_model_dir(tmp_path / "model", enc, seed=5)
    export_hf(model_dir, tmp_path / "hf")
    assert len(export_mismatches(model_dir, tmp_path / "hf")) == 2 * 2  # two tensors in each of the two layers
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    x = torch.tensor([enc.encode(text)[:64]])
    with torch.no_grad():
        assert (load_our_model(model_dir)(x) - hf(x).logits).abs().max().item() > 1e-3


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
