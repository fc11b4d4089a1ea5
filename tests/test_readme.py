"""The README's promises: CI runs its test command exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks under "Two commands", in order (install+run, then tests)."""
    section = REPO.joinpath("README.md").read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_ci_runs_the_readme_test_command_verbatim():
    install_and_run, test = readme_commands()
    ci_lines = [line.strip() for line in REPO.joinpath(".ci/run").read_text().splitlines()]
    assert test in ci_lines
    assert "tox" in test and "python3 -m venv .venv" in test and "-m pip install" not in test  # no system pip (PEP 668)
    assert "bench run" in install_and_run and "-c constraints.txt" in install_and_run


def test_the_readme_states_the_dims_the_code_evaluates():
    """"How a grid is scored" names each suite's explicit dims and bench.spec.default_dims for suites without."""
    from bench.spec import default_dims
    from bench.suites import SUITES

    section = REPO.joinpath("README.md").read_text().split("## How a grid is scored", 1)[1].split("\n## ", 1)[0]
    text = " ".join(section.split())
    for name, make in SUITES.items():
        dims = make().eval.dims
        if dims is not None:  # "`smoke`: 16, 32, 64;" (not the start of a longer list)
            assert re.search(rf"`{re.escape(name)}`: {', '.join(map(str, dims))}(?!, \d)", text), name
    assert "MiniLM " + ", ".join(map(str, default_dims(384))) in text
