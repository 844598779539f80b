"""Every shipped scenario loads, runs, and reproduces its pinned headline numbers.

Regenerate with ``python tools/regen_scenario_goldens.py --write`` (it prints the diff) only when a
change of the simulator's semantics is intended.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("regen", REPO / "tools" / "regen_scenario_goldens.py")
regen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regen)
GOLDEN = json.loads(regen.GOLDEN.read_text())
SCENARIOS = regen.scenario_files()


def test_every_scenario_has_a_golden():
    assert {path.stem for path in SCENARIOS} == set(GOLDEN)
    assert "quickstart" in GOLDEN and len(GOLDEN) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_reproduces_its_golden_summary(path):
    got = regen.run_scenario(path)
    expected = GOLDEN[path.stem]
    for key, value in expected.items():
        assert regen.same(got[key], value), f"{path.stem}.{key}: expected {value}, got {got[key]}"
