"""tasks/lineage.py: the snapshot the train stage logs (dvc.lock entries upstream of train, fetched files with
DVC's hashes, the URI behind each) and its rendering. The command itself runs on the real tiny pipeline in
tests/test_pipeline_e2e.py."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from tasks.lineage import render_text, snapshot, upstream_stages


def _entry(cmd, deps, outs, params=None):
    return {"cmd": cmd, "deps": [{"path": p, "md5": m} for p, m in deps], "params": params or {},
            "outs": [{"path": p, "md5": m} for p, m in outs]}


def fake_project(root: Path) -> Path:
    """fetch@web → ingest@web → shard → (train), plus fetch@eval which train does not read."""
    (root / "data" / "shards").mkdir(parents=True)
    (root / "data" / "shards" / "manifest.json").write_text('{"format": "tinyfoundry-shards-v1"}\n')
    (root / "metrics").mkdir()
    (root / "metrics" / "fetch_web.json").write_text(json.dumps(
        {"files": 2, "sources": [{"uri": "../shared/data/web/*.warc.gz", "paths": ["a.warc.gz", "b.warc.gz"]}]}))
    listing = [{"md5": "11" * 16, "relpath": "a.warc.gz"}, {"md5": "22" * 16, "relpath": "b.warc.gz"}]
    blob = json.dumps(listing)
    dir_md5 = hashlib.md5(blob.encode()).hexdigest() + ".dir"
    cache = root / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2]
    cache.mkdir(parents=True)
    (cache / dir_md5[2:]).write_text(blob)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": "train", "deps": ["data/shards", "data/tokenizer", "tasks/train"], "outs": ["data/model"]}}}))
    lock = {"schema": "2.0", "stages": {
        "fetch@web": _entry("python -m tasks fetch web", [("tasks/fetch.py", "f1")],
                            [("data/raw/web", dir_md5), ("metrics/fetch_web.json", "m1")],
                            {"params.yaml": {"fetch.web": {"uris": ["../shared/data/web/*.warc.gz"]}}}),
        "fetch@eval": _entry("python -m tasks fetch eval", [("tasks/fetch.py", "f1")], [("data/raw/eval", "e.dir")]),
        "ingest@web": _entry("python -m tasks ingest web", [("data/raw/web", dir_md5), ("tasks/ingest", "i1")],
                             [("data/ingest/web", "iw.dir")]),
        "shard": _entry("python -m tasks shard", [("data/ingest/web", "iw.dir")], [("data/shards", "sh.dir")],
                        {"params.yaml": {"shard": {"shard_tokens": 4194304}}}),
        "evaluate": _entry("python -m tasks evaluate", [("data/model", "dm.dir"), ("data/raw/eval", "e.dir")],
                           [("data/eval", "ev.dir")]),
    }}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    return root


def test_snapshot_follows_dvc_lock_upstream_of_train(tmp_path):
    root = fake_project(tmp_path)
    snap = snapshot(root)
    assert snap["upstream"] == ["shard", "ingest@web", "fetch@web"]  # nearest first; fetch@eval, evaluate left out
    assert snap["dvc_lock"]["shard"]["params"] == {"params.yaml": {"shard": {"shard_tokens": 4194304}}}
    fetched = snap["fetched"]["fetch@web"]
    assert fetched["out"] == "data/raw/web" and [f["relpath"] for f in fetched["files"]] == ["a.warc.gz", "b.warc.gz"]
    assert fetched["sources"] == [{"uri": "../shared/data/web/*.warc.gz", "paths": ["a.warc.gz", "b.warc.gz"]}]
    manifest = root / "data" / "shards" / "manifest.json"
    assert snap["shard_manifest"] == {"stage": "shard", "path": "data/shards/manifest.json",
                                      "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    assert upstream_stages({"stages": {}}, ["data/shards"]) == []
    assert "note" in snapshot(tmp_path / "elsewhere")  # no dvc.lock: said so, not a crash


def test_text_rendering_walks_the_chain_to_the_fetched_files(tmp_path):
    snap = snapshot(fake_project(tmp_path))
    chain = {"model": {"uri": "models:/m@champion", "name": "m", "version": 3, "aliases": ["champion"],
                       "checkpoint_sha256": "ab" * 32, "step": "750", "tokens_seen": "1536000", "logged_model": "m-1",
                       "checkpoint_run_id": "ck", "checkpoint_run_name": "checkpoint-step-000750"},
             "train_run": {"run_id": "tr", "run_name": "train", "status": "FINISHED", "fingerprint": "fp",
                           "git_commit": "c0ffee", "tokenizer_sha256": "t", "params": {"max_steps": "750"}},
             "shard_manifest": {**snap["shard_manifest"], "sha256_on_version": snap["shard_manifest"]["sha256"],
                                "matches": True},
             "stages": [{"stage": n, **snap["dvc_lock"][n]} for n in snap["upstream"]], "fetched": snap["fetched"],
             "dvc_lock": {"sha256_at_training": snap["dvc_lock_sha256"], "upstream_changed_since": []}}
    text = render_text(chain)
    order = ["version 3 of m (aliases: champion)", "train run tr", "shard manifest data/shards/manifest.json",
             "   shard: python -m tasks shard", "   fetch@web:", "../shared/data/web/*.warc.gz",
             "a.warc.gz  md5 " + "11" * 16]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions), text
    assert "matches the snapshot" in text and "unchanged in today's dvc.lock" in text
