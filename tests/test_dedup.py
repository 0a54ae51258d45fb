"""dedup stage: signatures equal datasketch's, planted near-duplicates in real books are found, the keep
rule, determinism, bad input, config validation."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from tasks.config import ConfigError, parse_config
from tasks.config.dedup import DedupConfig
from tasks.dedup import run_dedup
from tasks.dedup.lsh import banded_signatures, make_index
from tasks.dedup.minhash import Hasher, exact_digest, shingle_hashes
from tasks.dedup.planted import book_passages, jaccard, plant, score, shingles
from tasks.docs import iter_docs, write_docs

CFG = DedupConfig(processes=1)
# datatrove's own MinHash stages; workers=1 runs its tasks in this process (no spaCy load per worker)
DATATROVE = DedupConfig(engine="datatrove", band_layouts=1, executor={"kind": "local", "tasks": 2, "workers": 1})
ENGINES = pytest.mark.parametrize("cfg", [CFG, DATATROVE], ids=["native", "datatrove"])


@pytest.fixture(scope="module")
def passages(shared_data) -> list[str]:
    return book_passages(shared_data / "books", 240, seed=3)


def _write_sources(root: Path, docs: list[dict]) -> dict[str, Path]:
    inputs = {}
    for source in sorted({d["metadata"]["source"] for d in docs}):
        write_docs(root / source / "docs" / "00000.jsonl.gz", [d for d in docs if d["metadata"]["source"] == source])
        inputs[source] = root / source
    return inputs


def _heads(out: Path, ids: list[str]) -> list[int]:
    index = {doc_id: i for i, doc_id in enumerate(ids)}
    head = list(range(len(ids)))
    for doc in iter_docs(out, "rejects"):
        head[index[doc["id"]]] = index[doc["metadata"]["duplicate_of"]]
    return head


def _read_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def test_signature_is_datasketch_minhash_of_the_shingles(passages):
    text = "\n\n".join(passages[:5])
    sh = shingle_hashes(text, 5)
    reference = MinHash(num_perm=112, seed=1, hashfunc=int)
    reference.update_batch(sh.tolist())
    assert np.array_equal(Hasher(5, 112, 1).signature(text), reference.hashvalues)
    # one hash per distinct word 5-gram of an independent plain-Python tokeniser (no collisions here)
    assert len(np.unique(sh)) == len(shingles(text, 5))
    assert shingle_hashes("Two words", 5).size == 1 and shingle_hashes(" ;; ", 5).size == 0


def test_normalisation_ignores_case_punctuation_and_spacing():
    h = Hasher(5, 112, 1)
    a = "The quick brown fox, jumps over the lazy dog!"
    assert np.array_equal(h.signature(a), h.signature("the  QUICK brown fox jumps\nover the lazy dog"))
    assert exact_digest(a) == exact_digest("  The quick brown fox,\r\n jumps over the lazy dog! ")
    assert exact_digest(a) != exact_digest(a.lower())  # exact dedup keeps case (code)


@ENGINES
def test_planted_near_duplicates_in_real_books(cfg, passages, tmp_path):
    texts, pairs = plant(passages, lo=0.3, hi=0.95, seed=7)
    ids = [f"doc-{i:04d}" for i in range(len(texts))]
    sources = random.Random(0).choices(["web", "books", "code"], k=len(texts))
    docs = [{"text": t, "id": i, "metadata": {"source": s}} for t, i, s in zip(texts, ids, sources)]
    stats = run_dedup(cfg, _write_sources(tmp_path / "in", docs), tmp_path / "out")

    quality = score(texts, pairs, _heads(tmp_path / "out", ids))
    assert quality["positives"] >= 30 and quality["negatives"] >= 30, quality
    assert quality["recall"] >= 0.95, quality
    assert quality["precision"] >= 0.99, quality
    assert quality["fpr"] <= 0.01, quality
    assert stats["docs_in"] == len(texts)
    assert stats["kept"] + stats["exact_dups"] + stats["near_dups"] == len(texts)
    assert stats["kept"] == sum(1 for _ in iter_docs(tmp_path / "out"))
    if cfg.engine == "native":
        assert stats["index_bytes_per_doc"] <= 1024
    else:  # only documents datatrove put in a cluster reach this process
        assert stats["docs_in"] > stats["clustered_docs"] >= stats["exact_dups"] + stats["near_dups"] * 2
    for key in ("docs_in", "exact_dups", "near_dups", "clusters", "kept", "docs_per_s", "peak_rss_mb"):
        assert isinstance(stats[key], (int, float)), key
    json.dumps(stats)


def _candidate_pairs(cfg: DedupConfig | None, sigs: np.ndarray) -> set[tuple[int, int]]:
    """LSH candidate pairs of our index for `cfg`, or of datasketch's plain 14x8 `MinHashLSH` for None."""
    values = sigs if cfg is None else banded_signatures(sigs, cfg)
    minhashes = [LeanMinHash(seed=1, hashvalues=v, scheme="affine32") for v in values]
    lsh = MinHashLSH(num_perm=112, params=(14, 8)) if cfg is None else make_index(cfg)
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    return {(i, c) for i, m in enumerate(minhashes) for c in lsh.query(m) if c > i}


