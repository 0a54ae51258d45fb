"""dedup with datasketch's Redis storage: a real `redis-server` on 127.0.0.1 gives the same clusters as the
in-memory index. Needs the Debian package `redis-server` (CI: `apt-get install -y redis-server`)."""
from __future__ import annotations

import socket
import subprocess
import time

import pytest

from real_components import require_binary, require_module, unavailable

from tasks.config.dedup import DedupConfig, RedisStorage
from tasks.dedup import run_dedup
from tasks.dedup.planted import book_passages, plant
from tasks.docs import write_docs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_port(tmp_path):
    binary = require_binary("redis-server", apt_package="redis-server")
    redis = require_module("redis", "pip install redis (a datasketch[redis] dependency)")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    unavailable(f"redis-server exited with code {proc.returncode} on port {port}")
                time.sleep(0.05)
        else:
            pytest.fail(f"redis-server did not answer on port {port} within 5 s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_index_gives_the_same_clusters_as_memory(shared_data, redis_port, tmp_path):
    import redis

    texts, _ = plant(book_passages(shared_data / "books", 120, seed=5), lo=0.5, hi=0.97, seed=2)
    docs = [{"text": t, "id": f"d{i:04d}", "metadata": {"source": ("web", "books", "code")[i % 3]}}
            for i, t in enumerate(texts)]
    inputs = {}
    for source in ("web", "books", "code"):
        write_docs(tmp_path / "in" / source / "docs" / "0.jsonl.gz", [d for d in docs if d["metadata"]["source"] == source])
        inputs[source] = tmp_path / "in" / source

    memory = DedupConfig(processes=1)
    on_redis = memory.model_copy(update={"storage": "redis", "redis": RedisStorage(port=redis_port)})
    mem_stats = run_dedup(memory, inputs, tmp_path / "memory")
    redis_stats = run_dedup(on_redis, inputs, tmp_path / "redis")

    assert mem_stats["near_dups"] > 20  # the comparison is about real clusters
    for key in ("exact_dups", "near_dups", "clusters", "kept", "lsh_candidate_pairs"):
        assert mem_stats[key] == redis_stats[key], key
    for rel in ("clusters.jsonl.gz", "docs/books-00000.jsonl.gz", "rejects/near_duplicate-00000.jsonl.gz"):
        assert (tmp_path / "memory" / rel).read_bytes() == (tmp_path / "redis" / rel).read_bytes(), rel
    # the run removed its own index from Redis
    assert redis.Redis(host="127.0.0.1", port=redis_port).dbsize() == 0
