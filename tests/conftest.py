"""Shared test set-up: hypothesis profiles and small fixtures.

Profiles: ``ci`` (deterministic, more examples; chosen when CI=true) and ``dev`` (default).
Select one explicitly with ``HYPOTHESIS_PROFILE=...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

REPO = Path(__file__).resolve().parents[1]
TRACES_DIR = REPO / "traces"
SCENARIOS_DIR = REPO / "scenarios"


@pytest.fixture
def tiny_trace():
    """Two sequences, 3 MoE layers, E=8, k=2, with weights."""
    from moesim import Trace

    rng = np.random.default_rng(7)
    num_tokens, num_layers, top_k, num_experts = 12, 3, 2, 8
    experts = np.stack(
        [
            np.stack([rng.choice(num_experts, top_k, replace=False) for _ in range(num_layers)])
            for _ in range(num_tokens)
        ]
    )
    weights = rng.dirichlet(np.ones(top_k), size=(num_tokens, num_layers)).astype(np.float32)
    return Trace.from_arrays(
        experts,
        num_experts=num_experts,
        seq_ids=[0] * 5 + [1] * 7,
        phases=["prefill"] * 2 + ["decode"] * 3 + ["prefill"] * 3 + ["decode"] * 4,
        weights=weights,
        model="tiny-test",
        moe_layers=[1, 3, 5],
        source="tests",
    )
