"""fetch: bring one source's raw files into data/raw/<source>, offline when a mirror holds them.

Each URI is a local file, glob or directory, an http(s) URL, or a git URL. Before any download the
offline mirror (env TINYFOUNDRY_MIRROR, else `fetch.mirror`) is searched by file name, so a run needs
no internet when the mirror is filled. Directories are copied as one subfolder each (code trees);
files land flat. `{stdlib}` expands to this Python's standard library source tree.
"""
from __future__ import annotations

import fnmatch
import glob
import logging
import os
import shutil
import subprocess
import sysconfig
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from tasks.atomic import atomic_dir
from tasks.config.fetch import SourceFetchConfig
from tasks.hashing import file_sha256
from tasks.redact import redact

log = logging.getLogger("tinyfoundry.fetch")
SHARED_HINT = (
    "The default profile reads the real data in ../shared/data beside the project (web WARCs, Gutenberg books, "
    "eval files). Provide that folder, point this key at your own files, or set TINYFOUNDRY_MIRROR to a folder "
    "holding files of the same names."
)


REJECT_WHY = {"symlink": "links are not followed out of a fetched tree",
              "not_regular_file": "fifos, sockets and devices are not data",
              "unreadable": "permission denied or I/O error"}


class FetchError(RuntimeError):
    pass


def expand(uri: str) -> str:
    return uri.replace("{stdlib}", sysconfig.get_paths()["stdlib"])


def is_git(uri: str) -> bool:
    return uri.endswith(".git") or uri.startswith(("git@", "git://"))


def mirror_dir(cfg: SourceFetchConfig) -> Path | None:
    mirror = os.environ.get("TINYFOUNDRY_MIRROR") or cfg.mirror
    return Path(mirror) if mirror else None


def excluded(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel + "/", p) for p in patterns)


@dataclass
class Copied:
    """What `copy_tree` copied, and what it refused: reason → paths relative to the copied tree."""

    files: int = 0
    bytes: int = 0
    rejects: dict[str, list[str]] = field(default_factory=dict)

    def reject(self, rel: str, reason: str, detail: str = "") -> None:
        self.rejects.setdefault(reason, []).append(f"{rel} ({detail})" if detail else rel)


def copy_tree(src: Path, dest: Path, patterns: list[str]) -> Copied:
    """Copy a directory, skipping excluded paths (pruned at directory level).

    Only regular files inside the tree are copied. A symlink (to a file or a directory, inside the tree or out of
    it) is never followed: a repository's `setup.py -> ~/.aws/credentials` must not put that file in the corpus.
    Symlinks, other non-regular files and unreadable paths are rejects with a reason, counted and logged."""
    out = Copied()

    def unreadable(err: OSError) -> None:  # os.walk's report of a directory it cannot list
        rel = Path(err.filename).relative_to(src).as_posix() if err.filename else "?"
        out.reject(rel, "unreadable", err.strerror or type(err).__name__)

    for dirpath, dirnames, filenames in os.walk(src, onerror=unreadable):  # followlinks=False: links are not entered
        here = Path(dirpath)
        rel_dir = here.relative_to(src).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for d in sorted(dirnames):
            if excluded(rel_dir + d + "/", patterns) or excluded(rel_dir + d, patterns):
                continue
            if (here / d).is_symlink():
                out.reject(rel_dir + d, "symlink", f"-> {os.readlink(here / d)}")
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel, source = rel_dir + name, here / name
            if excluded(rel, patterns):
                continue
            if source.is_symlink():
                out.reject(rel, "symlink", f"-> {os.readlink(source)}")
                continue
            if not source.is_file():
                out.reject(rel, "not_regular_file")
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(source, target)
            except OSError as e:
                target.unlink(missing_ok=True)
                out.reject(rel, "unreadable", e.strerror or type(e).__name__)
                continue
            out.files += 1
            out.bytes += target.stat().st_size
    return out


def add_copied(stats: dict, copied: Copied, tree: str) -> None:
    """Fold one tree's copy into the stage stats; log each kind of reject with a few examples."""
    stats["files"] += copied.files
    stats["bytes"] += copied.bytes
    rejects = stats.setdefault("rejects", {})
    examples = stats.setdefault("rejected_paths", [])
    for reason, paths in sorted(copied.rejects.items()):
        rejects[reason] = rejects.get(reason, 0) + len(paths)
        examples += [{"path": f"{tree}/{p}", "reason": reason} for p in paths[:max(0, 100 - len(examples))]]
        log.warning("%s: skipped %d %s path(s) (%s), e.g. %s", tree, len(paths), reason, REJECT_WHY[reason],
                    ", ".join(paths[:3]))


def place_file(src: Path, dest_dir: Path) -> int:
    target = dest_dir / src.name
    if target.exists():
        if file_sha256(target) == file_sha256(src):
            return 0  # the same file reached through two URIs
        raise FetchError(f"two different files are both named {src.name}; rename one or fetch them as separate sources")
    shutil.copyfile(src, target)
    return target.stat().st_size


