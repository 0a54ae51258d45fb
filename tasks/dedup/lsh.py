"""The LSH index: datasketch's `MinHashLSH` (bands × rows), on Redis or on a compact in-memory storage.

With `band_layouts` > 1 the signature is banded several ways (`banded_signatures`); the index is one
`MinHashLSH` over the layouts' bands side by side, so datasketch still does all inserting and querying.

datasketch's own in-memory storage keeps a Python `set` per bucket and every band hash again per key:
~4-5 KB per document with 14 bands. `ArrayBucketStorage` below implements datasketch's storage
interface over sorted numpy arrays (8-byte band hash + 8-byte key per band: ~230 bytes per document),
so `MinHashLSH` does the banding, insertion and querying unchanged. Redis uses datasketch's Redis
storage as is, so several machines can share one index.
"""
from __future__ import annotations

import hashlib
import uuid
from array import array

import numpy as np
from datasketch import MinHashLSH
from datasketch.storage import OrderedStorage, UnorderedStorage


def band_digest(band: bytes) -> bytes:
    """Compress a band (rows × 4 bytes) to an 8-byte bucket key (datasketch's `hashfunc` hook; Redis)."""
    return hashlib.blake2b(band, digest_size=8).digest()


def band_hash(band: bytes) -> int:
    """The same 8-byte bucket key as a signed integer, for the numpy storage."""
    return int.from_bytes(hashlib.blake2b(band, digest_size=8).digest(), "little", signed=True)


class ArrayBucketStorage(UnorderedStorage):
    """One band's hash table: sorted int64 arrays of (band hash, key) plus an append buffer.

    Keys must be integers (document ordinals). Inserts append to `array.array` buffers (no Python
    object per entry); a lookup first merges the buffer into the sorted arrays, so the cost of sorting
    is paid once per insert→query switch, not per insert.
    """

    def __init__(self, config=None):
        self._hashes = np.zeros(0, dtype=np.int64)
        self._keys = np.zeros(0, dtype=np.int64)
        self._new_hashes = array("q")
        self._new_keys = array("q")

    def _merge(self) -> None:
        if not self._new_hashes:
            return
        hashes = np.concatenate([self._hashes, np.frombuffer(self._new_hashes, dtype=np.int64)])
        keys = np.concatenate([self._keys, np.frombuffer(self._new_keys, dtype=np.int64)])
        order = np.lexsort((keys, hashes))
        self._hashes, self._keys = hashes[order], keys[order]
        self._new_hashes, self._new_keys = array("q"), array("q")

    def insert(self, key, *vals, **kwargs):
        for val in vals:
            self._new_hashes.append(key)
            self._new_keys.append(val)

    def get(self, key):
        self._merge()
        hashes = self._hashes
        lo = hi = int(hashes.searchsorted(key))
        while hi < hashes.size and hashes[hi] == key:  # buckets hold one or a few keys
            hi += 1
        return self._keys[lo:hi].tolist()

    def getmany(self, *keys):
        return [self.get(k) for k in keys]

    def keys(self):
        self._merge()
        return np.unique(self._hashes).tolist()

    def remove(self, *keys, **kwargs):
        raise NotImplementedError("the dedup index is append-only")

    def remove_val(self, key, val, **kwargs):
        raise NotImplementedError("the dedup index is append-only")

    def size(self):
        self._merge()
        return int(np.unique(self._hashes).size)

    def itemcounts(self, **kwargs):
        self._merge()
        uniq, counts = np.unique(self._hashes, return_counts=True)
        return dict(zip(uniq.tolist(), counts.tolist()))

    def has_key(self, key):
        return bool(self.get(key))

    def nbytes(self) -> int:
        return (self._hashes.nbytes + self._keys.nbytes + self._new_hashes.itemsize * len(self._new_hashes)
                + self._new_keys.itemsize * len(self._new_keys))


class _KeyCounter(OrderedStorage):
    """Stands in for datasketch's key → band-hashes table, which only serves `remove` (never used here)."""

    def __init__(self, config=None):
        self.count = 0

    def insert(self, key, *vals, **kwargs):
        self.count += 1

    def keys(self):
        raise NotImplementedError("the dedup index does not keep its keys")

    def get(self, key):
        raise NotImplementedError("the dedup index does not keep its keys")

    def remove(self, *keys, **kwargs):
        raise NotImplementedError("the dedup index is append-only")

    def remove_val(self, key, val, **kwargs):
        raise NotImplementedError("the dedup index is append-only")

    def size(self):
        return self.count

    def itemcounts(self, **kwargs):
        raise NotImplementedError

    def has_key(self, key):
        return False


class CompactMinHashLSH(MinHashLSH):
    """`MinHashLSH` whose hash tables are `ArrayBucketStorage` (integer keys, no removal)."""

    def __init__(self, num_perm: int, params: tuple[int, int]):
        super().__init__(num_perm=num_perm, params=params, storage_config={"type": "dict"}, hashfunc=band_hash)
        self.hashtables = [ArrayBucketStorage() for _ in range(self.b)]
        self.keys = _KeyCounter()

    def nbytes(self) -> int:
        return sum(t.nbytes() for t in self.hashtables)


def banded_signatures(sigs: np.ndarray, cfg) -> np.ndarray:
    """The values the index bands, (docs, band_layouts * bands * rows): the first layout is the signature's
    first bands * rows values in order (FineWeb's banding); each further layout k = 1, 2, … takes them after
    a fixed shuffle (numpy seed k), so a pair whose matches are spread over every band of one cut can fill
    a band of another."""
    used = cfg.bands * cfg.rows
    layouts = [np.arange(used)] + [np.random.default_rng(k).permutation(cfg.num_perm)[:used]
                                   for k in range(1, cfg.band_layouts)]
    return np.ascontiguousarray(sigs[:, np.concatenate(layouts)])


def make_index(cfg) -> MinHashLSH:
    """The index `cfg.storage` names ("memory" or "redis") for `banded_signatures`: every layout's bands."""
    num_perm, params = cfg.index_shape()
    if cfg.storage == "memory":
        return CompactMinHashLSH(num_perm, params)
    # a fresh key prefix per run: stale buckets of an earlier run must never answer this run's queries
    basename = f"{cfg.redis.basename}:{uuid.uuid4().hex[:12]}".encode()
    storage = {"type": "redis", "basename": basename,
               "redis": {"host": cfg.redis.host, "port": cfg.redis.port, "db": cfg.redis.db}}
    lsh = MinHashLSH(num_perm=num_perm, params=params, storage_config=storage, hashfunc=band_digest)
    lsh.redis_basename = basename
    return lsh


def drop_index(lsh: MinHashLSH) -> int:
    """Delete a Redis-backed index's keys (its per-run basename); returns how many were removed."""
    basename = getattr(lsh, "redis_basename", None)
    if basename is None:
        return 0
    client = lsh.keys._redis
    keys = list(client.scan_iter(match=basename + b"*", count=1000))
    for lo in range(0, len(keys), 1000):
        client.delete(*keys[lo:lo + 1000])
    return len(keys)
