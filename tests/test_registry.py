"""The generic registry: `all`, and "did you mean" errors for unknown names."""

from __future__ import annotations

import pytest

from bench import BenchError
from bench.registry import Registry
from bench.tasks import TASKS
from methods import METHODS


def test_expand_all_and_did_you_mean():
    reg = Registry("method")
    for name in ("mrl", "2dmse", "full"):
        reg.register(name)(object())
    assert reg.expand("all") == ["2dmse", "full", "mrl"]
    assert reg.expand("mrl,full,mrl") == ["mrl", "full"]
    with pytest.raises(BenchError, match="did you mean 'mrl'"):
        reg.expand("mlr")


def test_double_registration_is_an_error():
    reg = Registry("task")
    reg.register("x")(1)
    with pytest.raises(BenchError, match="registered twice"):
        reg.register("x")(2)


def test_foundation_names_are_registered():
    assert "pretrained" in METHODS.names()
    for task in ("stsb", "sickr", "sts12", "sts13", "sts14", "sts15", "sts16", "scifact"):
        assert task in TASKS.names()
    with pytest.raises(BenchError, match="did you mean 'stsb'"):
        TASKS.get("stbs")
