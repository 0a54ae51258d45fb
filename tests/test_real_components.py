"""The shared rule for real components: skip with the reason locally, fail under CI=true."""
from __future__ import annotations

import shutil

import pytest
from real_components import require_binary, require_module, unavailable


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception),
                                         ("1", pytest.fail.Exception), ("false", pytest.skip.Exception)])
def test_a_missing_component_skips_locally_and_fails_under_ci(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="needs no-such-server-7f3a, which is not installed"):
        require_binary("no-such-server-7f3a")
    with pytest.raises(outcome, match="needs the Python module no_such_module_7f3a"):
        require_module("no_such_module_7f3a", "pip install it")
    with pytest.raises(outcome, match="cluster did not start"):
        unavailable("cluster did not start")


def test_a_present_component_is_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_binary("sh") == shutil.which("sh")
    assert require_module("json", "part of Python").dumps([]) == "[]"
