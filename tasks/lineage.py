"""`python -m tasks lineage models:/<name>@<alias|version> [--json]`: where a registered model came from.

model version (weights sha256, step, tokens) → its checkpoint run and train run (fingerprint, git commit, params)
→ the shard manifest it trained on → the dvc.lock entry (cmd, dep/out hashes, params) of every stage upstream of
train → the source URIs of the fetch stages and the hash of every file they fetched.

The upstream part is a snapshot the train stage logs to its MLflow run when it registers versions
(`lineage/lineage.json`, `snapshot` below), so the lineage of an old version survives later runs rewriting
dvc.lock; the command also says whether today's dvc.lock still matches it. File hashes are DVC's own (md5,
from the `.dir` listing of each fetch output in the DVC cache); `sources` in metrics/fetch_<source>.json says
which URI produced which top-level path.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import yaml

from tasks.hashing import file_sha256

log = logging.getLogger("tinyfoundry.lineage")

ARTIFACT = "lineage/lineage.json"
SHARD_MANIFEST = "manifest.json"


# ------------------------------------------------------------------------------ snapshot (at training time)


def _paths(entries: list[dict] | None) -> list[str]:
    return [e["path"] for e in entries or [] if isinstance(e, dict) and "path" in e]


def _overlaps(a: str, b: str) -> bool:
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def upstream_stages(lock: dict, dep_paths: list[str]) -> list[str]:
    """Names of the dvc.lock stages whose outputs `dep_paths` need, transitively, nearest first."""
    stages = lock.get("stages", {})
    order, todo, seen = [], list(dep_paths), set()
    while todo:
        path = todo.pop(0)
        for name, entry in stages.items():
            if name not in seen and any(_overlaps(path, out) for out in _paths(entry.get("outs"))):
                seen.add(name)
                order.append(name)
                todo += _paths(entry.get("deps"))
    return order


def dvc_dir_listing(root: Path, md5: str | None) -> list[dict] | None:
    """DVC's listing of a directory output ([{"relpath", "md5"}]) from the local cache, or None."""
    if not md5 or not md5.endswith(".dir"):
        return None
    for cache in (root / ".dvc" / "cache" / "files" / "md5", root / ".dvc" / "cache"):  # DVC 3, DVC 2 layouts
        path = cache / md5[:2] / md5[2:]
        if path.is_file():
            return json.loads(path.read_text())
    return None


