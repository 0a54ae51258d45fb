"""Decontamination: the n-gram matcher, cutting, config, and the stage on real documents with planted PIQA and
OpenBookQA items (web pages, books, code): all caught, no real document hit, common phrases ignored."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from tasks.config import ConfigError, load_config, parse_config
from tasks.config.decontaminate import MIN_WORDS, DecontaminateConfig
from tasks.config.evaluate import FORMATS, BenchmarkTask
from tasks.decontaminate.ngrams import NgramIndex, normal_words, word_spans
from tasks.decontaminate.stage import cut_regions, decontaminate_doc, run_decontaminate
from tasks.decontaminate.units import UNITS
from tasks.docs import doc_files, iter_docs, write_docs

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Which of these would let the most heat travel through a kitchen on a cold winter morning?"
ANSWER = "a new pair of wool socks"


def small_index(min_words: int = 8) -> NgramIndex:
    index = NgramIndex(["quiz", "tips"], 13)
    index.add_unit(QUESTION, 0, 0, min_words)                      # 16 words: its 13-grams
    index.add_unit(f"{QUESTION} {ANSWER}", 0, 0, min_words)
    index.add_unit(ANSWER, 0, 0, min_words)                        # 6 words: below the floor, not indexed
    index.add_unit("Rinse the jar with hot water before you fill it", 1, 3, min_words)  # 10 words: whole
    return index


def test_words_ignore_case_punctuation_and_spacing():
    assert normal_words("Don't  STOP—now, (A) 3.5 kg_x") == ["don", "t", "stop", "now", "a", "3", "5", "kg", "x"]
    for text, last in (("Plain ASCII, isn't it", ["isn", "t", "it"]), ("İstanbul'da ΟΔΥΣΣΕΥΣ, Don't", ["don", "t"])):
        words, spans = word_spans(text)  # lower() lengthens 'İ' to 'i̇': spans still point into `text`
        assert words == normal_words(text) and words[-len(last):] == last
        assert all(w in text[a:b].lower() for w, (a, b) in zip(words, spans)), (words, spans)


def test_index_matches_long_units_by_ngram_and_short_units_whole():
    index = small_index()
    assert len([g for g in index.entries if len(g) == 13]) > 0 and (index.vocab["wool"],) not in index.entries
    # any 13 consecutive words of the question match, whatever the case and punctuation
    page = "Intro text here. " + QUESTION.upper().replace(" ", "  ,") + " More text."
    matches = index.find(normal_words(page))
    assert matches and {t for m in matches for t, _ in m.entry.items} == {0}
    assert all(m.length == 13 for m in matches)
    assert not index.find(normal_words(" ".join(QUESTION.split()[:12])))  # 12 words of it: no 13-gram
    # the short unit matches whole, anywhere, but not with a word missing
    assert [m.entry.words for m in index.find(normal_words("Tip: rinse the jar with hot water before you fill it."))] \
        == ["rinse the jar with hot water before you fill it"]
    assert not index.find(normal_words("rinse the jar with water before you fill it"))
    # the 6-word answer alone never matches: it is an everyday phrase
    assert not index.find(normal_words(f"I got {ANSWER} for my birthday."))


def test_cut_regions_widen_to_whitespace_merge_and_absorb_short_pieces():
    text = "x" * 50 + " " + "a b c " * 100 + "MATCH here " + "d e f " * 100
    s = text.index("MATCH")
    (a, b), = cut_regions(text, [(s, s + 10)], window=20, min_fragment=5)
    assert a <= s - 20 and b >= s + 30 and text[a - 1] == " " and text[b] == " "
    # two spans closer than min_fragment become one region; a short head is absorbed
    regions = cut_regions(text, [(60, 65), (80, 85)], window=0, min_fragment=100)
    assert regions == [(0, 86)]


def _doc(text: str) -> dict:
    return {"id": "d1", "text": text, "metadata": {"source": "web"}}


def test_cut_keeps_the_rest_and_rejects_each_span_with_task_and_ngram():
    index = small_index()
    head, tail = "Opening paragraph. " * 30, "Closing paragraph. " * 30
    doc = _doc(f"{head}\n\n{QUESTION} {ANSWER}\n\n{tail}")
    cfg = DecontaminateConfig(tasks=[], cut_window_chars=10, min_fragment_chars=20)
    kept, rejects, matches = decontaminate_doc(doc, index, cfg)
    assert matches and kept is not None and kept["id"] == "d1"
    assert "heat travel" not in kept["text"] and "wool socks" not in kept["text"]
    assert kept["text"].startswith("Opening") and kept["text"].rstrip().endswith("paragraph.")
    assert kept["metadata"]["contamination_cuts"] == 1 == len(rejects)
    r = rejects[0]
    assert r["metadata"]["reject_reason"] == "contamination/quiz" and r["id"] == "d1#cut0"
    assert r["metadata"]["matched_ngram"] in " ".join(normal_words(QUESTION + " " + ANSWER))
    assert QUESTION in r["text"] and r["metadata"]["parent_id"] == "d1" and r["metadata"]["matched_item"] == "quiz#0"


def test_remove_action_and_too_many_cuts_drop_the_document():
    index = small_index()
    doc = _doc("Before. " * 40 + QUESTION + " After. " * 40)
    kept, rejects, _ = decontaminate_doc(doc, index, DecontaminateConfig(tasks=[], action="remove"))
    assert kept is None and len(rejects) == 1 and rejects[0]["text"] == doc["text"]
    assert rejects[0]["metadata"]["reject_reason"] == "contamination/quiz"
    many = _doc((" filler text " * 30).join(["Rinse the jar with hot water before you fill it"] * 4))
    cfg = DecontaminateConfig(tasks=[], cut_window_chars=0, min_fragment_chars=0, max_cuts=3)
    kept, rejects, _ = decontaminate_doc(many, index, cfg)
    assert kept is None and rejects[0]["metadata"]["decontaminate_action"] == "removed (too_many_cuts)"
    assert rejects[0]["metadata"]["reject_reason"] == "contamination/tips"
    clean = _doc("Nothing from any benchmark in here at all, just a plain sentence or two.")
    assert decontaminate_doc(clean, index, DecontaminateConfig(tasks=[])) == (clean, [], [])


# ------------------------------------------------------------------------------------------------- config


def test_tasks_default_to_the_evaluated_benchmarks_and_bad_values_fail_at_load():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = parse_config(params)
    assert cfg.decontaminate.tasks == cfg.evaluate.tasks
    custom = [{"name": "obqa", "format": "openbookqa", "data": "openbookqa_main_test.jsonl"}]
    other = parse_config({**params, "evaluate": {**params["evaluate"], "tasks": custom,
                                                 "champion_metric": "obqa/acc_norm"}})
    assert [t.name for t in other.decontaminate.tasks] == ["obqa"]
    explicit = parse_config({**params, "decontaminate": {**params["decontaminate"], "tasks": []}})
    assert explicit.decontaminate.tasks == []
    missing = [{"name": "obqa", "format": "openbookqa", "data": "obqa_typo.jsonl"}]
    with pytest.raises(ConfigError, match=r"decontaminate\.tasks\[0\]\.data 'obqa_typo.jsonl' \(obqa\) is not among"):
        parse_config({**params, "decontaminate": {**params["decontaminate"], "tasks": missing}})
    with_hub = {**params, "evaluate": {**params["evaluate"], "tasks": params["evaluate"]["tasks"] + [{"name": "hellaswag"}]}}
    with pytest.raises(ConfigError, match=r"decontaminate\.tasks task 'hellaswag' has no data file"):
        parse_config(with_hub)
    for bad, match in (({"min_words": {"nope": 8}}, r"decontaminate\.min_words names tasks"),
                       ({"min_words": {"piqa": 20}}, r"decontaminate\.min_words values must be between"),
                       ({"action": "drop"}, r"decontaminate\.action"), ({"ngram_words": 2}, r"decontaminate\.ngram_words")):
        with pytest.raises(ConfigError, match=match):
            parse_config({**params, "decontaminate": {**params["decontaminate"], **bad}})


def test_every_benchmark_format_has_units_and_a_floor():
    assert set(UNITS) == set(FORMATS) == set(MIN_WORDS)
    cfg = load_config(ROOT / "params.yaml").decontaminate
    assert {t.name: cfg.task_min_words(t) for t in cfg.tasks} == {"piqa": MIN_WORDS["piqa"],
                                                                  "openbookqa": MIN_WORDS["openbookqa"]}
    assert DecontaminateConfig(tasks=[BenchmarkTask(name="piqa", data="x", labels="y")],
                               min_words={"piqa": 9}).task_min_words(BenchmarkTask(name="piqa", data="x")) == 9


# ------------------------------------------------------------------------------------------- real data


def _eval_cfg(**kw) -> DecontaminateConfig:
    return DecontaminateConfig(tasks=load_config(ROOT / "params.yaml").evaluate.tasks, **kw)


def _benchmarks(shared_data: Path) -> dict[str, list[dict]]:
    from tasks.evaluate.benchmarks import read_benchmark

    e = shared_data / "eval"
    return {"piqa": read_benchmark("piqa", str(e / "piqa_valid.jsonl"), str(e / "piqa_valid-labels.lst")),
            "openbookqa": read_benchmark("openbookqa", str(e / "openbookqa_main_test.jsonl"))}


def _joined(text: str) -> str:
    return " " + " ".join(normal_words(text)) + " "


@pytest.mark.needs_shared_data
def test_common_phrases_and_short_answers_do_not_trigger(shared_data):
    """Everything short in the benchmarks -- every OpenBookQA choice, every PIQA unit under its floor, the
    phrases most shared between items ("which of these", "how do i make") -- written into a real book: no match."""
    from collections import Counter

    from tasks.decontaminate.stage import build_index
    from tasks.decontaminate.units import item_units

    cfg = _eval_cfg()
    index, _ = build_index(cfg, shared_data / "eval")
    short, shared = [], Counter()
    for task, rows in _benchmarks(shared_data).items():
        floor = cfg.task_min_words(next(t for t in cfg.tasks if t.name == task))
        for row in rows:
            grams = set()
            for _, text in item_units(task, row):
                words = normal_words(text)
                if len(words) < floor:
                    short.append(text)
                grams.update(" ".join(words[i:i + k]) for k in (4, 5, 6, 7) for i in range(len(words) - k + 1))
            shared.update(grams)
    common = [g for g, n in shared.most_common(200)]
    assert shared[common[0]] >= 20 and len(short) > 1000, "the benchmarks should have many short units"
    book = next(d for d in iter_docs(_books_folder(shared_data, 1)))
    text = book["text"][:20000] + "\n" + "\n".join(f"She said {p}." for p in short + common) + "\n" + book["text"][20000:40000]
    matches = index.find(normal_words(text))
    assert not matches, [m.entry.words for m in matches[:10]]


def _books_folder(shared_data: Path, n: int) -> Path:
    from tasks.filter.sample import book_docs

    folder = Path(__import__("tempfile").mkdtemp(prefix="decontam-books-"))
    write_docs(folder / "docs" / "books.jsonl.gz", book_docs(shared_data / "books", n))
    return folder


@pytest.fixture(scope="module")
def real_docs(real_sample) -> list[dict]:
    """Real documents: 80 extracted pages per shared WARC, all 32 Gutenberg books, 60 standard-library files."""
    return list(iter_docs(real_sample("tinyfoundry_decontam_real_v1", books=None, code_files=60)))


def _plant(docs: list[dict], benchmarks: dict[str, list[dict]], seed: int = 0) -> list[dict]:
    """Put 40 PIQA and 40 OpenBookQA items, drawn at random from the whole files, into real web pages, books and
    code files, in the forms pages print them; a third of them upper-cased with spaces for punctuation."""
    rng = random.Random(seed)
    hosts = {s: [d for d in docs if d["metadata"]["source"] == s] for s in ("web", "books", "code")}
    for s in hosts:
        rng.shuffle(hosts[s])
    planted = []
    picks = [("piqa", i) for i in rng.sample(range(len(benchmarks["piqa"])), 40)]
    picks += [("openbookqa", i) for i in rng.sample(range(len(benchmarks["openbookqa"])), 40)]
    rng.shuffle(picks)
    for k, (task, i) in enumerate(picks):
        row = benchmarks[task][i]
        if task == "piqa":
            text = f"{row['goal']}\n{row['sol1'] if row['label'] == 0 else row['sol2']}"
        else:
            c = row["choices"]
            answer = c["text"][c["label"].index(row["answerKey"])]
            text = (f"{row['question_stem']}\n" + "\n".join(f"({l}) {t}" for l, t in zip(c["label"], c["text"]))
                    + f"\nAnswer: {row['answerKey']}") if k % 2 else f"{row['question_stem']} {answer}."
        if k % 3 == 0:  # what normalisation undoes: case, punctuation, spacing
            text = "".join(ch if ch.isalnum() or ch == "\n" else "  " for ch in text.upper())
        source = ("web", "books", "code")[k % 3]
        host = hosts[source][k // 3 % len(hosts[source])] if source == "books" else hosts[source][k // 3]
        body = host["text"]
        at = body.find("\n", len(body) // 3 + rng.randrange(len(body) // 3 + 1))
        at = len(body) if at < 0 else at
        block = f'\nEXAMPLE = """{text}"""\n' if source == "code" else f"\n\n{text}\n\n"
        host["text"] = body[:at] + block + body[at:]
        planted.append({"task": task, "item": i, "text": text, "host": host["id"], "source": source})
    return planted


def _catchable(task: str, row: dict, planted_text: str, floor: int) -> bool:
    """The documented rule, as an oracle: some unit of the item with at least `floor` words is in the text."""
    from tasks.decontaminate.units import item_units

    inside = _joined(planted_text)
    return any(len(normal_words(u)) >= floor and _joined(u) in inside for _, u in item_units(task, row))


@pytest.mark.slow
@pytest.mark.needs_shared_data
@pytest.mark.parametrize("action", ["cut", "remove"])
def test_planted_items_in_real_documents_are_all_caught_and_nothing_else(real_docs, shared_data, tmp_path, action):
    benchmarks = _benchmarks(shared_data)
    docs = json.loads(json.dumps(real_docs))
    planted = _plant(docs, benchmarks)
    shards = tmp_path / "in"
    write_docs(shards / "docs" / "00000.jsonl.gz", docs[::2])
    write_docs(shards / "docs" / "00001.jsonl.gz", docs[1::2])
    cfg = _eval_cfg(action=action, executor={"kind": "local", "tasks": 2, "workers": 2})
    stats = run_decontaminate(cfg, {"docs": shards, "eval": shared_data / "eval"}, tmp_path / "out")

    floors = {t.name: cfg.task_min_words(t) for t in cfg.tasks}
    for p in planted:
        p["catchable"] = _catchable(p["task"], benchmarks[p["task"]][p["item"]], p["text"], floors[p["task"]])
    short = [p for p in planted if not p["catchable"]]
    print(f"\n{action}: {len(planted) - len(short)} of {len(planted)} planted items have a unit at or above their "
          f"task's floor; too short by the rule: {[(p['task'], len(normal_words(p['text']))) for p in short]}")
    assert len(short) <= len(planted) // 10, "the rule should leave few planted items unmatchable"
    assert {p["source"] for p in planted if p["catchable"]} == {"web", "books", "code"}

    kept = {d["id"]: d for d in iter_docs(tmp_path / "out")}
    rejects = list(iter_docs(tmp_path / "out", "rejects"))
    hosts = {p["host"] for p in planted}
    # every catchable planted item is gone from the documents the tokenizer reads, and is in a reject
    for p in (p for p in planted if p["catchable"]):
        if p["host"] in kept:
            assert _joined(p["text"]) not in _joined(kept[p["host"]]["text"]), p
        assert any(r["metadata"]["reject_reason"].startswith("contamination/") and p["text"] in r["text"]
                   and p["task"] in r["metadata"]["contamination"]
                   and r["metadata"].get("parent_id", r["id"]) == p["host"] for r in rejects), p
    # no real document was hit: every reject belongs to a planted host, and the others are untouched
    false_hits = sorted({r["metadata"].get("parent_id", r["id"]) for r in rejects} - hosts)
    print(f"false hits: {len(false_hits)} of {len(docs) - len(hosts)} real documents without planted items")
    assert false_hits == []
    originals = {d["id"]: d["text"] for d in docs}
    assert all(kept[i]["text"] == originals[i] for i in kept if i not in hosts)
    assert all(r["metadata"]["matched_ngram"] and r["metadata"]["matched_item"] for r in rejects)

    for task in floors:
        t = stats["tasks"][task]
        caught = {p["host"] for p in planted if p["task"] == task and p["catchable"]}
        assert t["docs_hit"] == len(caught)
        items = {p["item"] for p in planted if p["task"] == task and p["catchable"]}
        # an n-gram two items share (PIQA repeats some goals) finds both
        assert len(items) <= t["items_found"] <= len(items) * 1.1, (t, len(items))
        assert t["ngrams_matched"] >= t["docs_hit"] and t["items"] == len(benchmarks[task])
    assert stats["docs_in"] == len(docs) and stats["docs_out"] == len(kept)
    if action == "remove":
        assert stats["docs_removed"] == len({p["host"] for p in planted if p["catchable"]}) and stats["docs_cut"] == 0
    else:
        assert stats["docs_cut"] + stats["docs_removed"] == len({p["host"] for p in planted if p["catchable"]})
        assert stats["chars_removed"] < 0.05 * stats["chars_in"]
    assert [p.name for p in doc_files(tmp_path / "out")] == ["00000.jsonl.gz", "00001.jsonl.gz"]


def test_run_report_has_a_decontamination_section_per_benchmark(tmp_path):
    from tasks.report import write_report

    (tmp_path / "metrics").mkdir()
    stats = {"docs_in": 2000, "docs_out": 1999, "docs_removed": 1, "docs_cut": 3, "spans_cut": 4, "chars_in": 10**7,
             "chars_removed": 2500, "rejected_by_reason": {"contamination/piqa": 3, "contamination/openbookqa": 2},
             "tasks": {"piqa": {"items": 1838, "min_words": 10, "docs_hit": 3, "ngrams_matched": 41, "items_found": 3,
                                "docs_removed": 1, "spans_cut": 2},
                       "openbookqa": {"items": 500, "min_words": 8, "docs_hit": 1, "ngrams_matched": 9,
                                      "items_found": 2, "docs_removed": 0, "spans_cut": 2}}, "seconds": 3.0}
    from tasks.metrics_schema import conform

    # as the CLI writes it: the stage's stats with the common metrics keys added
    (tmp_path / "metrics" / "decontaminate.json").write_text(json.dumps(conform("decontaminate", stats)))
    md = Path(write_report(tmp_path, {"name": "r", "stages": [{"stage": "decontaminate", "status": "ran"}]})["markdown"])
    text = md.read_text()
    section = text.split("## Decontamination", 1)[1].split("\n## ", 1)[0]
    assert "| piqa | 1,838 | 10 | 3 | 41 | 3 | 1 | 2 |" in section
    assert "| openbookqa | 500 | 8 | 1 | 9 | 2 | 0 | 2 |" in section
    assert "| characters removed | 0.025% |" in section and "| cut (spans) | 3 (4) |" in section
    stage_row = next(line for line in text.splitlines() if line.startswith("| decontaminate |"))
    assert "contamination/piqa 3" in stage_row and "2,000 docs" in stage_row and "1,999 docs" in stage_row
    (tmp_path / "metrics" / "decontaminate.json").unlink()
    assert "_No metrics/decontaminate.json in this run._" in Path(write_report(tmp_path, {"name": "s"})["markdown"]).read_text()