def test_second_band_layout_finds_what_fineweb_banding_misses(passages):
    # twins planted at J 0.75-0.88, where 14x8 banding alone misses ~5% of pairs (0.077 at J = 0.8)
    texts, pairs = plant(passages, lo=0.75, hi=0.88, seed=5)
    sigs = Hasher(5, 112, 1).batch(texts)[0]
    fineweb = _candidate_pairs(CFG.model_copy(update={"band_layouts": 1}), sigs)
    layered = _candidate_pairs(CFG.model_copy(update={"band_layouts": 2}), sigs)
    planted = {(p.original, p.twin) for p in pairs}

    assert fineweb == _candidate_pairs(None, sigs)  # one layout = datasketch's own 14x8 banding
    assert fineweb <= layered  # layout 0 is FineWeb's banding: nothing it finds is lost
    missed_by_fineweb = planted - fineweb
    assert len(missed_by_fineweb) >= 3, "the sample should contain banding misses to rescue"
    assert len(planted - layered) < len(missed_by_fineweb) / 2


@ENGINES
def test_keep_rule_exact_and_near_duplicates_across_sources(cfg, passages, tmp_path):
    base = passages[0]
    longer = passages[3] + "\n\n" + passages[4][:300]
    near = longer.replace(" the ", " a ", 3)[:-40]
    docs = [
        {"text": base, "id": "web-1", "metadata": {"source": "web"}},
        {"text": "  " + base.replace("\n", " \n  ") + "\n", "id": "book-1", "metadata": {"source": "books"}},
        {"text": longer, "id": "web-2", "metadata": {"source": "web"}},
        {"text": near, "id": "web-3", "metadata": {"source": "web"}},
        {"text": passages[5], "id": "code-1", "metadata": {"source": "code", "extra": [1, 2]}},
    ]
    assert jaccard(longer, near) > 0.8 and jaccard(base, longer) < 0.1
    stats = run_dedup(cfg, _write_sources(tmp_path / "in", docs), tmp_path / "out")

    rejects = {d["id"]: d["metadata"] for d in iter_docs(tmp_path / "out", "rejects")}
    kept = {d["id"]: d for d in iter_docs(tmp_path / "out")}
    # books beat web for the exact copy; within web the longer document wins
    assert rejects["web-1"]["reject_reason"] == "exact_duplicate" and rejects["web-1"]["duplicate_of"] == "book-1"
    assert rejects["web-3"]["reject_reason"] == "near_duplicate" and rejects["web-3"]["duplicate_of"] == "web-2"
    assert 0.7 <= rejects["web-3"]["jaccard"] < 1
    assert set(kept) == {"book-1", "web-2", "code-1"}
    assert kept["code-1"]["metadata"] == {"source": "code", "extra": [1, 2]}  # kept documents pass unchanged
    assert (stats["exact_dups"], stats["near_dups"], stats["kept"], stats["clusters"]) == (1, 1, 3, 2)

    clusters = _read_gz(tmp_path / "out" / "clusters.jsonl.gz")
    by_id = {c["id"]: c for c in clusters}
    assert set(by_id) == {"book-1", "web-1", "web-2", "web-3"}
    assert by_id["web-1"]["cluster"] == by_id["book-1"]["cluster"] != by_id["web-3"]["cluster"]
    assert by_id["web-3"]["kept"] == "web-2" and by_id["web-2"]["role"] == "kept"


def test_keep_priority_is_a_param(passages, tmp_path):
    docs = [{"text": passages[2], "id": "w", "metadata": {"source": "web"}},
            {"text": passages[2], "id": "b", "metadata": {"source": "books"}}]
    inputs = _write_sources(tmp_path / "in", docs)
    run_dedup(CFG.model_copy(update={"keep_priority": ["web", "books"]}), inputs, tmp_path / "out")
    assert [d["id"] for d in iter_docs(tmp_path / "out")] == ["w"]


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deterministic_across_runs_and_worker_counts(passages, tmp_path):
    texts, _ = plant(passages[:60], seed=1)
    docs = [{"text": t, "id": f"d{i}", "metadata": {"source": "web" if i % 3 else "books"}}
            for i, t in enumerate(texts)]
    inputs = _write_sources(tmp_path / "in", docs)
    run_dedup(CFG, inputs, tmp_path / "a")
    run_dedup(CFG.model_copy(update={"processes": 2, "batch_docs": 7}), inputs, tmp_path / "b")
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert a == b and any(k.startswith("rejects/") for k in a)


