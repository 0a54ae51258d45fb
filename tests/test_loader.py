"""tasks/train/loader.py: rank-disjoint batches from memory-mapped shards, exact resume, bad shards."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from tasks.train.loader import ShardError, TokenLoader
from train_helpers import EOT, book_shards, write_shards


def counting_shards(tmp_path, sizes=(1000, 777, 1500), dtype="uint16"):
    """Token value = global position (mod 60000), so every window identifies itself."""
    arrays, start = [], 0
    for n in sizes:
        arrays.append((np.arange(start, start + n) % 60000).astype(np.int64))
        start += n
    return write_shards(tmp_path / "shards", {"train": arrays, "val": [arrays[0][:300]]}, vocab_size=60001,
                        eot_id=60000, dtype=dtype)


def window_keys(x: torch.Tensor) -> set[int]:
    return set(x[:, 0].tolist())


def test_ranks_disjoint_and_epoch_covers_all_windows(tmp_path):
    folder = counting_shards(tmp_path)
    B, T, W = 4, 16, 2
    loaders = [TokenLoader(folder, "train", B, T, rank=r, world_size=W, seed=3) for r in range(W)]
    per_epoch = loaders[0].batches_per_epoch
    assert loaders[0].num_windows == sum((n - 1) // T for n in (1000, 777, 1500))
    seen: list[int] = []
    for _ in range(per_epoch):
        batches = [next(ld) for ld in loaders]
        a, b = window_keys(batches[0][0]), window_keys(batches[1][0])
        assert not a & b, "two ranks received the same window"
        seen += [*a, *b]
        for x, y in batches:
            assert x.shape == y.shape == (B, T) and x.dtype == torch.int64
            # targets are the inputs shifted by one token, taken from the same shard
            assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert len(seen) == len(set(seen)) == per_epoch * B * W  # no window twice within an epoch
    assert len(seen) > loaders[0].num_windows - B * W  # only the remainder of the epoch is dropped
    next(loaders[0])
    assert loaders[0].epoch == 1  # rolls over into a new permutation


def test_state_dict_resumes_with_exactly_the_next_batch(tmp_path):
    folder = counting_shards(tmp_path)
    ref = TokenLoader(folder, "train", 3, 20, rank=1, world_size=2, seed=7)
    expected = [next(ref)[0] for _ in range(40)]  # crosses an epoch boundary (batches_per_epoch < 40)
    assert ref.epoch >= 1
    first = TokenLoader(folder, "train", 3, 20, rank=1, world_size=2, seed=7)
    for _ in range(25):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # must survive serialisation
    resumed = TokenLoader(folder, "train", 3, 20, rank=1, world_size=2, seed=7)
    resumed.load_state_dict(state)
    for i in range(25, 40):
        assert torch.equal(next(resumed)[0], expected[i])
    other_seed = TokenLoader(folder, "train", 3, 20, rank=1, world_size=2, seed=8)
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(state)


def test_validation_split_is_ordered_and_finite(tmp_path):
    folder = counting_shards(tmp_path)
    val = TokenLoader(folder, "val", 2, 16, shuffle=False)
    xs = [x for x, _ in val]
    assert len(xs) == ((300 - 1) // 16) // 2
    assert xs[0][0, 0].item() == 0 and xs[0][1, 0].item() == 16


def test_uint32_tokens(tmp_path):
    big = np.arange(70000, 70000 + 600, dtype=np.int64)
    folder = write_shards(tmp_path / "s", {"train": [big]}, vocab_size=80000, eot_id=79999, dtype="uint32")
    x, y = next(TokenLoader(folder, "train", 2, 8, shuffle=False))
    assert x[0, 0].item() == 70000 and y[0, -1].item() == 70008


def test_bad_shards_are_skipped_with_a_reason(tmp_path, caplog):
    folder = counting_shards(tmp_path)
    (folder / "train_0001.bin").write_bytes(b"\x01\x02\x03")  # ragged: not a whole number of uint16 tokens
    (folder / "train_0002.bin").unlink()
    with caplog.at_level(logging.WARNING, logger="tinyfoundry.train"):
        loader = TokenLoader(folder, "train", 2, 16)
    assert [s.split(":")[0] for s in loader.skipped] == ["train_0001.bin", "train_0002.bin"]
    assert "not a multiple of the token size" in loader.skipped[0] and "missing" in loader.skipped[1]
    assert "skipping shard train_0001.bin" in caplog.text
    assert loader.num_windows == (1000 - 1) // 16


def test_manifest_errors_name_the_problem(tmp_path):
    with pytest.raises(ShardError, match="manifest.json not found"):
        TokenLoader(tmp_path, "train", 2, 16)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match="not valid JSON"):
        TokenLoader(tmp_path, "train", 2, 16)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ShardError, match="format"):
        TokenLoader(tmp_path, "train", 2, 16)
    folder = counting_shards(tmp_path / "small", sizes=(40,))
    with pytest.raises(ShardError, match="fewer than one micro-batch"):
        TokenLoader(folder, "train", 4, 16, world_size=2)


def test_real_books_batches_decode_to_text(tmp_path, shared_data):
    folder = book_shards(tmp_path / "shards", shared_data, max_chars=50_000)
    loader = TokenLoader(folder, "train", 4, 64, seed=0)
    x, y = next(loader)
    for row in x.tolist():
        raw = bytes(t for t in row if t != EOT)
        assert sum(c.isalpha() or c.isspace() for c in raw.decode("utf-8", errors="replace")) > 0.6 * len(raw)
