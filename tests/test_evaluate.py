"""evaluate stage: benchmark files in their original formats → local lm-eval tasks; bits per byte; end to end."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch
from test_evaluate_fixtures import book_text, make_model_dir, train_tiktoken

from tasks.config.evaluate import BenchmarkTask, EvaluateConfig
from tasks.evaluate.benchmarks import LOAD_STATS, read_benchmark, render_task_yaml

# One real-looking row per original format (copied from the published files), plus the expected prompt pieces.
ROWS = {
    "lambada_openai": {"text": "In my palm is a clear stone , and inside it is a small ivory statuette . A guardian "
                               "angel . I look at him , feeling stunned . Like this is some sort of sign . But as I "
                               "stare at Harlin , his mouth curved in a confident grin , I do n't care about signs"},
    "hellaswag": {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
                  "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain",
                  "label": 3, "source_id": "activitynet~v_-JhWjGDPHMY",
                  "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                              "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
    "arc_easy": {"id": "Mercury_7175875", "answerKey": "C", "question": {
        "stem": "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most "
                "likely effect of this increase in rotation?",
        "choices": [{"text": "Planetary density will decrease.", "label": "A"},
                    {"text": "Planetary years will become longer.", "label": "B"},
                    {"text": "Planetary days will become shorter.", "label": "C"},
                    {"text": "Planetary gravity will become stronger.", "label": "D"}]}},
    "arc_challenge": {"id": "NYSEDREGENTS_2015_4_8", "answerKey": "4", "question": {
        "stem": "Which object is the best conductor of electricity?",
        "choices": [{"text": "a wax crayon", "label": "1"}, {"text": "a plastic spoon", "label": "2"},
                    {"text": "a rubber eraser", "label": "3"}, {"text": "an iron nail", "label": "4"}]}},
    "winogrande": {"qID": "3QHITW7OYO7Q6B6ISU2UMJB84ZLAQE-2", "option1": "Sarah", "option2": "Maria", "answer": "1",
                   "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases."},
    "openbookqa": {"id": "7-980", "answerKey": "D", "question": {
        "stem": "The sun is responsible for",
        "choices": [{"text": "puppies learning new tricks", "label": "A"},
                    {"text": "children growing up and getting old", "label": "B"},
                    {"text": "flowers wilting in a vase", "label": "C"},
                    {"text": "plants sprouting, blooming and wilting", "label": "D"}]}},
}
EXPECTED = {  # format → (doc_to_text, first choice, target) as the standard lm-eval task defines them
    "lambada_openai": (ROWS["lambada_openai"]["text"].rsplit(" ", 1)[0], None, " signs"),
    "hellaswag": ("Roof shingle removal: A man is sitting on a roof. He", "is using wrap to wrap a pair of skis.", 3),
    "arc_easy": ("Question: " + ROWS["arc_easy"]["question"]["stem"] + "\nAnswer:", "Planetary density will decrease.", 2),
    "arc_challenge": ("Question: Which object is the best conductor of electricity?\nAnswer:", "a wax crayon", 3),
    "winogrande": (0, "Sarah was a much better surgeon than Maria so Sarah", "always got the harder cases."),
    "openbookqa": ("The sun is responsible for", "puppies learning new tricks", 3),
}
# rows that must be skipped (and counted), one per format
BAD = {
    "lambada_openai": {"text": "oneword"},
    "hellaswag": {**ROWS["hellaswag"], "label": 7},
    "arc_easy": {**ROWS["arc_easy"], "answerKey": "E"},
    "arc_challenge": {"id": "x", "question": {"stem": "no choices"}, "answerKey": "A"},
    "winogrande": {**ROWS["winogrande"], "answer": ""},
    "openbookqa": {"id": "x", "answerKey": "A"},
}


def _write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    path.write_bytes(gzip.compress(lines.encode()) if gz else lines.encode())
    return path


def _local_task(tmp_path: Path, name: str, fmt: str, data: str, labels: str | None = None, limit: int | None = None):
    from lm_eval.tasks import TaskManager

    folder = tmp_path / f"tasks_{name}"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(render_task_yaml(name, fmt, data, labels, limit))
    return TaskManager(include_path=str(folder), include_defaults=False).load([name])["tasks"][name]


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_original_formats_become_the_standard_lm_eval_prompts(tmp_path, fmt):
    rows = [ROWS[fmt], "{truncated json", BAD[fmt], ROWS[fmt]]
    gz = fmt == "hellaswag"  # .gz is read transparently
    path = _write_jsonl(tmp_path / f"{fmt}.jsonl{'.gz' * gz}", rows, gz=gz)
    task = _local_task(tmp_path, f"my_{fmt}", fmt, str(path))
    assert LOAD_STATS[str(path)]["items"] == 2 and LOAD_STATS[str(path)]["skipped"] == 2
    docs = list(task.test_docs())
    assert len(docs) == 2
    text, first_choice, target = EXPECTED[fmt]
    assert task.doc_to_text(docs[0]) == text
    assert task.doc_to_target(docs[0]) == target
    if first_choice is not None:
        assert task.doc_to_choice(docs[0])[0] == first_choice
    assert {m["metric"] for m in task.config.metric_list} >= ({"acc"} if fmt in ("winogrande", "lambada_openai")
                                                                 else {"acc", "acc_norm"})


def test_shared_piqa_and_openbookqa_files_read_completely(shared_data):
    eval_dir = shared_data / "eval"
    piqa = read_benchmark("piqa", str(eval_dir / "piqa_valid.jsonl"), str(eval_dir / "piqa_valid-labels.lst"))
    obqa = read_benchmark("openbookqa", str(eval_dir / "openbookqa_main_test.jsonl"))
    assert len(piqa) == 1838 and len(obqa) == 500  # every line of the published files, none skipped
    assert {r["label"] for r in piqa} == {0, 1}
    assert all(len(r["choices"]["text"]) == 4 and r["answerKey"] in r["choices"]["label"] for r in obqa)
    first = json.loads((eval_dir / "openbookqa_main_test.jsonl").read_text().splitlines()[0])
    assert obqa[0]["question_stem"] == first["Question Stem"]
    assert all(f"({lab}) {txt}" in first["Choices"] for lab, txt in zip(obqa[0]["choices"]["label"], obqa[0]["choices"]["text"]))


def test_piqa_label_misalignment_is_an_error_not_garbage(tmp_path, shared_data):
    lines = (shared_data / "eval" / "piqa_valid.jsonl").read_text().splitlines()[:5]
    data = _write_jsonl(tmp_path / "piqa.jsonl", lines)
    (tmp_path / "labels.lst").write_text("0\n1\n1\n0\n")  # one short
    with pytest.raises(ValueError, match="4 labels but .* 5 rows"):
        read_benchmark("piqa", str(data), str(tmp_path / "labels.lst"))
    (tmp_path / "labels.lst").write_text("0\n1\nx\n0\n1\n")  # a bad label drops only its row
    rows = read_benchmark("piqa", str(data), str(tmp_path / "labels.lst"))
    assert len(rows) == 4 and LOAD_STATS[str(data)]["skip_reasons"] == {"label 'x' is not 0 or 1": 1}


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="no known format"):
        BenchmarkTask(name="mytask", data="x.jsonl")
    with pytest.raises(ValueError, match="labels file is only read for the piqa format"):
        BenchmarkTask(name="arc_easy", data="x.jsonl", labels="y.lst")
    with pytest.raises(ValueError, match="names a task not in tasks"):
        EvaluateConfig(champion_metric="hellaswag/acc_norm")
    with pytest.raises(ValueError, match="reserved"):
        EvaluateConfig(tasks=[BenchmarkTask(name="bpb", format="piqa", data="p.jsonl", labels="l.lst")],
                       champion_metric="bpb/web")
    assert BenchmarkTask(name="arc_c", format="arc_challenge", data="a.jsonl").resolved_format == "arc_challenge"


# ------------------------------------------------------------------------------------------ model based


def test_a_missing_benchmark_file_fails_the_stage_before_any_work(tmp_path, shared_data):
    from tasks.evaluate import run_evaluate
    from tasks.evaluate.benchmarks import TaskFailed

    cfg = EvaluateConfig(tasks=[BenchmarkTask(name="piqa", data="piqa_valid.jsonl", labels="piqa_valid-labels.lst"),
                                BenchmarkTask(name="arc_easy", data="ARC-Easy-Test.jsonl")], device="cpu")
    with pytest.raises(TaskFailed, match=r"not found: arc_easy: .*ARC-Easy-Test.jsonl.*allow_task_errors"):
        run_evaluate(cfg, {"model": tmp_path / "no-model-needed", "eval": shared_data / "eval"}, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_a_task_that_errors_in_lm_eval_fails_unless_allowed(tmp_path, enc, shared_data):
    """A file that exists but holds no usable rows errors inside lm-eval: the stage fails, or records a skip."""
    from tasks.evaluate.benchmarks import TaskFailed, run_benchmarks
    from tasks.evaluate.export import export_hf

    export_hf(make_model_dir(tmp_path / "model", enc), tmp_path / "hf")
    (tmp_path / "eval").mkdir()
    _write_jsonl(tmp_path / "eval" / "arc.jsonl", ['{"no": "question"}'])
    tasks = [BenchmarkTask(name="arc_easy", data="arc.jsonl")]
    kwargs = dict(batch_size=4, device="cpu", dtype="float32", bootstrap_iters=0, seed=0)
    with pytest.raises(TaskFailed, match="lm-eval task arc_easy failed: .*no usable arc_easy rows"):
        run_benchmarks(tasks, tmp_path / "hf", tmp_path / "eval", **kwargs)
    scores, info = run_benchmarks(tasks, tmp_path / "hf", tmp_path / "eval", allow_task_errors=True, **kwargs)
    assert scores == {} and "no usable arc_easy rows" in info["arc_easy"]["skipped"]


@pytest.fixture(scope="module")
def enc(shared_data):
    return train_tiktoken(book_text(shared_data))


@pytest.fixture(scope="module")
def val_docs(tmp_path_factory, shared_data) -> Path:
    """shards/val_docs like the shard stage writes: real book text and real stdlib code; no web file."""
    import json as json_mod

    from tasks.docs import write_docs

    root = tmp_path_factory.mktemp("shards")
    text = book_text(shared_data)
    books = [{"text": text[i:i + 3000], "id": f"b{i}", "metadata": {"source": "books"}} for i in range(100_000, 130_000, 3000)]
    code_files = sorted(Path(json_mod.__file__).parent.glob("*.py"))
    code = [{"text": p.read_text(), "id": p.name, "metadata": {"source": "code"}} for p in code_files]
    write_docs(root / "val_docs" / "books.jsonl.gz", books)
    write_docs(root / "val_docs" / "code.jsonl.gz", [{"id": "broken"}, *code])  # one bad record
    return root


def test_bits_per_byte_matches_a_direct_computation_with_our_model(tmp_path, enc, val_docs):
    """Streamed, windowed scoring equals summing our model's own per-token losses window by window."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.evaluate.export import export_hf, load_our_model
    from tasks.evaluate.intrinsic import evaluate_bpb, read_val_docs

    model_dir = make_model_dir(tmp_path / "model", enc, seed=1)
    export_hf(model_dir, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    seq_len, budget = 64, 1500
    stats, info = evaluate_bpb(hf, tok, val_docs / "val_docs", ["books", "web"], budget, seq_len, batch_size=4)
    assert "no held-out documents" in info["web"]["skipped"] and "web" not in stats["bpb"]

    docs, n_bytes, _ = read_val_docs(val_docs / "val_docs" / "books.jsonl.gz", budget, tok)
    stream, scored = [], []
    for ids in docs:
        stream += [enc.eot_token, *ids]
        scored += [0, *[1] * len(ids)]
    ours, total = load_our_model(model_dir), 0.0
    with torch.no_grad():
        for s in range(0, len(stream) - 1, seq_len):
            x = torch.tensor([stream[s:s + seq_len + 1]])
            _, nll = ours(x[:, :-1], x[:, 1:], reduction="none")  # (1, T)
            total += float((nll[0] * torch.tensor(scored[s + 1:s + seq_len + 1])).sum())
    assert info["books"]["tokens"] == sum(scored) == sum(map(len, docs))  # every document token scored once
    assert info["books"]["bytes"] == n_bytes
    assert stats["bpb"]["books"] == pytest.approx(total / (math.log(2) * n_bytes), rel=1e-5)
    assert stats["val_loss"]["books"] == pytest.approx(total / sum(scored), rel=1e-5)


def test_evaluate_end_to_end_offline_on_piqa_and_openbookqa(tmp_path, enc, shared_data, val_docs, monkeypatch):
    """A tiny random model through the whole stage: export, lm-eval on 8 PIQA + 8 OBQA items, bpb, generations."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.evaluate import run_evaluate

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    model_dir = make_model_dir(tmp_path / "model", enc, seed=2)
    cfg = EvaluateConfig(
        tasks=[BenchmarkTask(name="piqa", data="piqa_valid.jsonl", labels="piqa_valid-labels.lst", limit=8),
               BenchmarkTask(name="openbookqa", data="openbookqa_main_test.jsonl", limit=8),
               BenchmarkTask(name="arc_easy", data="ARC-Easy-Test.jsonl")],  # not supplied: a recorded skip
        allow_task_errors=True, batch_size=8, device="cpu", bpb_tokens=2048, prompts=["It was a dark and stormy night", "def add(a, b):"],
        max_new_tokens=8)
    # one registered candidate besides data/model, as registry.fetch_candidates hands it over
    from tasks.evaluate.export import export_hf

    candidates = tmp_path / "candidates"
    export_hf(make_model_dir(tmp_path / "other", enc, seed=3), candidates / "v7")
    (candidates / "candidates.json").write_text(json.dumps([{"version": 7, "step": 5, "tokens_seen": 640,
                                                             "sha256": "other", "path": "v7"}]))
    out = tmp_path / "eval"
    stats = run_evaluate(cfg, {"model": model_dir, "eval": shared_data / "eval", "shards": val_docs,
                               "candidates": candidates}, out)
    # candidates keyed by step, data/model (meta step 0) among them; the stage's own scores are data/model's
    assert list(stats["candidates"]) == ["step_0", "step_5"]
    final, other = stats["candidates"]["step_0"], stats["candidates"]["step_5"]
    assert final["final"] and final["version"] is None and not other["final"] and other["version"] == 7
    assert final["piqa"] == stats["piqa"] and final["bpb"] == stats["bpb"] and other["bpb"] != final["bpb"]
    assert set(other) >= {"piqa", "openbookqa", "bpb", "val_loss", "tokens_seen", "sha256"}

    for task in ("piqa", "openbookqa"):
        m = stats[task]
        assert set(m) >= {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
        for k in ("acc", "acc_norm"):  # a mean of 8 zero/one outcomes, stderr of that mean
            assert round(m[k] * 8) == pytest.approx(m[k] * 8)
            assert m[f"{k}_stderr"] == pytest.approx(math.sqrt(m[k] * (1 - m[k]) / 7), abs=1e-9)
    # a random model predicts close to uniformly: loss ≈ ln(vocab) nats per token
    for source in ("books", "code"):
        assert abs(stats["val_loss"][source] - math.log(enc.n_vocab)) < 0.3
        assert 0 < stats["bpb"][source] < 10
    assert "web" not in stats["bpb"]
    assert stats["champion"] == {"metric": "piqa/acc_norm", "mode": "max", "value": stats["piqa"]["acc_norm"]}

    results = json.loads((out / "results.json").read_text())
    assert results["tasks"]["piqa"]["items"] == 8 and results["tasks"]["openbookqa"]["items"] == 8
    assert "arc_easy" not in stats and "FileNotFoundError" in results["tasks"]["arc_easy"]["skipped"]
    assert results["held_out"]["code"]["bad_docs"] == {"KeyError": 1}
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["prompt"] for g in gens] == cfg.prompts and all(g["completion"] for g in gens)
    # the export in the output loads with the Auto classes and completes the same way (greedy)
    model = AutoModelForCausalLM.from_pretrained(out / "hf")
    tok = AutoTokenizer.from_pretrained(out / "hf")
    ids = tok(gens[0]["prompt"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    again = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert tok.decode(again[0, ids.shape[1]:]) == gens[0]["completion"]
    assert not (tmp_path / ".eval.partial").exists()
