"""The in-memory Trace: construction, defaults, views, validation messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from moesim import Trace, TraceError
from tests.strategies import traces


def test_defaults_fill_one_decode_sequence():
    trace = Trace.from_arrays(np.zeros((4, 2, 1), dtype=np.int64), num_experts=3)
    assert trace.num_tokens == 4 and trace.num_layers == 2 and trace.top_k == 1
    assert trace.num_sequences == 1
    assert trace.positions.tolist() == [0, 1, 2, 3]
    assert trace.phase_counts() == {"prefill": 0, "decode": 4}
    assert trace.moe_layers == (0, 1)
    assert trace.weights is None and trace.experts.dtype == np.int16
    assert not trace.experts.flags.writeable


def test_interleaved_sequences_are_regrouped_stably():
    experts = np.arange(6).reshape(6, 1, 1)
    trace = Trace.from_arrays(experts, num_experts=6, seq_ids=[5, 3, 5, 3, 9, 5])
    assert trace.sequence_ids.tolist() == [5, 3, 9]
    assert trace.experts[:, 0, 0].tolist() == [0, 2, 5, 1, 3, 4]
    assert trace.seq_offsets.tolist() == [0, 3, 5, 6]
    assert trace.positions.tolist() == [0, 1, 2, 0, 1, 0]


def test_select_and_sequences(tiny_trace):
    sub = tiny_trace.select(layers=[2, 0], seqs=[1], phase="decode")
    assert sub.num_layers == 2 and sub.moe_layers == (1, 5)
    assert sub.num_tokens == 4 and set(sub.seq_ids.tolist()) == {1}
    assert np.array_equal(sub.experts, tiny_trace.experts[8:, [0, 2]])
    parts = list(tiny_trace.sequences())
    assert [p.num_tokens for p in parts] == [5, 7]
    assert Trace.concat(parts).equals(tiny_trace)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=[3]), "layer 3 out of range"),
        (dict(seqs=[42]), "no sequence with id 42"),
        (dict(phase="generate"), "use one of prefill, decode"),
    ],
)
def test_select_errors(tiny_trace, kwargs, message):
    with pytest.raises(TraceError, match=message):
        tiny_trace.select(**kwargs)


def _experts():
    return np.array([[[0, 1]], [[2, 3]], [[1, 0]]], dtype=np.int16)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(experts=np.array([[[0, 1]], [[2, 8]], [[1, 0]]])),
         r"^trace: column 'experts': value 8 at token 1 layer 0 >= num_experts \(8\); set num_experts"),
        (dict(experts=np.array([[[0, 1]], [[2, 3]], [[-2, 0]]])),
         r"^trace: column 'experts': value -2 at token 2 layer 0 is negative; .* -1 marks an empty slot"),
        (dict(experts=np.array([[[0, 1]], [[3, 3]], [[1, 0]]])),
         r"^trace: column 'experts': expert 3 appears twice at token 1 layer 0; .* must be distinct"),
        (dict(weights=np.array([[[0.5, 0.5]], [[np.nan, 1]], [[1, 0]]])),
         r"^trace: column 'weights': value nan at token 1 layer 0 slot 0 is not finite"),
        (dict(weights=np.array([[[0.5, 0.5]], [[0.2, 1]], [[1, -0.1]]])),
         r"^trace: column 'weights': value -0.1\d* at token 2 layer 0 slot 1 is negative"),
        (dict(positions=[0, 2, 2]),
         r"^trace: column 'position': position 2 at token 2 does not increase .*execution order"),
        (dict(phases=["prefill", "decode", "generate"]),
         r"^trace: column 'phase': 'generate' at token 2 is not one of prefill, decode"),
        (dict(experts=np.zeros((3, 2))), r"^trace: column 'experts': expected 3 dimensions"),
        (dict(experts=np.full((3, 1, 2), 0.5)), r"^trace: column 'experts': expected integers, got dtype float64"),
        (dict(num_experts=0), r"^trace: num_experts must be in 1\.\.32767, got 0"),
        (dict(seq_ids=[0, 1]), r"^trace: column 'seq_id': 2 rows, expected 3"),
        (dict(moe_layers=[0, 0]), r"^trace: moe_layers lists 2 layers but experts has 1"),
        (dict(num_experts=1), r"^trace: top_k \(2\) exceeds num_experts \(1\)"),
    ],
)
def test_validation_messages(change, message):
    kwargs = dict(experts=_experts(), num_experts=8)
    kwargs.update(change)
    experts = kwargs.pop("experts")
    with pytest.raises(TraceError, match=message) as info:
        Trace.from_arrays(experts, **kwargs)
    assert "\n" not in str(info.value)


def test_reserved_metadata_and_json():
    with pytest.raises(TraceError, match="reserved"):
        Trace.from_arrays(_experts(), num_experts=8, metadata_dummy=1, top_k=2)
    with pytest.raises(TraceError, match="JSON-serialisable"):
        Trace.from_arrays(_experts(), num_experts=8, bad=object())


@given(traces())
def test_relabelled_positions_and_metadata_survive_views(trace):
    assert Trace.concat(list(trace.sequences())).equals(trace) if trace.num_tokens else True
    if trace.num_layers:
        assert trace.select(layers=range(trace.num_layers)).equals(trace)
