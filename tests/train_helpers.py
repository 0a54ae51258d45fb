"""Shard fixtures for the train/loader tests: real Gutenberg text as byte-level tokens (id = byte value,
EOT = 256), written in the shard stage's format (raw little-endian .bin + manifest.json)."""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

EOT = 256
VOCAB = 257
ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "train_driver.py"


def book_texts(shared_data: Path, n_books: int = 3, max_chars: int = 400_000) -> list[str]:
    texts = []
    for path in sorted((shared_data / "books").glob("pg*.txt.gz"))[:n_books]:
        raw = gzip.open(path, "rb").read()
        texts.append(raw.decode("utf-8", errors="replace").replace("\r\n", "\n")[:max_chars])
    return texts


def write_shards(folder: Path, splits: dict[str, list[np.ndarray]], vocab_size: int = VOCAB, eot_id: int = EOT,
                 dtype: str = "uint16", tokenizer_sha256: str = "byte-level-test") -> Path:
    """Write `{split: [token arrays, one per shard]}` and a manifest; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for split, arrays in splits.items():
        for i, arr in enumerate(arrays):
            name = f"{split}_{i:04d}.bin"
            data = np.asarray(arr, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
            (folder / name).write_bytes(data)
            shards.append({"file": name, "split": split, "tokens": len(arr), "sha256": hashlib.sha256(data).hexdigest(),
                           "tokens_per_source": {"books": len(arr)}})
    manifest = {"format": "tinyfoundry-shards-v1", "dtype": dtype, "vocab_size": vocab_size, "eot_id": eot_id,
                "tokenizer_sha256": tokenizer_sha256, "shards": shards,
                "splits": {s: sum(len(a) for a in arrs) for s, arrs in splits.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def byte_tokens(texts: list[str]) -> np.ndarray:
    """Each document prefixed with EOT, as the shard stage does."""
    parts = []
    for t in texts:
        parts.append(np.array([EOT], dtype=np.uint16))
        parts.append(np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint16))
    return np.concatenate(parts)


def book_shards(folder: Path, shared_data: Path, n_train_shards: int = 2, max_chars: int = 400_000) -> Path:
    texts = book_texts(shared_data, n_books=3, max_chars=max_chars)
    train = byte_tokens(texts[:2])
    val = byte_tokens([texts[2][:60_000]])
    return write_shards(folder, {"train": np.array_split(train, n_train_shards), "val": [val]})


def byte_lengths() -> np.ndarray:
    lengths = np.ones(VOCAB, dtype=np.int64)
    lengths[EOT] = 0
    return lengths


def torchrun(spec_file: Path, port: int) -> subprocess.Popen:
    """`torchrun --nproc-per-node=2 tests/train_driver.py spec_file` in its own session (so a test can kill it whole)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TINYFOUNDRY_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
           f"--master-port={port}", "--master-addr=127.0.0.1", str(DRIVER), str(spec_file)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def losses(model_dir: Path) -> list[tuple[int, str, str]]:
    rows = csv.DictReader((model_dir / "train_curve.csv").open())
    return [(int(r["step"]), r["train_loss"], r["val_loss"]) for r in rows]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def byte_tokenizer_dir(folder: Path) -> Path:
    """A byte-level tokenizer (id = byte value, EOT = 256) as tokenizer.json: what the byte shards were cut with."""
    import tiktoken

    from tasks.evaluate.export import tiktoken_to_hf

    enc = tiktoken.Encoding(name="bytes", pat_str=r"""[^\n]+|\n""", mergeable_ranks={bytes([i]): i for i in range(256)},
                            special_tokens={"<|endoftext|>": EOT})
    folder.mkdir(parents=True)
    tiktoken_to_hf(enc).save(str(folder / "tokenizer.json"))
    return folder