def download(url: str, dest_dir: Path, cfg: SourceFetchConfig, stats: dict) -> None:
    name = Path(urllib.parse.urlparse(url).path).name or "index.html"
    mirror = mirror_dir(cfg)
    if mirror and (mirror / name).is_file():
        stats["bytes"] += place_file(mirror / name, dest_dir)
        stats["from_mirror"] += 1
        log.info("%s: taken from the offline mirror %s", name, mirror)
        return
    tmp = dest_dir / f".{name}.download"
    try:
        with urllib.request.urlopen(url, timeout=cfg.timeout_s) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        where = f" (and not in the mirror {mirror})" if mirror else " (no offline mirror set: TINYFOUNDRY_MIRROR)"
        raise FetchError(f"could not download {redact(url)}{where}: {redact(str(e))}") from e
    os.replace(tmp, dest_dir / name)
    stats["bytes"] += (dest_dir / name).stat().st_size
    stats["downloaded"] += 1


def clone(url: str, dest_dir: Path, cfg: SourceFetchConfig, stats: dict) -> None:
    """Shallow clone into a scratch folder, then copy_tree into place: the same exclusions, and the repository's
    symlinks are rejects (git checks them out as links that could point anywhere)."""
    name = Path(urllib.parse.urlparse(url).path).name.removesuffix(".git") or "repo"
    mirror = mirror_dir(cfg)
    if mirror and (mirror / name).is_dir():
        add_copied(stats, copy_tree(mirror / name, dest_dir / name, [".git/**", *cfg.exclude]), name)
        stats["from_mirror"] += 1
        return
    scratch = dest_dir / f".clone-{name}"
    try:
        result = subprocess.run(["git", "clone", "--depth", "1", "--quiet", url, str(scratch)],
                                capture_output=True, text=True, timeout=max(cfg.timeout_s, 300))
        if result.returncode != 0:
            raise FetchError(f"git clone of {redact(url)} failed: {redact(result.stderr.strip())}")
        commit = subprocess.run(["git", "-C", str(scratch), "rev-parse", "HEAD"], capture_output=True, text=True)
        stats.setdefault("commits", {})[name] = commit.stdout.strip()  # the commit is recorded; history is not data
        add_copied(stats, copy_tree(scratch, dest_dir / name, [".git/**", *cfg.exclude]), name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stats["downloaded"] += 1


def run_fetch(cfg: SourceFetchConfig, inputs: dict[str, Path], output: Path) -> dict:
    stats = {"uris": len(cfg.uris), "files": 0, "bytes": 0, "downloaded": 0, "from_mirror": 0, "rejects": {},
             "rejected_paths": []}
    # which top-level paths of the output each URI produced (the lineage command maps DVC's file hashes to URIs)
    sources: list[dict] = []
    with atomic_dir(output, resume=False) as stage:
        for uri in tqdm(cfg.uris, desc=f"fetch {output.name}", unit="uri", disable=len(cfg.uris) < 2):
            raw = expand(uri)
            scheme = urllib.parse.urlparse(raw).scheme
            before = {p.name for p in stage.iterdir()}
            if is_git(raw) or (scheme in ("http", "https") and raw.rstrip("/").endswith(".git")):
                clone(raw, stage, cfg, stats)
            elif scheme in ("http", "https"):
                download(raw, stage, cfg, stats)
                stats["files"] += 1
            elif Path(raw).is_dir():
                whole_stdlib = uri.rstrip("/") == "{stdlib}"
                name = f"python{sysconfig.get_python_version()}-stdlib" if whole_stdlib else Path(raw).resolve().name
                copied = copy_tree(Path(raw), stage / name, cfg.exclude)
                add_copied(stats, copied, name)
                log.info("copied %d files (%.1f MB) from %s", copied.files, copied.bytes / 1e6, raw)
            else:
                matches = sorted(Path(p) for p in glob.glob(raw, recursive=True) if Path(p).is_file())
                if not matches:
                    mirror = mirror_dir(cfg)
                    if mirror and (mirror / Path(raw).name).is_file():
                        matches = [mirror / Path(raw).name]
                    else:
                        raise FetchError(f"fetch.{output.name}.uris: {uri!r} matched no file. {SHARED_HINT}")
                for path in matches:
                    stats["bytes"] += place_file(path, stage)
                    stats["files"] += 1
                log.info("copied %d files matching %s", len(matches), uri)
                before -= {p.name for p in matches}  # the same file reached through two URIs counts for both
            sources.append({"uri": uri, "paths": sorted({p.name for p in stage.iterdir()} - before)})
    if stats["files"] == 0:
        raise FetchError(f"fetch.{output.name}: no files were fetched from {cfg.uris}. {SHARED_HINT}")
    return {**stats, "sources": sources}
