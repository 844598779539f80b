"""The batch schedule and demand-set kernels against their plain-Python twins."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from moesim.kernels import plan as kernels
from tests import naive
from tests.strategies import traces


@given(trace=traces(max_tokens=60, max_seqs=6, optional_columns=False), batch=st.integers(1, 5),
       prefill=st.booleans(), chunk=st.integers(1, 7))
def test_schedule_and_demand_sets_equal_the_twins(trace, batch, prefill, chunk):
    got = kernels.schedule_steps(trace.seq_offsets, trace.phases, batch, prefill, chunk)
    want = naive.schedule_steps(trace.seq_offsets, trace.phases, batch, prefill, chunk)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    step_offsets, step_rows, step_phase = got
    experts = np.ascontiguousarray(trace.experts)
    for a, b in zip(kernels.demand_sets(experts, step_offsets, step_rows, trace.num_experts),
                    naive.demand_sets(experts, step_offsets, step_rows, trace.num_experts)):
        np.testing.assert_array_equal(a, b)
    # every simulated row appears once; prefill rows only when prefill is on
    expected_rows = np.flatnonzero((trace.phases == 1) | prefill)
    np.testing.assert_array_equal(np.sort(step_rows), expected_rows)
    # a step is one sequence's prefill chunk or one decode token per active sequence
    for s in range(len(step_phase)):
        rows = step_rows[step_offsets[s]:step_offsets[s + 1]]
        seqs = trace.seq_ids[rows]
        if step_phase[s] == 0:
            assert len(set(seqs)) == 1 and len(rows) <= chunk and (trace.phases[rows] == 0).all()
        else:
            assert len(set(seqs)) == len(rows) <= batch and (trace.phases[rows] == 1).all()


def test_rows_of_a_sequence_keep_their_order():
    from moesim import Trace

    phases = ["prefill"] * 5 + ["decode"] * 3 + ["prefill"] * 2 + ["decode"] * 4
    trace = Trace.from_arrays(np.zeros((14, 1, 1)), num_experts=2, seq_ids=[0] * 8 + [1] * 6, phases=phases)
    offsets, rows, kinds = kernels.schedule_steps(trace.seq_offsets, trace.phases, 2, True, 2)
    assert kinds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [rows[offsets[s]:offsets[s + 1]].tolist() for s in range(len(kinds))] == [
        [0, 1], [2, 3], [4], [8, 9], [5, 10], [6, 11], [7, 12], [13]]
