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
from pathlib import Path

from tqdm import tqdm

from tasks.atomic import atomic_dir
from tasks.config.fetch import SourceFetchConfig
from tasks.hashing import file_sha256

log = logging.getLogger("tinyfoundry.fetch")
SHARED_HINT = (
    "The default profile reads the real data in ../shared/data beside the project (web WARCs, Gutenberg books, "
    "eval files). Provide that folder, point this key at your own files, or set TINYFOUNDRY_MIRROR to a folder "
    "holding files of the same names."
)


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


def copy_tree(src: Path, dest: Path, patterns: list[str]) -> tuple[int, int]:
    """Copy a directory, skipping excluded paths (pruned at directory level). Returns (files, bytes)."""
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = Path(dirpath).relative_to(src).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not excluded(rel_dir + d + "/", patterns)
                             and not excluded(rel_dir + d, patterns))
        for name in sorted(filenames):
            rel = rel_dir + name
            source = Path(dirpath) / name
            if excluded(rel, patterns) or source.is_symlink() or not source.is_file():
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            files += 1
            size += target.stat().st_size
    return files, size


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
        raise FetchError(f"could not download {url}{where}: {e}") from e
    os.replace(tmp, dest_dir / name)
    stats["bytes"] += (dest_dir / name).stat().st_size
    stats["downloaded"] += 1


def clone(url: str, dest_dir: Path, cfg: SourceFetchConfig, stats: dict) -> None:
    name = Path(urllib.parse.urlparse(url).path).name.removesuffix(".git") or "repo"
    mirror = mirror_dir(cfg)
    if mirror and (mirror / name).is_dir():
        files, size = copy_tree(mirror / name, dest_dir / name, [".git/**", *cfg.exclude])
        stats.update(files=stats["files"] + files, bytes=stats["bytes"] + size, from_mirror=stats["from_mirror"] + 1)
        return
    result = subprocess.run(["git", "clone", "--depth", "1", "--quiet", url, str(dest_dir / name)],
                            capture_output=True, text=True, timeout=max(cfg.timeout_s, 300))
    if result.returncode != 0:
        raise FetchError(f"git clone of {url} failed: {result.stderr.strip()}")
    commit = subprocess.run(["git", "-C", str(dest_dir / name), "rev-parse", "HEAD"], capture_output=True, text=True)
    stats.setdefault("commits", {})[name] = commit.stdout.strip()
    shutil.rmtree(dest_dir / name / ".git")  # the commit is recorded; history is not data
    cloned = [p for p in (dest_dir / name).rglob("*") if p.is_file()]
    stats.update(files=stats["files"] + len(cloned), bytes=stats["bytes"] + sum(p.stat().st_size for p in cloned),
                 downloaded=stats["downloaded"] + 1)


def run_fetch(cfg: SourceFetchConfig, inputs: dict[str, Path], output: Path) -> dict:
    stats = {"uris": len(cfg.uris), "files": 0, "bytes": 0, "downloaded": 0, "from_mirror": 0}
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
                files, size = copy_tree(Path(raw), stage / name, cfg.exclude)
                stats["files"] += files
                stats["bytes"] += size
                log.info("copied %d files (%.1f MB) from %s", files, size / 1e6, raw)
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
