"""The per-phase profile of `bench run` (bench/phases.py): a nested phase pauses its parent, so each second is
charged to one phase; a fake clock makes the accounting exact."""

from __future__ import annotations

import pytest

from bench import phases


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(phases.time, "perf_counter", lambda: now[0])
    phases.reset()
    yield now
    phases.reset()


def test_a_nested_phase_is_charged_to_itself_only(clock):
    with phases.phase("load"):
        clock[0] += 2
        with phases.phase("train"):
            clock[0] += 5
        clock[0] += 1
    clock[0] += 3  # outside every phase: untimed
    assert phases.totals() == {"load": 3.0, "train": 5.0}
    text = phases.format_profile(phases.totals(), wall=11.0)
    assert "load           3.0 s   27.3%" in text and "untimed        3.0 s   27.3%" in text


def test_the_decorator_charges_even_when_the_function_raises(clock):
    @phases.timed("encode")
    def encode():
        clock[0] += 4
        raise ValueError("boom")

    with pytest.raises(ValueError):
        encode()
    assert phases.totals() == {"encode": 4.0}


def test_a_method_loads_its_model_once_for_all_its_tasks(data_dir, tmp_path, monkeypatch, capsys):
    """Start-up and model loading are paid once per process: two tasks of one method share one Encoder.load, and
    the run prints its profile."""
    from bench.cli import main
    from bench.encoder import Encoder

    calls = []
    real = Encoder.load.__func__
    monkeypatch.setattr(Encoder, "load", classmethod(lambda cls, *a, **k: calls.append(a[0]) or real(cls, *a, **k)))
    assert main(["run", "--suite", "smoke", "--methods", "pretrained", "--tasks", "stsb,sickr", "--data-dir",
                 str(data_dir), "--results-dir", str(tmp_path / "r"), "--compare-with", "none"]) == 0
    assert len(calls) == 1
    out = capsys.readouterr().out
    assert "profile of this process" in out and "untimed" in out