def test_exact_verification_reports_the_true_jaccard(passages, tmp_path):
    texts, _ = plant(passages[:80], lo=0.6, hi=0.97, seed=4)
    docs = [{"text": t, "id": f"d{i:03d}", "metadata": {"source": "web"}} for i, t in enumerate(texts)]
    inputs = _write_sources(tmp_path / "in", docs)
    stats = run_dedup(CFG.model_copy(update={"verify": "exact"}), inputs, tmp_path / "out")
    near = [d for d in iter_docs(tmp_path / "out", "rejects") if d["metadata"]["reject_reason"] == "near_duplicate"]
    assert len(near) == stats["near_dups"] >= 10
    text_of = {d["id"]: d["text"] for d in docs}
    for d in near:  # the recorded similarity is the exact shingle Jaccard, and it passed the threshold
        true = jaccard(d["text"], text_of[d["metadata"]["duplicate_of"]])
        assert d["metadata"]["jaccard"] == pytest.approx(true, abs=2e-3) and true >= 0.7


@ENGINES
def test_bad_input_is_counted_and_kept_in_rejects(cfg, passages, tmp_path):
    good = [{"text": passages[i], "id": f"g{i}", "metadata": {"source": "web"}} for i in range(3)]
    write_docs(tmp_path / "web" / "docs" / "a.jsonl.gz", good)
    lines = ['{"text": "no id here"}', "{not json", '{"id": "e", "text": "   "}', '[1, 2]',
             '{"id": "m", "text": 5}', json.dumps({"id": "ok", "text": passages[9]})]
    with gzip.open(tmp_path / "web" / "docs" / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    whole = gzip.compress(("\n".join(json.dumps(d) for d in good) + "\n").encode())
    (tmp_path / "web" / "docs" / "c.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # truncated shard
    inputs = {"web": tmp_path / "web", "code": tmp_path / "missing"}

    stats = run_dedup(cfg, inputs, tmp_path / "out")
    assert stats["skipped_by_reason"] == {"corrupt_file": 1, "empty_text": 1, "malformed_json": 1,
                                          "missing_id": 1, "missing_input": 1, "missing_text": 1,
                                          "not_an_object": 1}
    kept = {d["id"] for d in iter_docs(tmp_path / "out")}
    assert {"g0", "g1", "g2", "ok"} <= kept
    malformed = list(iter_docs(tmp_path / "out", "rejects"))
    assert sorted(d["metadata"]["reject_reason"] for d in malformed if d["metadata"]["reject_reason"] not in
                  ("exact_duplicate", "near_duplicate")) == ["empty_text", "malformed_json", "missing_id",
                                                             "missing_text", "not_an_object"]


@ENGINES
def test_empty_inputs_give_empty_outputs(cfg, tmp_path):
    (tmp_path / "web" / "docs").mkdir(parents=True)
    stats = run_dedup(cfg, {"web": tmp_path / "web"}, tmp_path / "out")
    assert (stats["docs_in"], stats["kept"], stats["clusters"]) == (0, 0, 0)
    assert (tmp_path / "out" / "docs").is_dir() and (tmp_path / "out" / "clusters.jsonl.gz").exists()


@pytest.mark.parametrize("section, message", [
    ({"bands": 20, "rows": 8}, "bands*rows (20*8) must not exceed num_perm (112)"),
    ({"keep_priority": ["books", "papers"]}, "dedup.keep_priority names unknown sources ['papers']"),
    ({"storage": "cassandra"}, "dedup.storage"),
    ({"verify_threshold": 1.5}, "dedup.verify_threshold"),
    ({"band_layouts": 0}, "dedup.band_layouts"),
    ({"engine": "datatrove"}, "band_layouts must be 1 with engine 'datatrove', not 2"),
    ({"engine": "datatrove", "band_layouts": 1, "storage": "redis"}, "storage must be 'memory' with engine"),
    ({"engine": "spark"}, "dedup.engine"),
    ({"processes": "many"}, "dedup.processes must be a positive integer or 'auto'"),
])
def test_config_errors_name_the_problem(section, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("*", r"\*")):
        parse_config({"fetch": {}, "dedup": section})
