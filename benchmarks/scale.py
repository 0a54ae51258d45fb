"""How each data stage's time and memory grow with its input, and what 2 workers buy on 2 cores.

Every data stage (ingest web/books/code, dedup with both engines, filter, tokenizer, mix, shard) runs as
`python -m tasks <stage>` (the command dvc.yaml runs) on 1×, 4× and 16× of a real slice of ../shared/data
(add 64× with `--scales 1 4 16 64`); each stage reads the previous stage's output at the same scale. Per
stage and scale it prints wall and CPU seconds (the process tree's user+system time: the figure that holds on
a shared, loaded machine), documents in, docs per wall and per CPU second, peak RSS of the process tree
(sampled every 0.1 s, all processes summed), and the growth exponents b of cost ∝ scale^b, fitted over all
scales and between the two largest (where fixed start-up costs weigh least).

The slice is the tiny profile's (2 WARCs, 3 Gutenberg books, 4 stdlib modules). Scale k adds k-1 "ciphered"
copies of it: in copy c every lower-case ASCII word of 4+ letters, except function words and Python keywords,
is replaced through a permutation (seeded by c) of the slice's own words of the same length. Bytes are
rewritten in place, so HTML tags, entities, Gutenberg markers, line lengths, punctuation and function words
stay as they were and every stage does the same work per document; the content words differ, so copies share
few word 5-grams and are not near duplicates of each other (the dedup column "removed" stays 0: the slice
has no duplicates). WARC records get new record ids and a `#copy-c` URL; HTTP bodies are rewritten whole.

The filter keeps what passes its heuristics (`filter.web.min_quality_score: 0`; the classifier is still
trained and scores every document): its verdicts on ciphered text would otherwise change how many documents
later stages get from one scale to the next.

Then, at the largest scale, the parallel stages run with 1 and with 2 workers (same tasks, so identical
outputs; in the order 1, 2, 2, 1, best of two each): the speed-up column is wall(1 worker) / wall(2 workers),
meaningful only on an otherwise idle machine. A last run with 16 tasks and `workers: auto` shows the CPU
cost of smaller tasks (what a machine with more cores needs to use them all).

    python benchmarks/scale.py [--scales 1 4 16] [--keep DIR] 2>/dev/null
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import keyword
import math
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("TINYFOUNDRY_SHARED_DATA", ROOT.parent / "shared" / "data"))
WARCS = ["CC-MAIN-20200808165417-20200808195417-00395.sample.warc.gz", "debian-reference.warc.gz"]
BOOKS = ["pg11.txt.gz", "pg35.txt.gz", "pg21937.txt.gz"]
CODE = ["json", "email", "textwrap.py", "heapq.py"]
KEEP = set(keyword.kwlist) | set(
    "that with have this from they will would there their what about which when make like time just know take into "
    "year your good some could them than then look only come over think also back after work first well even want "
    "because these give most were been said each does must shall upon such very much many more other self none true "
    "false return print".split())
WORD = re.compile(rb"(?<![&#\w])[a-z]{4,}(?!\w)")


# --------------------------------------------------------------------------------------------- scaled input

class Cipher:
    """Copy c: each content word → another of the same length, by a permutation seeded by c (copy 0: as is)."""

    def __init__(self, texts: list[bytes]):
        self.by_length: dict[int, list[bytes]] = {}
        for w in sorted({w for t in texts for w in WORD.findall(t)} - {k.encode() for k in KEEP}):
            self.by_length.setdefault(len(w), []).append(w)
        self._maps: dict[int, dict[bytes, bytes]] = {}

    def mapping(self, copy: int) -> dict[bytes, bytes]:
        if copy not in self._maps:
            out = {}
            for n, words in self.by_length.items():
                shuffled = words[:]
                random.Random(copy * 1009 + n).shuffle(shuffled)
                out.update(zip(words, shuffled))
            self._maps[copy] = out
        return self._maps[copy]

    def __call__(self, data: bytes, copy: int) -> bytes:
        if copy == 0:
            return data
        m = self.mapping(copy)
        return WORD.sub(lambda w: m.get(w.group(0), w.group(0)), data)


def warc_payloads(path: Path) -> list[bytes]:
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as f:
        return [r.content_stream().read() for r in ArchiveIterator(f) if r.rec_type == "response"]


def copy_warc(src: Path, dst: Path, cipher: Cipher, copy: int) -> None:
    from warcio.archiveiterator import ArchiveIterator
    from warcio.warcwriter import WARCWriter

    with open(src, "rb") as f, open(dst, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for i, r in enumerate(ArchiveIterator(f)):
            uri = r.rec_headers.get_header("WARC-Target-URI") or ""
            headers = {k: v for k, v in r.rec_headers.headers if k not in ("WARC-Record-ID", "Content-Length",
                                                                            "WARC-Block-Digest", "WARC-Payload-Digest")}
            headers["WARC-Record-ID"] = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{src.name}/{i}/{copy}')}>"
            if uri:
                headers["WARC-Target-URI"] = uri.rstrip(">") + (f"#copy-{copy}" + (">" if uri.endswith(">") else "")
                                                                 if copy else "")
            http = r.http_headers
            if r.rec_type == "response" and http is not None:
                body = cipher(r.content_stream().read(), copy)
                for h in ("Transfer-Encoding", "Content-Encoding", "Content-Length"):
                    http.remove_header(h)
                http.add_header("Content-Length", str(len(body)))
                rec = writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=http,
                                                warc_headers_dict=headers)
            else:
                rec = writer.create_warc_record(uri, r.rec_type, payload=io.BytesIO(r.content_stream().read()),
                                                http_headers=http, warc_headers_dict=headers)
            writer.write_record(rec)


def build_inputs(root: Path, scale: int, cipher: Cipher) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    (root / "web").mkdir(parents=True)
    (root / "books").mkdir()
    for c in range(scale):
        for name in WARCS:
            copy_warc(SHARED / "web" / name, root / "web" / f"c{c:03d}-{name}", cipher, c)
        for name in BOOKS:
            text = gzip.decompress((SHARED / "books" / name).read_bytes())
            (root / "books" / f"{name.split('.')[0]}-c{c:03d}.txt.gz").write_bytes(gzip.compress(cipher(text, c), mtime=0))
        for name in CODE:
            for src in ([stdlib / name] if name.endswith(".py") else sorted((stdlib / name).rglob("*.py"))):
                if "test" in src.relative_to(stdlib).parts or "__pycache__" in src.parts:
                    continue
                dst = root / "code" / f"c{c:03d}" / src.relative_to(stdlib)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(cipher(src.read_bytes(), c))


def base_texts() -> list[bytes]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p for name in WARCS for p in warc_payloads(SHARED / "web" / name)]
    texts += [gzip.decompress((SHARED / "books" / n).read_bytes()) for n in BOOKS]
    texts += [p.read_bytes() for n in CODE for p in ([stdlib / n] if n.endswith(".py") else (stdlib / n).rglob("*.py"))]
    return texts


# ------------------------------------------------------------------------------------------------- stages

def params_file(folder: Path, workers: int | str, processes: int | str, engine: str = "native",
                tasks: int = 2) -> Path:
    from tasks.config import deep_merge, read_yaml

    data = deep_merge(read_yaml(ROOT / "params.yaml"), read_yaml(ROOT / "profiles" / "tiny.yaml"))
    executor = {"kind": "local", "tasks": tasks, "workers": workers}
    # the filter keeps what passes its heuristics: the classifier's verdicts on ciphered text would change how
    # many documents later stages get from one scale to the next (at 4x it dropped every web page)
    data = deep_merge(data, {"ingest": {"executor": executor},
                             "filter": {"executor": executor, "web": {"min_quality_score": 0.0}},
                             "dedup": {"processes": processes, "engine": engine, "executor": executor,
                                       **({"band_layouts": 1} if engine == "datatrove" else {})}})
    path = folder / f"params-{engine}-{tasks}-{workers}-{processes}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stage_commands(data: Path, inputs: Path) -> list[tuple[str, list[str], Path]]:
    """(label, CLI arguments, folder whose documents the stage reads) in pipeline order."""
    return [
        ("ingest web", ["ingest", "web", "--in", f"raw={inputs / 'web'}", "--out", str(data / "ingest" / "web")], None),
        ("ingest books", ["ingest", "books", "--in", f"raw={inputs / 'books'}", "--out", str(data / "ingest" / "books")],
         None),
        ("ingest code", ["ingest", "code", "--in", f"raw={inputs / 'code'}", "--out", str(data / "ingest" / "code")],
         None),
        ("dedup", ["dedup", *[a for s in ("web", "books", "code") for a in ("--in", f"{s}={data / 'ingest' / s}")],
                   "--out", str(data / "dedup")], data / "ingest"),
        ("filter", ["filter", "--in", f"docs={data / 'dedup'}", "--out", str(data / "filter")], data / "dedup"),
        ("tokenizer", ["tokenizer", "--in", f"docs={data / 'filter'}", "--out", str(data / "tokenizer")],
         data / "filter"),
        ("mix", ["mix", "--in", f"docs={data / 'filter'}", "--in", f"tokenizer={data / 'tokenizer'}", "--out",
                 str(data / "mix")], data / "filter"),
        ("shard", ["shard", "--in", f"docs={data / 'mix'}", "--in", f"tokenizer={data / 'tokenizer'}", "--out",
                   str(data / "shards")], data / "mix"),
    ]


def count_docs(folder: Path) -> int:
    from tasks.docs import doc_files

    subs = [folder] if (folder / "docs").is_dir() else sorted(p for p in folder.iterdir() if p.is_dir())
    return sum(1 for sub in subs for path in doc_files(sub) for line in gzip.open(path, "rb") if line.strip())


def tree_sample(pid: int, cpu: dict[int, float]) -> int:
    """RSS of the process tree under `pid`, summed; records each process's own user+system CPU in `cpu`."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            with p.oneshot():
                total += p.memory_info().rss
                t = p.cpu_times()
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
        except psutil.NoSuchProcess:
            pass
    return total


