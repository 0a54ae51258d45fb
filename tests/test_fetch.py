"""fetch: local paths, globs, directories, http(s) and git URIs; the offline mirror; clear errors."""
from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tasks.config.fetch import SourceFetchConfig
from tasks.fetch import FetchError, run_fetch


def cfg(*uris: str, **kw) -> SourceFetchConfig:
    return SourceFetchConfig(uris=list(uris), **kw)


@pytest.fixture
def http_server(tmp_path):
    """A static file server on 127.0.0.1 serving tmp_path/site; stopped after the test."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_globs_and_files_are_copied_flat_with_counts(tmp_path, shared_data):
    out = tmp_path / "raw"
    stats = run_fetch(cfg(str(shared_data / "books" / "pg1*.txt.gz"), str(shared_data / "eval" / "*.lst")), {}, out)
    expected = sorted(p.name for p in (shared_data / "books").glob("pg1*.txt.gz")) + ["piqa_valid-labels.lst"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert stats["files"] == len(expected)
    assert stats["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    assert (out / "pg11.txt.gz").read_bytes() == (shared_data / "books" / "pg11.txt.gz").read_bytes()


def test_directories_become_one_subfolder_each_and_exclusions_prune(tmp_path):
    tree = tmp_path / "repo"
    (tree / "pkg" / "__pycache__").mkdir(parents=True)
    (tree / "pkg" / "mod.py").write_text("x = 1\n")
    (tree / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (tree / "site-packages" / "dep").mkdir(parents=True)
    (tree / "site-packages" / "dep" / "big.py").write_text("y = 2\n")
    stats = run_fetch(cfg(str(tree), exclude=["site-packages/**", "**/__pycache__/**"]), {}, tmp_path / "raw")
    files = sorted(p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*") if p.is_file())
    assert files == ["repo/pkg/mod.py"] and stats["files"] == 1


def test_stdlib_placeholder_fetches_this_pythons_source(tmp_path):
    stats = run_fetch(cfg("{stdlib}/json"), {}, tmp_path / "raw")
    assert (tmp_path / "raw" / "json" / "decoder.py").is_file() and stats["files"] >= 4


def test_http_download_and_offline_mirror(tmp_path, http_server, monkeypatch):
    site, url = http_server
    (site / "corpus.warc.gz").write_bytes(b"served over http")
    stats = run_fetch(cfg(f"{url}/corpus.warc.gz"), {}, tmp_path / "downloaded")
    assert (tmp_path / "downloaded" / "corpus.warc.gz").read_bytes() == b"served over http"
    assert stats["downloaded"] == 1 and stats["from_mirror"] == 0

    # the mirror is searched by file name first: no request reaches the (now unreachable) host
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "corpus.warc.gz").write_bytes(b"from the mirror")
    monkeypatch.setenv("TINYFOUNDRY_MIRROR", str(mirror))
    stats = run_fetch(cfg("http://127.0.0.1:9/corpus.warc.gz", timeout_s=2), {}, tmp_path / "mirrored")
    assert (tmp_path / "mirrored" / "corpus.warc.gz").read_bytes() == b"from the mirror"
    assert stats["from_mirror"] == 1 and stats["downloaded"] == 0


def test_unreachable_url_without_mirror_names_the_url_and_the_remedy(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYFOUNDRY_MIRROR", raising=False)
    with pytest.raises(FetchError, match=r"could not download http://127.0.0.1:9/x.warc.gz .*TINYFOUNDRY_MIRROR"):
        run_fetch(cfg("http://127.0.0.1:9/x.warc.gz", timeout_s=2), {}, tmp_path / "raw")
    assert not (tmp_path / "raw").exists(), "a failed fetch leaves no partial output"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_url_is_cloned_shallowly_with_its_commit_recorded(tmp_path):
    origin = tmp_path / "tool.git"
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.c").write_text("int main(void) { return 0; }\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    run = functools.partial(subprocess.run, check=True, capture_output=True, env={**env, "PATH": "/usr/bin:/bin"})
    run(["git", "init", "-q", str(work)])
    run(["git", "-C", str(work), "add", "."])
    run(["git", "-C", str(work), "commit", "-qm", "init"])
    run(["git", "clone", "-q", "--bare", str(work), str(origin)])
    stats = run_fetch(cfg(f"file://{origin}"), {}, tmp_path / "raw")
    assert (tmp_path / "raw" / "tool" / "main.c").is_file()
    assert not (tmp_path / "raw" / "tool" / ".git").exists()
    assert len(stats["commits"]["tool"]) == 40


def test_missing_shared_data_says_what_to_provide(tmp_path):
    with pytest.raises(FetchError, match=r"matched no file\. The default profile reads the real data in ../shared/data"):
        run_fetch(cfg(str(tmp_path / "nowhere" / "*.warc.gz")), {}, tmp_path / "web")


def test_same_name_different_content_is_an_error_not_a_silent_overwrite(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("one")
    (tmp_path / "b" / "x.txt").write_text("two")
    with pytest.raises(FetchError, match="two different files are both named x.txt"):
        run_fetch(cfg(str(tmp_path / "a" / "x.txt"), str(tmp_path / "b" / "x.txt")), {}, tmp_path / "raw")
