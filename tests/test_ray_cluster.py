"""ingest and filter with `executor.kind: ray` against a real local Ray cluster (a head and a second worker
node, started with `ray start` on this machine): outputs byte-identical to the local executor's."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from clusters import missing, ray_cluster, ray_nodes_that_ran
from tasks.config.executor import ExecutorConfig
from tasks.config.filter import ClassifierConfig, FilterConfig
from tasks.config.ingest import BooksIngestConfig, WebIngestConfig
from tasks.docs import iter_docs, write_docs

WARCS = ["CC-MAIN-20200808165417-20200808195417-00395.sample.warc.gz", "dolma-sample-0000.warc.gz"]
BOOKS = ["pg11.txt.gz", "pg35.txt.gz", "pg21937.txt.gz", "pg17997.txt.gz"]
REFERENCE = ["pg1342.txt.gz", "pg16.txt.gz", "pg2701.txt.gz", "pg74.txt.gz", "pg84.txt.gz", "pg1661.txt.gz"]
LOCAL = ExecutorConfig(kind="local", tasks=2, workers=1)  # same 2 tasks (so the same outputs), in this process


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    try:
        import ray  # noqa: F401
    except ImportError:
        missing("Ray is not installed (a pinned dependency: make setup)")
    root = tmp_path_factory.mktemp("ray")
    with ray_cluster(root, nodes=2, cpus_per_node=1, memory_gb=2.0) as address:
        yield address, root


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _links(folder: Path, source: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        os.symlink(source / name, folder / name)
    return folder


@pytest.mark.slow
@pytest.mark.extended  # ~50 s with the cluster's start; make test has the Slurm cluster's ingest
@pytest.mark.needs_shared_data
def test_ingest_and_filter_on_a_real_ray_cluster_match_local(ray_address, shared_data, tmp_path, monkeypatch):
    import ray

    address, root = ray_address

    from tasks.filter import run_filter
    from tasks.ingest import run_ingest

    on_ray = ExecutorConfig(kind="ray", tasks=2, workers=2,
                            ray={"address": address, "cpus_per_task": 1, "mem_per_cpu_gb": 0.5})
    monkeypatch.chdir(tmp_path)  # relative paths, as dvc.yaml passes them; Ray workers start elsewhere
    web = _links(Path("raw/web"), shared_data / "web", WARCS)
    books = _links(Path("raw/books"), shared_data / "books", BOOKS)
    merged = Path("dedup/docs")
    for name, cfg_cls, raw in (("web", WebIngestConfig, web), ("books", BooksIngestConfig, books)):
        local_stats = run_ingest(cfg_cls(executor=LOCAL), {"raw": raw}, Path(f"local/{name}"))
        ray_stats = run_ingest(cfg_cls(executor=on_ray), {"raw": raw}, Path(f"ray/{name}"))
        assert local_stats == ray_stats and local_stats["docs_out"] > 0
        assert _tree(Path(f"local/{name}")) == _tree(Path(f"ray/{name}")), f"ingest {name}: outputs differ"
        write_docs(merged / f"{name}-00000.jsonl.gz", iter_docs(Path(f"local/{name}")))
    # both nodes ran datatrove tasks (each has one CPU and a task needs one)
    assert ray_nodes_that_ran(root, "RankWorker") == {n["NodeID"] for n in ray.nodes() if n["Alive"]}

    classifier = ClassifierConfig(epoch=5, max_examples_per_class=2000)
    reference = Path("raw/reference")  # the classifier's positives: other books than the ingested ones
    reference.mkdir(parents=True)
    for name in REFERENCE:
        shutil.copy(shared_data / "books" / name, reference / name)
    inputs = {"docs": merged.parent, "reference": reference}
    local_stats = run_filter(FilterConfig(executor=LOCAL, classifier=classifier), inputs, Path("local/filter"))
    ray_stats = run_filter(FilterConfig(executor=on_ray, classifier=classifier), inputs, Path("ray/filter"))
    assert local_stats == ray_stats and local_stats["docs_kept"] > 0 and local_stats["docs_rejected"] > 0
    assert _tree(Path("local/filter")) == _tree(Path("ray/filter")), "filter: outputs differ"