def run_stage(args: list[str], params: Path, metrics: Path, cwd: Path) -> dict:
    """Run one stage's CLI; wall time, CPU time of its whole process tree (datatrove's pool workers and
    extraction sandboxes are not always reaped by the CLI process, so rusage alone misses them: each process
    is sampled every 0.1 s, a process's last <0.1 s before it exits can be missed) and summed peak RSS."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TINYFOUNDRY_FLOW_RUN": "benchmark", "TINYFOUNDRY_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tasks", *args, "--params", str(params), "--metrics", str(metrics)],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, cpu = [0], {}

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_sample(proc.pid, cpu))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"python -m tasks {' '.join(args)} failed:\n{err.decode()[-3000:]}")
    # the CLI process itself exactly (rusage, reaped), every other process of its tree as last sampled
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu_total = max(own, cpu.pop(proc.pid, 0.0) + sum(cpu.values()))
    return {"wall": wall, "cpu": cpu_total, "rss_mb": peak[0] / 2**20, "metrics": json.loads(metrics.read_text())}


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y = a + b·x."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    parser.add_argument("--skip-workers", action="store_true", help="skip the 1- vs 2-worker comparison")
    parser.add_argument("--workers-only", action="store_true",
                        help="only the worker comparison, on the largest scale's data already in --keep")
    args = parser.parse_args()
    if not (SHARED / "web").is_dir():
        sys.exit(f"needs the shared data at {SHARED}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="tinyfoundry-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.workers_only:
        print_workers(work, args.scales[-1])
        return
    cipher = Cipher(base_texts())
    params = params_file(work, 2, 2)
    rows: dict[str, dict[int, dict]] = {}
    try:
        for scale in args.scales:
            inputs, data = work / f"x{scale}" / "input", work / f"x{scale}" / "data"
            shutil.rmtree(work / f"x{scale}", ignore_errors=True)
            build_inputs(inputs, scale, cipher)
            for label, cli, source in stage_commands(data, inputs):
                engines = [("", params)] + ([(" (datatrove)", params_file(work, 2, 2, "datatrove"))]
                                            if label == "dedup" else [])
                for suffix, p in engines:
                    cli_run = cli if not suffix else [*cli[:-1], str(data / "dedup-datatrove")]
                    r = run_stage(cli_run, p, work / "metrics.json", work)
                    m = r["metrics"]
                    r["docs"] = m["docs_in"] if label.startswith("ingest") else count_docs(source)
                    r["removed"] = m.get("exact_dups", 0) + m.get("near_dups", 0) if label == "dedup" else None
                    rows.setdefault(label + suffix, {})[scale] = r
                    print(f"  {scale:>3}x {label + suffix:<18} {r['wall']:7.1f} s wall {r['cpu']:7.1f} s CPU "
                          f"{r['docs']:>7} docs {r['rss_mb']:7.0f} MB", file=sys.stderr, flush=True)
        print_scaling(rows, args.scales)
        if not args.skip_workers:
            print_workers(work, args.scales[-1])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def print_scaling(rows: dict[str, dict[int, dict]], scales: list[int]) -> None:
    print(f"\n## Scaling: {', '.join(f'{s}x' for s in scales)} of the tiny profile's slice (2 tasks, 2 workers; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end)\n")
    print("| stage | scale | docs in | wall s | CPU s | docs/s (wall) | docs/s (CPU) | peak RSS MB | removed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, by_scale in rows.items():
        for s in scales:
            r = by_scale[s]
            print(f"| {label} | {s}x | {r['docs']} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['docs'] / r['wall']:.0f} | "
                  f"{r['docs'] / max(r['cpu'], 1e-9):.0f} | {r['rss_mb']:.0f} | "
                  f"{'' if r['removed'] is None else r['removed']} |")
    print("\nGrowth exponent b (cost ∝ scale^b; 1 = linear): fitted over all scales / between the two largest.\n")
    print("| stage | CPU time | wall time | peak RSS |")
    print("|---|---:|---:|---:|")
    last = scales[-2:]
    for label, by_scale in rows.items():
        cols = []
        for key in ("cpu", "wall", "rss_mb"):
            fit = exponent(scales, [by_scale[s][key] for s in scales])
            tail = exponent(last, [by_scale[s][key] for s in last])
            cols.append(f"{fit:.2f} / {tail:.2f}")
        print(f"| {label} | {' | '.join(cols)} |")
    print("\nCost = fixed + per document (least squares over the scales): the fixed part is start-up (imports, "
          "worker processes, models), the per-document part is what grows.\n")
    print("| stage | fixed CPU s | CPU ms/doc | marginal docs/CPU-s | fixed RSS MB | RSS KB/doc |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, by_scale in rows.items():
        docs = [by_scale[s]["docs"] for s in scales]
        a_cpu, b_cpu = linear_fit(docs, [by_scale[s]["cpu"] for s in scales])
        a_rss, b_rss = linear_fit(docs, [by_scale[s]["rss_mb"] for s in scales])
        print(f"| {label} | {a_cpu:.1f} | {b_cpu * 1000:.1f} | {1 / b_cpu if b_cpu > 0 else float('inf'):.0f} | "
              f"{a_rss:.0f} | {b_rss * 1024:.1f} |")


def print_workers(work: Path, scale: int) -> None:
    """1 vs 2 workers on the same 2 tasks (identical outputs), and 16 tasks with `workers: auto` (what a
    machine with more cores would use; here it shows the cost of the smaller tasks on 2 cores)."""
    data, inputs = work / f"x{scale}" / "data", work / f"x{scale}" / "input"
    cmds = {label: cli for label, cli, _ in stage_commands(data, inputs)}
    out = work / "workers"
    out.mkdir(exist_ok=True)
    print(f"\n## Parallelism at {scale}x on {os.cpu_count()} cores: 1 vs 2 workers (2 tasks either way; dedup: "
          f"`processes`; best of two runs each), and 16 tasks with `workers: auto` (load average "
          f"{os.getloadavg()[0]:.1f} at the start)\n")
    print("| stage | wall s, 1 worker | wall s, 2 workers | speed-up | CPU s, 1 | CPU s, 2 | wall s, 16 tasks auto | "
          "CPU s, 16 tasks auto |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label in ("ingest web", "dedup", "filter"):
        runs: dict = {}
        # 1, 2, 2, 1 workers, best of two each: load from other work drifts between runs on a shared machine
        for key, params in ((1, params_file(work, 1, 1)), (2, params_file(work, 2, 2)),
                            (2, params_file(work, 2, 2)), (1, params_file(work, 1, 1)),
                            ("auto", params_file(work, "auto", "auto", tasks=16))):
            cli = [*cmds[label][:-1], str(out / f"{label.replace(' ', '-')}-{key}")]
            r = run_stage(cli, params, work / "metrics.json", work)
            runs.setdefault(key, []).append(r)
            print(f"  {scale:>3}x {label:<12} workers {key}: {r['wall']:.1f} s wall {r['cpu']:.1f} s CPU",
                  file=sys.stderr, flush=True)
        res = {key: min(rs, key=lambda r: r["wall"]) for key, rs in runs.items()}
        print(f"| {label} | {res[1]['wall']:.1f} | {res[2]['wall']:.1f} | {res[1]['wall'] / res[2]['wall']:.2f}x | "
              f"{res[1]['cpu']:.1f} | {res[2]['cpu']:.1f} | {res['auto']['wall']:.1f} | {res['auto']['cpu']:.1f} |")


if __name__ == "__main__":
    main()
