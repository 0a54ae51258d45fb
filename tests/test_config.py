"""params.yaml is the only config: typed, validated before any work, errors name the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.config import ConfigError, PipelineConfig, deep_merge, load_config, parse_config, read_yaml

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
    with pytest.raises(ConfigError, match=r"train .*min_lr"):
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


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_shipped_profile_validates_against_the_code(profile):
    cfg = load_config(ROOT / "params.yaml", profile)
    assert cfg.train.max_steps >= 1


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
