"""mix stage: 7:3 natural language : code by tokens, repeat cap, validation hold-out, determinism."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.config.mix import MixConfig
from tasks.docs import iter_docs, write_docs
from tasks.mix import is_validation, run_mix
from tasks.tokenizer import load_tokenizer, run_tokenizer
from tests.test_tokenizer_helpers import corrupt_docs_folder, make_corpus, small_tokenizer_config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("mix")
    filt = make_corpus(root / "filter", shared_data)
    run_tokenizer(small_tokenizer_config(hf_check_bytes=0), {"docs": filt}, root / "tokenizer")
    return filt, root / "tokenizer"


def _mix(corpus, out, **cfg):
    filt, tok = corpus
    return run_mix(MixConfig(**{"val_fraction": 0.1, **cfg}), {"docs": filt, "tokenizer": tok}, out)


def recount(out, tok) -> Counter:
    """Training tokens per source recomputed from the written documents and order (not the stage's stats)."""
    enc = load_tokenizer(tok)
    docs = list(iter_docs(out))
    order = np.load(out / "order.npy")
    per_doc = [len(enc.encode_ordinary(d["text"])) + 1 for d in docs]
    tokens: Counter = Counter()
    for i in order:
        tokens[docs[i]["metadata"]["source"]] += per_doc[i]
    return tokens


def test_realised_code_share_is_on_target(corpus, tmp_path):
    stats = _mix(corpus, tmp_path / "mix")
    tokens = recount(tmp_path / "mix", corpus[1])
    assert dict(tokens) == stats["tokens_per_source"]
    share = tokens["code"] / sum(tokens.values())
    assert abs(share - 0.306416) / 0.306416 <= 0.01
    assert stats["within_tolerance"] and stats["realised_code_fraction"] == pytest.approx(share, abs=1e-6)
    assert json.loads((tmp_path / "mix" / "plan.json").read_text()) == json.loads(json.dumps(stats))


@pytest.mark.parametrize("max_repeats", [1.0, 2.5])
def test_repeats_are_capped(corpus, tmp_path, max_repeats):
    stats = _mix(corpus, tmp_path / "mix", max_repeats=max_repeats)
    for source, reps in stats["repeats_per_source"].items():
        assert reps <= max_repeats + 1e-6, source
        assert stats["max_copies_per_source"][source] <= int(np.ceil(max_repeats))
    # the scarcest source is used up to the cap, less at most one of its (large: ~10% of web) documents
    assert max(stats["repeats_per_source"].values()) >= max_repeats * 0.9
    assert abs(stats["realised_deviation"]) <= 0.01
    docs = list(iter_docs(tmp_path / "mix"))
    counts = np.bincount(np.load(tmp_path / "mix" / "order.npy"), minlength=len(docs))
    assert [d["metadata"]["mix"]["copies"] for d in docs] == counts.tolist()


def test_total_tokens_and_text_weights(corpus, tmp_path):
    stats = _mix(corpus, tmp_path / "mix", total_tokens=600_000, text_weights={"web": 1.0, "books": 3.0})
    # the text sources are coarse (whole books), so the size and the web:books split are approximate
    assert 0.75 * 600_000 <= stats["train_tokens"] <= 1.25 * 600_000
    assert stats["tokens_per_source"]["books"] > stats["tokens_per_source"]["web"]
    assert abs(stats["realised_deviation"]) <= 0.01


def test_validation_split_by_id_hash(corpus, tmp_path):
    _mix(corpus, tmp_path / "a", seed=0)
    _mix(corpus, tmp_path / "b", seed=7)
    val_a = [d["id"] for d in iter_docs(tmp_path / "a", "val")]
    val_b = [d["id"] for d in iter_docs(tmp_path / "b", "val")]
    train_ids = {d["id"] for d in iter_docs(tmp_path / "a")}
    assert val_a and val_a == val_b  # the seed changes the mix, not the hold-out
    assert not train_ids & set(val_a) and not any(is_validation(i, 0.1) for i in train_ids)
    # min_val_docs=1: every source has a validation document, added beyond the hash split only where needed
    val_docs = list(iter_docs(tmp_path / "a", "val"))
    assert {d["metadata"]["source"] for d in val_docs} == {"web", "books", "code"}
    extra = [d["metadata"]["source"] for d in val_docs if not is_validation(d["id"], 0.1)]
    assert len(extra) == len(set(extra))
    _mix(corpus, tmp_path / "c", min_val_docs=0)
    assert all(is_validation(d["id"], 0.1) for d in iter_docs(tmp_path / "c", "val"))
    assert not np.array_equal(np.load(tmp_path / "a" / "order.npy"), np.load(tmp_path / "b" / "order.npy"))


def test_output_is_byte_identical_across_runs_and_input_order(corpus, tmp_path, shared_data):
    _mix(corpus, tmp_path / "a")
    # same documents, different files and order
    docs = list(iter_docs(corpus[0]))[::-1]
    write_docs(tmp_path / "shuffled" / "docs" / "x.jsonl.gz", docs[:7])
    write_docs(tmp_path / "shuffled" / "docs" / "y.jsonl.gz", docs[7:])
    run_mix(MixConfig(val_fraction=0.1), {"docs": tmp_path / "shuffled", "tokenizer": corpus[1]}, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_missing_source_is_a_clear_error(corpus, tmp_path):
    docs = [d for d in iter_docs(corpus[0]) if d["metadata"]["source"] != "code"]
    write_docs(tmp_path / "nocode" / "docs" / "0.jsonl.gz", docs)
    with pytest.raises(ValueError, match="code"):
        run_mix(MixConfig(), {"docs": tmp_path / "nocode", "tokenizer": corpus[1]}, tmp_path / "out")


def test_bad_documents_are_counted_not_fatal(corpus, tmp_path):
    folder = corrupt_docs_folder(tmp_path / "bad", list(iter_docs(corpus[0])))
    extra = [{"text": "a doc of an unknown source", "id": "u1", "metadata": {"source": "forum"}}]
    write_docs(folder / "docs" / "00004.jsonl.gz", extra)
    stats = run_mix(MixConfig(val_fraction=0.1), {"docs": folder, "tokenizer": corpus[1]}, tmp_path / "out")
    assert stats["skipped"] == {"malformed_json": 1, "empty_text": 1, "missing_source": 1, "corrupt_file": 1,
                                "unweighted_source:forum": 1}
    assert stats["within_tolerance"]


def test_config_validation():
    with pytest.raises(ValidationError, match="code source"):
        MixConfig(text_weights={"web": 1.0, "code": 1.0})
    with pytest.raises(ValidationError, match="positive"):
        MixConfig(text_weights={"web": 0.0})
    with pytest.raises(ValidationError):
        MixConfig(max_repeats=0.5)
    shares = MixConfig().source_shares()
    assert sum(shares.values()) == pytest.approx(1.0) and shares["code"] == 0.306416