def stage_deps(root: Path, stage: str) -> list[str]:
    """The deps dvc.yaml declares for `stage` (a plain stage, as train is)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text()).get("stages", {}).get(stage, {})
    return [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]


def snapshot(root: str | Path, stage: str = "train") -> dict:
    """What `stage` is about to be built from: dvc.lock entries of every stage upstream, the files fetched."""
    root = Path(root)
    lock_path = root / "dvc.lock"
    if not lock_path.exists() or not (root / "dvc.yaml").exists():
        return {"stage": stage, "note": f"no dvc.lock in {root}: {stage} did not run inside the DVC pipeline"}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    names = upstream_stages(lock, stage_deps(root, stage))
    entries = {n: lock["stages"][n] for n in names}
    fetched = {}
    for name, entry in entries.items():
        if not name.startswith("fetch@"):
            continue
        metrics = next((root / p for p in _paths(entry.get("outs")) if p.endswith(".json")), None)
        sources = json.loads(metrics.read_text()).get("sources") if metrics and metrics.exists() else None
        out = next((o for o in entry.get("outs", []) if str(o.get("md5", "")).endswith(".dir")), {})
        fetched[name] = {"out": out.get("path"), "md5": out.get("md5"), "sources": sources,
                         "files": dvc_dir_listing(root, out.get("md5"))}
    manifest = None
    for name in names:
        for out in _paths(entries[name].get("outs")):
            if (root / out / SHARD_MANIFEST).is_file():
                manifest = {"stage": name, "path": f"{out}/{SHARD_MANIFEST}",
                            "sha256": file_sha256(root / out / SHARD_MANIFEST)}
    return {"stage": stage, "dvc_lock_sha256": file_sha256(lock_path), "upstream": names, "dvc_lock": entries,
            "fetched": fetched, "shard_manifest": manifest}


def log_snapshot(root: str | Path, stage: str = "train") -> None:
    """Log the snapshot to the active MLflow run (the train stage's)."""
    import mlflow

    snap = snapshot(root, stage)
    if "note" in snap:
        log.warning("lineage: %s", snap["note"])
    mlflow.log_dict(snap, ARTIFACT)


# ------------------------------------------------------------------------------ the command


def _version_chain(client, name: str, ref: str) -> dict:
    from tasks.model_registry import SHA_TAG, STEP_TAG, model_id, resolve_version

    v = resolve_version(client, name, ref)
    ck_run = client.get_run(v.run_id) if v.run_id else None
    train_id = v.tags.get("train_run_id") or (ck_run.data.tags.get("mlflow.parentRunId") if ck_run else None)
    train = client.get_run(train_id) if train_id else None
    model = {"uri": f"models:/{name}@{ref}", "name": name, "version": int(v.version), "aliases": list(v.aliases or []),
             "checkpoint_sha256": v.tags.get(SHA_TAG), "step": v.tags.get(STEP_TAG),
             "tokens_seen": v.tags.get("tokens_seen"), "logged_model": model_id(v), "source": v.source,
             "checkpoint_run_id": v.run_id, "checkpoint_run_name": ck_run.info.run_name if ck_run else None}
    train_info = None
    if train is not None:
        train_info = {"run_id": train.info.run_id, "run_name": train.info.run_name, "status": train.info.status,
                      "start_time": train.info.start_time, "fingerprint": v.tags.get("run_fingerprint"),
                      "git_commit": v.tags.get("git_commit"), "tokenizer_sha256": v.tags.get("tokenizer_sha256"),
                      "params": dict(sorted(train.data.params.items()))}
    return {"model": model, "train_run": train_info, "shard_manifest_sha256": v.tags.get("shard_manifest_sha256")}


def _download_snapshot(client, run_id: str | None) -> dict | None:
    if not run_id:
        return None
    with tempfile.TemporaryDirectory(prefix="tinyfoundry-lineage-") as tmp:
        try:
            path = client.download_artifacts(run_id, ARTIFACT, tmp)
        except Exception as e:  # noqa: BLE001 -- versions registered before lineage snapshots existed
            log.warning("train run %s has no %s (%s)", run_id, ARTIFACT, e)
            return None
        return json.loads(Path(path).read_text())


def lineage(client, uri: str, root: str | Path = ".") -> dict:
    """The whole chain of one registered version, as a JSON-ready dict."""
    from tasks.model_registry import parse_model_uri

    name, ref = parse_model_uri(uri)
    chain = _version_chain(client, name, ref)
    snap = _download_snapshot(client, (chain["train_run"] or {}).get("run_id")) or {}
    on_version = chain.pop("shard_manifest_sha256")
    manifest = snap.get("shard_manifest") or {}
    chain["shard_manifest"] = {**manifest, "sha256_on_version": on_version,
                               "matches": bool(manifest) and manifest.get("sha256") == on_version}
    upstream = snap.get("upstream", [])
    chain["stages"] = [{"stage": n, **snap["dvc_lock"][n]} for n in upstream]
    chain["fetched"] = snap.get("fetched", {})
    lock = Path(root) / "dvc.lock"
    now = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    changed = [n for n in upstream if now.get(n) != snap["dvc_lock"][n]]
    chain["dvc_lock"] = {"sha256_at_training": snap.get("dvc_lock_sha256"), "path": str(lock.resolve()),
                         "upstream_changed_since": changed if lock.exists() else None}
    if not snap or "note" in snap:
        chain["note"] = snap.get("note", "no lineage snapshot on the train run: only the registry part is known")
    return chain


def _short(h: str | None, n: int = 12) -> str:
    return f"{h[:n]}…" if h and len(h) > n else str(h)


def _hashes(entries: list[dict] | None) -> str:
    return ", ".join(f"{e['path']} {_short(e.get('md5'))}" for e in entries or [] if "path" in e) or "–"


def render_text(chain: dict, max_files: int = 20) -> str:
    """The chain as indented text: one block per link."""
    m, t = chain["model"], chain.get("train_run")
    aliases = f" (aliases: {', '.join(m['aliases'])})" if m["aliases"] else ""
    out = [f"{m['uri']}",
           f"└─ version {m['version']} of {m['name']}{aliases}",
           f"   weights sha256 {m['checkpoint_sha256']}",
           f"   step {m['step']}, {m['tokens_seen']} tokens seen; logged model {m['logged_model']} in checkpoint run "
           f"{m['checkpoint_run_id']} ({m['checkpoint_run_name']})"]
    if t:
        out += [f"└─ train run {t['run_id']} ({t['run_name']}, {t['status']}): fingerprint {t['fingerprint']}, "
                f"git commit {t['git_commit']}", f"   tokenizer sha256 {t['tokenizer_sha256']}",
                "   params: " + ", ".join(f"{k}={v}" for k, v in t["params"].items() if not k.startswith("model.")
                                          or k in ("model.preset",))]
    sm = chain.get("shard_manifest") or {}
    out.append(f"└─ shard manifest {sm.get('path', '?')} sha256 {sm.get('sha256_on_version')} "
               f"({'matches the snapshot' if sm.get('matches') else 'NOT CONFIRMED by a lineage snapshot'})")
    lock = chain.get("dvc_lock") or {}
    changed = lock.get("upstream_changed_since")
    status = ("unchanged in today's dvc.lock" if changed == [] else
              f"changed since in today's dvc.lock: {', '.join(changed)}" if changed else "no dvc.lock here to compare")
    out.append(f"└─ upstream stages (dvc.lock at training time, sha256 {_short(lock.get('sha256_at_training'))}; "
               f"{status})")
    for st in chain.get("stages", []):
        params = {k: v for f in (st.get("params") or {}).values() for k, v in f.items()}
        out += [f"   {st['stage']}: {st.get('cmd', '')}",
                f"      outs: {_hashes(st.get('outs'))}",
                f"      deps: {_hashes(st.get('deps'))}",
                f"      params: {json.dumps(params, sort_keys=True, default=str)}"]
    if chain.get("fetched"):
        out.append("└─ fetched files (md5 from the DVC cache)")
    for name, f in chain.get("fetched", {}).items():
        files = f.get("files") or []
        out.append(f"   {name}: {f.get('out')} {_short(f.get('md5'))} ({len(files)} files)")
        by_top: dict[str, list[dict]] = {}
        for entry in files:
            by_top.setdefault(entry["relpath"].split("/")[0], []).append(entry)
        for src in f.get("sources") or [{"uri": "(unknown URI)", "paths": sorted(by_top)}]:
            out.append(f"      {src['uri']}")
            shown = 0
            for top in src.get("paths", []):
                for entry in by_top.get(top, []):
                    if shown < max_files:
                        out.append(f"         {entry['relpath']}  md5 {entry['md5']}")
                    shown += 1
            if shown > max_files:
                out.append(f"         ... {shown - max_files} more files (all in --json)")
        if f.get("files") is None:
            out.append("      (the DVC cache holds no listing of this output here: `dvc pull` it for file hashes)")
    if chain.get("note"):
        out.append(f"note: {chain['note']}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks lineage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="models:/<name>@<alias|version> or models:/<name>/<version>")
    parser.add_argument("--json", action="store_true", help="print the chain as JSON")
    parser.add_argument("--params", default=os.environ.get("TINYFOUNDRY_PARAMS", "params.yaml"))
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout/stderr stay the chain only
    from mlflow import MlflowClient

    from tasks.config import load_config
    from tasks.tracking import setup

    cfg = load_config(args.params)
    setup(cfg.tracking.experiment, cfg.tracking.tracking_uri)
    chain = lineage(MlflowClient(), args.model, Path(args.params).resolve().parent)
    sys.stdout.write(json.dumps(chain, indent=2, sort_keys=True, default=str) + "\n" if args.json else render_text(chain))
    return 0
