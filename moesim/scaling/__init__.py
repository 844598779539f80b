"""Scaling studies on the simulator: architecture budgets, the granularity law, serving cost.

Each analysis turns a claim about MoE architectures into simulations on real routing (or synthetic
routing fitted to it, with the extrapolation rule stated) and writes a results dataset
(:mod:`moesim.scaling.dataset`) and a report (:mod:`moesim.scaling.report`):

* :func:`budget_sheet`: total / active parameters, FLOPs per token and bytes per format of a spec;
  :func:`enumerate_architectures` / :func:`run_architectures`: configurations meeting a joint
  FLOPs / active / total budget, ranked by simulated tokens/s when offloaded.
* :func:`run_granularity`: hit rate, miss penalty and tokens/s as experts are split finer at fixed
  parameters, over cache budgets and link bandwidths; :func:`compare_laws` fits
  ``1 - a exp(-b E)`` and ``1 - a E^-b`` and says which the data support.
* :func:`run_serving`: models of 4..128 experts at equal predicted quality: batch that fits,
  tokens/s and cost per million tokens, with and without offloading.

Scenario files: ``scenarios/scaling-*.toml``; CLI: ``moesim scaling ...``. Importing this package
compiles nothing and does not import the simulator until an analysis runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BudgetSheet": "moesim.scaling.budget",
    "budget_sheet": "moesim.scaling.budget",
    "LawFit": "moesim.scaling.laws",
    "LawComparison": "moesim.scaling.laws",
    "fit_law": "moesim.scaling.laws",
    "compare_laws": "moesim.scaling.laws",
    "compare_pooled": "moesim.scaling.laws",
    "ArchitectureBudget": "moesim.scaling.architectures",
    "SearchSpace": "moesim.scaling.architectures",
    "Candidate": "moesim.scaling.architectures",
    "enumerate_architectures": "moesim.scaling.architectures",
    "run_architectures": "moesim.scaling.architectures",
    "GranularityConfig": "moesim.scaling.granularity",
    "granular_spec": "moesim.scaling.granularity",
    "run_granularity": "moesim.scaling.granularity",
    "TraceFamily": "moesim.scaling.traces",
    "TraceRecipe": "moesim.scaling.traces",
    "load_analysis": "moesim.scaling.config",
}

__all__ = [
    "ArchitectureBudget",
    "BudgetSheet",
    "Candidate",
    "GranularityConfig",
    "LawComparison",
    "LawFit",
    "SearchSpace",
    "TraceFamily",
    "TraceRecipe",
    "budget_sheet",
    "compare_laws",
    "compare_pooled",
    "enumerate_architectures",
    "fit_law",
    "granular_spec",
    "load_analysis",
    "run_architectures",
    "run_granularity",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'moesim.scaling' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
