"""Trace files: round trips, atomic writes, streaming and resume, and every read error."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim import Trace, TraceError, TraceWriter, read_trace, write_trace
from moesim.trace import io as trace_io
from moesim.trace import schema
from tests.strategies import traces


@settings(max_examples=40)
@given(trace=traces(), suffix=st.sampled_from([".parquet", ".arrow"]))
def test_write_read_round_trip(tmp_path_factory, trace, suffix):
    path = tmp_path_factory.mktemp("rt") / f"t{suffix}"
    write_trace(trace, path)
    back = read_trace(path)
    assert back.equals(trace)
    assert back.metadata == trace.metadata


def test_ipc_read_is_memory_mapped_zero_copy(tmp_path, tiny_trace):
    path = write_trace(tiny_trace, tmp_path / "t.arrow")
    back = read_trace(path)
    assert not back.experts.flags.owndata and not back.experts.flags.writeable
    assert back.equals(tiny_trace)


def test_write_is_atomic_and_keeps_old_file_on_failure(tmp_path, tiny_trace, monkeypatch):
    path = tmp_path / "t.parquet"
    write_trace(tiny_trace, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(trace_io, "_write_table", boom)
    with pytest.raises(RuntimeError):
        write_trace(tiny_trace.select(seqs=[0]), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def _table(trace):
    return trace_io.to_table(trace)


def _write_raw(table, path):
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace_schema_metadata({schema.VERSION_KEY: b"7", schema.METADATA_KEY: t.schema.metadata[schema.METADATA_KEY]}),
         r"trace format version 7 is not supported \(this moesim reads version 1\); upgrade moesim"),
        (lambda t: t.replace_schema_metadata({}),
         r"not a moesim trace .* `moesim trace convert IN OUT --from FORMAT`"),
        (lambda t: t.drop_columns(["position"]),
         r"missing column 'position'; a moesim trace needs columns seq_id, position, phase, experts"),
        (lambda t: t.set_column(0, pa.field("seq_id", pa.int32()), t.column("seq_id").cast(pa.int32())),
         r"column 'seq_id' has type int32, expected int64"),
        (lambda t: t.set_column(3, "experts", pa.array([[1, 2]] * len(t))),
         r"column 'experts' has type list<.*>, expected fixed_size_list<fixed_size_list<int16, 2>, 3>"),
    ],
)
def test_schema_errors_name_file_and_fix(tmp_path, tiny_trace, mutate, message):
    table = _table(tiny_trace)
    path = _write_raw(mutate(table), tmp_path / "bad.parquet")
    with pytest.raises(TraceError, match=message) as info:
        read_trace(path)
    assert str(info.value).startswith(f"file '{path}': ")
    assert "\n" not in str(info.value)


def test_value_errors_on_read_name_file(tmp_path, tiny_trace):
    experts = tiny_trace.experts.copy()
    experts[6, 2, 1] = 8
    bad = Trace.from_arrays(experts % 8, num_experts=8)  # valid in memory
    table = _table(bad)
    leaf = pa.array(experts.reshape(-1))
    nested = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(leaf, 2), 3)
    path = _write_raw(table.set_column(3, table.schema.field("experts"), nested), tmp_path / "ids.parquet")
    with pytest.raises(TraceError, match=rf"^file '{path}': column 'experts': value 8 at token 6 layer 2 >= num_experts \(8\)"):
        read_trace(path)
    assert read_trace(path, validate=False).experts[6, 2, 1] == 8


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_truncated_and_corrupt_files(tmp_path, tiny_trace, suffix):
    path = write_trace(tiny_trace, tmp_path / f"t{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match=r"truncated or corrupt: re-create or re-download it") as info:
        read_trace(path)
    assert str(info.value).startswith(f"file '{path}': cannot be read as ")
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(TraceError, match="truncated or corrupt"):
        read_trace(path)


def test_unknown_extension_and_missing_file(tmp_path, tiny_trace):
    with pytest.raises(TraceError, match=r"unknown trace extension '\.csv'; use \.parquet .* or \.arrow"):
        write_trace(tiny_trace, tmp_path / "t.csv")
    with pytest.raises(TraceError, match=r"no such file"):
        read_trace(tmp_path / "absent.parquet")


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_streaming_writer_appends_row_groups(tmp_path, tiny_trace, suffix):
    path = tmp_path / f"s{suffix}"
    with TraceWriter(path, num_experts=8, num_layers=3, top_k=2, model="tiny-test",
                     moe_layers=[1, 3, 5], metadata={"source": "tests"}) as writer:
        for seq in tiny_trace.sequences():
            writer.append(seq)
        assert not path.exists()
    assert read_trace(path).equals(tiny_trace)
    assert not trace_io.journal_dir(path).exists()
    if suffix == ".parquet":
        assert pq.ParquetFile(path).num_row_groups == 2


def test_streaming_writer_resumes_after_crash(tmp_path, tiny_trace):
    path = tmp_path / "s.parquet"
    first, second = list(tiny_trace.sequences())
    writer = TraceWriter(path, num_experts=8, num_layers=3, top_k=2, model="tiny-test",
                         moe_layers=[1, 3, 5], metadata={"source": "tests"})
    writer.append(first)
    # crash: a half-written temp file beside the parts, no close()
    (trace_io.journal_dir(path) / ".part-00000001.arrow.tmp-x").write_bytes(b"garbage")
    del writer
    with pytest.raises(TraceError, match=r"interrupted write left .*resume"):
        TraceWriter(path, num_experts=8, num_layers=3, top_k=2)
    resumed = TraceWriter.resume(path)
    assert resumed.completed_seq_ids == {0}
    resumed.append(second)
    resumed.close()
    assert read_trace(path).equals(tiny_trace)


def test_streaming_writer_rejects_split_or_mismatched_chunks(tmp_path, tiny_trace):
    path = tmp_path / "s.arrow"
    writer = TraceWriter(path, num_experts=8, num_layers=3, top_k=2, moe_layers=[1, 3, 5])
    first, second = list(tiny_trace.sequences())
    writer.append(first)
    writer.append(second)
    with pytest.raises(TraceError, match="sequence 0 was already written"):
        writer.append(first)
    with pytest.raises(TraceError, match=r"chunk has E=8 L=1 k=2"):
        writer.append(first.select(layers=[0]))
    writer.close()
    assert read_trace(path).num_sequences == 2
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


def test_resume_without_journal(tmp_path):
    with pytest.raises(TraceError, match="nothing to resume"):
        TraceWriter.resume(tmp_path / "x.parquet")
