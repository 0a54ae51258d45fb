"""params.yaml is the only config: typed, validated before any work, errors name the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.config import ConfigError, PipelineConfig, deep_merge, load_config, parse_config, read_yaml
from tasks.config.checks import ensure_library_checks, library_errors

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


@pytest.fixture(scope="module")
def params() -> dict:
    return read_yaml(ROOT / "params.yaml")


def with_value(params: dict, dotted: str, value) -> dict:
    keys = dotted.split(".")
    override: dict = {}
    node = override
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return deep_merge(params, override)


def test_default_params_load_and_each_stage_section_is_typed(params):
    cfg = parse_config(params)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.section("ingest.web").__class__.__name__ == "WebIngestConfig"
    assert cfg.section("mix").code_fraction == pytest.approx(0.306416)


@pytest.mark.parametrize("key, value, fragment", [
    ("mix.code_fraction", 1.5, "mix.code_fraction must be less than 1, got 1.5"),
    ("mix.code_fraction", 0, "mix.code_fraction must be greater than 0, got 0"),
    ("dedup.num_perm", "many", "dedup.num_perm"),
    ("train.lr", -1.0, "train.lr must be greater than 0"),
    ("train.device", "tpu", "train.device"),
    ("flow.schedule_cron", "every day", "flow.schedule_cron must be a 5-field cron expression"),
    ("fetch.web.uris", [], "fetch.web.uris"),
])
def test_bad_values_fail_naming_the_key(params, key, value, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config(with_value(params, key, value))
    assert fragment in str(err.value)


def test_cross_field_rules_name_the_section(params):
    with pytest.raises(ConfigError, match=r"dedup .*bands\*rows"):
        parse_config(with_value(params, "dedup.bands", 20))
    with pytest.raises(ConfigError, match=r"train\.min_lr \(1\.0\) must not exceed lr"):
        parse_config(with_value(params, "train.min_lr", 1.0))


@pytest.mark.parametrize("key", ["mix.code_fractoin", "train.model.presett", "nosuchsection"])
def test_unknown_keys_are_rejected_with_their_path(params, key):
    with pytest.raises(ConfigError) as err:
        parse_config(with_value(params, key, 1))
    assert f"{key} is not a known key" in str(err.value)


def test_section_defaults_are_inherited_unless_overridden(params):
    cfg = parse_config(deep_merge(params, {"ingest": {"executor": {"tasks": 4, "workers": 2},
                                                      "code": {"executor": {"tasks": 1, "workers": 1}}}}))
    assert cfg.ingest.web.executor.tasks == 4
    assert cfg.ingest.code.executor.tasks == 1


def test_config_objects_are_immutable(params):
    cfg = parse_config(params)
    with pytest.raises(Exception):
        cfg.mix.code_fraction = 0.5


@pytest.mark.parametrize("profile", [None, *PROFILES], ids=["params.yaml", *(p.stem for p in PROFILES)])
def test_every_shipped_profile_validates_against_the_code(profile):
    cfg = load_config(ROOT / "params.yaml", profile)
    assert library_errors(cfg) == []


def test_gpu_profiles_exist_with_the_promised_models():
    presets = {p.stem: load_config(ROOT / "params.yaml", p).train.model.preset for p in PROFILES}
    assert presets.get("gpu-125m") == "125m"
    assert presets.get("tinyllama-1.1b") == "tinyllama-1.1b"
    tinyllama = load_config(ROOT / "params.yaml", ROOT / "profiles" / "tinyllama-1.1b.yaml").train
    assert (tinyllama.lr, tinyllama.min_lr, tinyllama.warmup_steps) == (4e-4, 4e-5, 2000)
    assert tinyllama.global_batch_tokens == 2**21


def test_cli_rejects_bad_params_before_any_work(tmp_path, params):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(with_value(params, "mix.code_fraction", 1.5)))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tasks", "fetch", "web", "--out", str(out), "--params", str(bad)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "mix.code_fraction must be less than 1, got 1.5" in proc.stderr
    assert not out.exists()


def test_profile_command_prints_dvc_exp_arguments():
    proc = subprocess.run([sys.executable, "-m", "tasks", "profile", "profiles/gpu-125m.yaml"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert "-S 'train.model.preset=\"125m\"'" in proc.stdout


# ---------------------------------------------------------------- values that used to fail minutes later


def load_errors(data: dict) -> str:
    """Everything `python -m tasks validate` reports for `data` (section, cross-section and library checks)."""
    try:
        ensure_library_checks(parse_config(data), root=None)
    except ConfigError as e:
        return str(e)
    return ""


@pytest.mark.parametrize("override, fragment", [
    ({"train": {"seq_len": 1024, "global_batch_tokens": 16384}},
     "train.seq_len (1024) exceeds the context of the model (preset 10m: max_seq_len 512)"),
    ({"train": {"nproc_per_node": 3}}, "train.nproc_per_node (3) does not divide the batch"),
    ({"train": {"model": {"overrides": {"n_layers": 4}}}}, "train.model.overrides: unknown ModelConfig field(s) ['n_layers']"),
    ({"train": {"model": {"overrides": {"n_layer": 2.5}}}}, "train.model.overrides.n_layer must be int, got 2.5"),
    ({"train": {"model": {"overrides": {"n_head": 3}}}}, "d_model (128) must be divisible by n_head (3)"),
    ({"train": {"model": {"overrides": {"vocab_size": 300}}}}, "train.model.overrides must not set vocab_size"),
    ({"filter": {"web": {"heuristics": {"gopher_repetition": {"dup_line_fract": 0.4}}}}},
     "filter.web.heuristics.gopher_repetition: unknown argument(s) ['dup_line_fract']; GopherRepetitionFilter accepts"),
    ({"filter": {"web": {"heuristics": {"c4": {"filter_no_terminal_punct": "sometimes"}}}}},
     "filter.web.heuristics.c4.filter_no_terminal_punct must be bool, got 'sometimes'"),
    ({"mix": {"text_weights": {"bookz": 0.5}}}, "mix.text_weights names source(s) ['bookz'] that no stage produces"),
    ({"tokenizer": {"sample_weights": {"wiki": 1.0}}}, "tokenizer.sample_weights names source(s) ['wiki']"),
    ({"ingest": {"web": {"languages": ["english"]}}}, "ingest.web.languages holds ['english'], not lid.176 language codes "
                                                      "(did you mean 'english' → 'en'?); codes: af, als,"),
    ({"filter": {"books": {"heuristics": {"language": {"languages": ["en", "EN"]}}}}},
     "filter.books.heuristics.language.languages holds ['EN']"),
    ({"train": {"warmup_steps": 301}}, "train.warmup_steps (301) must not exceed max_steps (300)"),
    ({"evaluate": {"champion_metric": "piqa/accuracy"}},
     "evaluate.champion_metric 'piqa/accuracy': task piqa (piqa) reports acc, acc_norm, not accuracy"),
    ({"evaluate": {"champion_metric": "bpb/web"}}, "evaluate.champion_mode must be min for bpb/web (lower is better)"),
    ({"evaluate": {"sources": ["web", "books"], "champion_metric": "val_loss/books", "champion_mode": "min"},
      "mix": {"text_weights": {"books": 1.0, "web": 0}}}, "mix text_weights must be non-empty with positive weights"),
    ({"evaluate": {"tasks": [{"name": "piqa", "data": "piqa_vaild.jsonl", "labels": "piqa_valid-labels.lst"}]}},
     "evaluate.tasks[0].data 'piqa_vaild.jsonl' (piqa) is not among the files fetch.eval.uris brings"),
])
def test_values_that_would_fail_later_are_rejected_at_load_naming_key_and_allowed_values(params, shared_data, override,
                                                                                         fragment):
    assert fragment in load_errors(deep_merge(params, override))


def test_evaluate_sources_must_be_mixed(params):
    data = deep_merge(params, {"mix": {"code_source": "code"}})
    data["mix"]["text_weights"] = {"web": 1.0}  # books left out of the mix: no held-out books documents
    assert "evaluate.sources ['books'] are not in the mix" in load_errors(data)


@pytest.mark.slow
def test_an_eval_task_without_data_must_be_an_lm_eval_task(params):
    """Without a data file the name is run as a standard lm-eval task: a typo fails at load, a real name passes."""
    tasks = [{"name": "hellaswag"}, {"name": "piqa", "data": "piqa_valid.jsonl", "labels": "piqa_valid-labels.lst"}]
    # decontaminate follows evaluate.tasks, and a task without a data file gives it nothing to match against
    params = deep_merge(params, {"decontaminate": {"tasks": [dict(tasks[1])]}})
    assert load_errors(deep_merge(params, {"evaluate": {"tasks": tasks}})) == ""
    tasks[0]["name"] = "hellaswagg"
    assert "evaluate.tasks: 'hellaswagg' has no data file and is not an lm-eval task" in load_errors(
        deep_merge(params, {"evaluate": {"tasks": tasks}}))


def test_lid176_codes_are_the_shipped_models_labels():
    import fasttext

    from tasks.config.languages import LID176
    from tasks.ingest.web import lid_model_path

    labels = fasttext.load_model(lid_model_path()).get_labels()
    assert sorted(label.removeprefix("__label__") for label in labels) == sorted(LID176)


def test_champion_metrics_per_format_are_the_standard_tasks_metric_lists():
    import lm_eval.tasks

    from tasks.config.evaluate import FORMAT_METRICS
    from tasks.evaluate.benchmarks import STANDARD_YAML

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # `!function` tags
    root = Path(lm_eval.tasks.__file__).parent
    for fmt, rel in STANDARD_YAML.items():
        path, metrics = root / rel, None
        while metrics is None:
            doc = yaml.load(path.read_text(), Loader=Loader)
            metrics = doc.get("metric_list")
            path = path.parent / doc.get("include", "")
        assert tuple(m["metric"] for m in metrics) == FORMAT_METRICS[fmt], fmt


def test_library_checks_run_once_per_config_and_code(tmp_path, params, monkeypatch):
    from tasks.config import checks

    cfg = parse_config(params)
    calls = []
    monkeypatch.setattr(checks, "library_errors", lambda c: calls.append(c) or [])
    ensure_library_checks(cfg, tmp_path)
    ensure_library_checks(cfg, tmp_path)
    assert len(calls) == 1 and len(list((tmp_path / ".tinyfoundry" / "config-checks").iterdir())) == 1
    ensure_library_checks(parse_config(with_value(params, "train.seq_len", 64)), tmp_path)  # another config
    ensure_library_checks(cfg, tmp_path, force=True)  # `validate` always checks
    assert len(calls) == 3


def test_stage_command_fails_on_a_library_checked_value_before_any_work(tmp_path, params):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(with_value(params, "train.model.overrides", {"n_layers": 4})))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tasks", "fetch", "web", "--out", str(out), "--params", str(bad)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "train.model.overrides: unknown ModelConfig field(s) ['n_layers']" in proc.stderr
    assert not out.exists() and not (tmp_path / ".tinyfoundry" / "config-checks").exists()
