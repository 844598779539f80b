"""Run generation with the routing hooks and turn what they saw into traces, prompt by prompt."""

from __future__ import annotations

import copy
import datetime as _dt
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from moesim.capture import _deps
from moesim.capture.architectures import MoELayout, inspect_model
from moesim.capture.loading import load_model
from moesim.capture.prompts import Prompt, PromptSet, read_prompts
from moesim.capture.recorder import ForwardRecord, RoutingRecorder
from moesim.errors import CaptureError, ConfigError, TraceError
from moesim.trace.io import TraceWriter, journal_dir, read_trace, trace_format
from moesim.trace.trace import Trace

SOURCE = "huggingface-capture"

COLUMN_DEFINITIONS = {
    "experts": (
        "routed experts the model used, in descending router score (the score the router selected "
        "them by); shared experts are never listed"
    ),
    "weights": "gate weights the model multiplied each selected expert's output by (see routing.weights)",
    "router_logits": "the router's raw logits (transformers' router_logits output), float16",
    "predicted_experts": (
        "for MoE layer l > 0: the top-k that layer l's router (its full routing rule) picks when applied "
        "to the hidden state entering MoE layer l-1's router (the normalised input of the previous MoE "
        "block), i.e. mixtral-offloading's speculative guess; -1 at l = 0"
    ),
}


@dataclass(frozen=True, kw_only=True)
class CaptureOptions:
    """What to capture and how to generate.

    Parameters
    ----------
    max_new_tokens : int
        Tokens generated per prompt (fewer when the model emits EOS first).
    batch_size : int
        Prompts per ``generate`` call (left-padded; padding rows are never recorded).
    logits : bool
        Also store full router logits (``router_logits`` column, float16).
    speculative : bool
        Also store the speculative next-layer guess (``predicted_experts`` column).
    chat_template : bool
        Render text prompts as one user message with the tokenizer's chat template.
    ignore_eos : bool
        Mask EOS until ``max_new_tokens`` (``min_new_tokens = max_new_tokens``) so every prompt
        decodes exactly that many tokens.
    sort_by_length : bool
        Batch prompts of similar length together (longest first) to waste less compute on
        padding; sequence ids stay the prompts' file indices.
    """

    max_new_tokens: int = 64
    batch_size: int = 1
    logits: bool = False
    speculative: bool = False
    chat_template: bool = False
    ignore_eos: bool = False
    sort_by_length: bool = False

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("logits", "speculative", "chat_template", "ignore_eos", "sort_by_length"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_attributes(cls, source: Any) -> CaptureOptions:
        """Options from the same-named attributes of ``source`` (e.g. parsed CLI arguments)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)})


@dataclass(frozen=True)
class CaptureProgress:
    """Passed to the ``progress`` callback after each prompt is durable."""

    seq_id: int
    prompts_done: int
    prompts_total: int
    tokens_captured: int
    elapsed_s: float


@dataclass(frozen=True)
class CaptureResult:
    """What :func:`capture_to_file` did."""

    path: Path
    num_prompts: int
    prompts_captured: int
    prompts_resumed: int
    tokens_captured: int
    elapsed_s: float


# ---------------------------------------------------------------------- public entry points
def capture(
    model: Any,
    prompts: PromptSet | Sequence[Prompt | str | Sequence[int]],
    *,
    tokenizer: Any = None,
    options: CaptureOptions | None = None,
    model_name: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> Trace:
    """Capture a routing trace of ``model`` generating from ``prompts``, in memory.

    Parameters
    ----------
    model : transformers causal-LM model
        A supported MoE architecture (see :func:`moesim.capture.supported_architectures`), in
        eval mode.
    prompts : PromptSet or sequence
        Text, chat messages or token ids; see :mod:`moesim.capture.prompts`.
    tokenizer : transformers tokenizer, optional
        Needed unless every prompt is token ids.
    options : CaptureOptions
    model_name : str, optional
        Trace model name; default ``config.name_or_path``.
    provenance : dict, optional
        Extra provenance (e.g. the requested revision) merged into ``metadata["capture"]``.

    Returns
    -------
    Trace
        One sequence per prompt (id = prompt index): prefill rows (phase prefill, positions
        0..n-1), then one decode row per generated token that was fed back (positions n, ...).

    Notes
    -----
    Decoding is greedy (``do_sample=False``, one beam) with the model's generation config for
    everything else, so runs are deterministic. Speculative guesses follow Eliseev & Mazur,
    "Fast Inference of Mixture-of-Experts Language Models with Offloading" (arXiv:2312.17238).
    """
    _deps.require()
    options = options or CaptureOptions()
    prompts = prompts if isinstance(prompts, PromptSet) else PromptSet.from_prompts(prompts)
    job = _Job(model, prompts, tokenizer, options, model_name, provenance)
    chunks = [trace for _, trace in job.run(skip=frozenset())]
    order = np.argsort([int(t.seq_ids[0]) for t in chunks], kind="stable")
    return Trace.concat([chunks[i] for i in order]).with_metadata(**job.metadata())


def capture_to_file(
    model: Any,
    prompts: PromptSet | Sequence[Prompt | str | Sequence[int]],
    out: str | Path,
    *,
    tokenizer: Any = None,
    options: CaptureOptions | None = None,
    resume: bool = False,
    overwrite: bool = False,
    model_name: str | None = None,
    provenance: dict[str, Any] | None = None,
    progress: Callable[[CaptureProgress], None] | None = None,
) -> CaptureResult:
    """Capture to ``out`` (.parquet or .arrow), appending each prompt durably as it completes.

    Each finished prompt (prefill and decode rows) is appended with :class:`~moesim.TraceWriter`,
    so a killed capture leaves every completed prompt on disk; ``resume=True`` continues after
    them (re-running, whole, any batch that was cut short, so batch composition and therefore
    the numbers are the same as in an uninterrupted run) after checking that the model, prompts
    and settings are the same. ``resume=True`` with nothing to resume starts a fresh capture;
    with a finished ``out`` of the same settings it does nothing. The final file is renamed into
    place atomically. ``overwrite=True`` (without ``resume``) discards an interrupted capture's
    journal instead of refusing to start. Other parameters are as in :func:`capture`;
    ``progress`` is called after each prompt.

    Raises
    ------
    CaptureError
        On a settings mismatch when resuming, or any capture problem; TraceError for an
        interrupted write found without ``resume``.
    """
    _deps.require()
    options = options or CaptureOptions()
    prompts = prompts if isinstance(prompts, PromptSet) else PromptSet.from_prompts(prompts)
    out = Path(out)
    job = _Job(model, prompts, tokenizer, options, model_name, provenance)
    start = time.perf_counter()
    writer, done = _open_writer(job, out, resume, overwrite)
    if writer is None:
        return CaptureResult(out, len(prompts), 0, len(prompts), 0, 0.0)
    resumed = len(done)
    captured = tokens = 0
    for seq_id, chunk in job.run(skip=frozenset(done)):
        writer.append(chunk)
        captured += 1
        tokens += chunk.num_tokens
        if progress is not None:
            progress(CaptureProgress(seq_id, resumed + captured, len(prompts), tokens, time.perf_counter() - start))
    writer.close(metadata=job.metadata())
    return CaptureResult(out, len(prompts), captured, resumed, tokens, time.perf_counter() - start)


def run_capture(
    model_id: str,
    prompts_path: str | Path,
    out: str | Path,
    *,
    options: CaptureOptions | None = None,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[CaptureProgress], None] | None = None,
) -> CaptureResult:
    """Read a prompt file, load ``model_id`` and :func:`capture_to_file` (what the CLI runs).

    Cheap checks come first (output extension, prompt file, options, architecture from the
    config) so a mistake is reported before any weights are read. Loading options are those of
    :func:`moesim.capture.load_model`; the rest as in :func:`capture_to_file`.
    """
    _deps.require()
    trace_format(out)
    prompts = read_prompts(prompts_path)
    options = options or CaptureOptions()
    model, tokenizer, provenance = load_model(
        model_id,
        device=device,
        dtype=dtype,
        revision=revision,
        device_map=device_map,
        attn_implementation=attn_implementation,
    )
    return capture_to_file(
        model,
        prompts,
        out,
        tokenizer=tokenizer,
        options=options,
        resume=resume,
        overwrite=overwrite,
        model_name=model_id,
        provenance=provenance,
        progress=progress,
    )


# ---------------------------------------------------------------------- resume bookkeeping
def _open_writer(job: _Job, out: Path, resume: bool, overwrite: bool) -> tuple[TraceWriter | None, set[int]]:
    journal = journal_dir(out)
    if resume and journal.exists():
        writer = TraceWriter.resume(out)
        header = _writer_metadata(writer)
        _check_same(job, header, f"the interrupted capture in '{journal}'", "overwrite it (--overwrite) to start over")
        job.sessions = list(header.get("capture", {}).get("sessions", [])) + job.sessions
        job.sessions[-1]["prompts_done_before"] = len(writer.completed_seq_ids)
        unknown = sorted(writer.completed_seq_ids - set(range(len(job.prompts))))
        if unknown:
            raise CaptureError(f"file '{out}': the journal holds sequence {unknown[0]}, not a prompt index")
        return writer, set(writer.completed_seq_ids)
    if resume and out.exists():
        try:
            header = read_trace(out, validate=False).metadata
        except TraceError as exc:
            raise CaptureError(f"file '{out}': cannot resume: {exc}") from None
        _check_same(job, header, f"the finished trace '{out}'", "drop --resume to replace it")
        return None, set()
    layout = job.layout
    writer = TraceWriter(
        out,
        num_experts=layout.num_experts,
        num_layers=len(layout.moe_layers),
        top_k=layout.top_k,
        model=job.model_name,
        moe_layers=list(layout.moe_layers),
        metadata=job.metadata(),
        overwrite=overwrite,
    )
    return writer, set()


def _writer_metadata(writer: TraceWriter) -> dict[str, Any]:
    # TraceWriter keeps the header it was opened with (and re-reads it on resume); it has no public
    # accessor yet, see the capture report.
    metadata = getattr(writer, "metadata", None)
    if metadata is None:
        metadata = writer._header.get("metadata", {})
    return dict(metadata)


def _check_same(job: _Job, header: dict[str, Any], what: str, instead: str) -> None:
    previous = header.get("capture", {}).get("settings")
    if header.get("source") != SOURCE or not isinstance(previous, dict):
        raise CaptureError(f"{what} was not written by moesim trace capture; write to a new file")
    current = job.settings()
    for key in sorted(set(previous) | set(current)):
        if previous.get(key) != current.get(key):
            raise CaptureError(
                f"cannot resume {what}: setting '{key}' was {previous.get(key)!r}, now {current.get(key)!r}; "
                f"rerun with the same model, prompts and options, or {instead}"
            )


# ---------------------------------------------------------------------- the capture job
class _Job:
    """One capture: a model, its layout, tokenised prompts, options and provenance."""

    def __init__(
        self,
        model: Any,
        prompts: PromptSet,
        tokenizer: Any,
        options: CaptureOptions,
        model_name: str | None,
        provenance: dict[str, Any] | None,
    ):
        if getattr(model, "training", False):
            raise CaptureError("capture: the model is in training mode (noisy routing); call model.eval() first")
        self.model = model
        self.layout: MoELayout = inspect_model(model)
        self.prompts = prompts
        self.options = options
        self.model_name = model_name or getattr(model.config, "name_or_path", None) or self.layout.arch.model_type
        self.provenance = describe_model(model) | dict(provenance or {})
        self.generation_config = _generation_config(model, tokenizer, options)
        self.token_ids = _tokenize(prompts, tokenizer, options, _vocab_size(model))
        self.sessions = [
            {
                "started_at_utc": _utc_now(),
                "device": self.provenance.get("device"),
                "torch_version": self.provenance.get("torch_version"),
                "transformers_version": self.provenance.get("transformers_version"),
                "prompts_done_before": 0,
            }
        ]

    # -- metadata
    def settings(self) -> dict[str, Any]:
        """What must not change between a capture and its resumption."""
        gc = self.generation_config
        return {
            "model": self.model_name,
            "revision": self.provenance.get("revision"),
            "commit_hash": self.provenance.get("commit_hash"),
            "dtype": self.provenance.get("dtype"),
            "prompts_sha256": self.prompts.sha256,
            "num_prompts": len(self.prompts),
            **asdict(self.options),
            "decoding": "greedy",
            "eos_token_ids": _eos_ids(gc),
            "pad_token_id": gc.pad_token_id,
        }

    def metadata(self) -> dict[str, Any]:
        columns = {"experts": COLUMN_DEFINITIONS["experts"], "weights": COLUMN_DEFINITIONS["weights"]}
        if self.options.logits:
            columns["router_logits"] = COLUMN_DEFINITIONS["router_logits"]
        if self.options.speculative:
            columns["predicted_experts"] = COLUMN_DEFINITIONS["predicted_experts"]
        capture_info = {
            "settings": self.settings(),
            "prompts_file": self.prompts.source,
            "started_at_utc": self.sessions[0]["started_at_utc"],
            "sessions": self.sessions,
            "generation_config": _generation_summary(self.generation_config),
        }
        capture_info.update({k: v for k, v in self.provenance.items() if k not in capture_info})
        return {"source": SOURCE, **self.layout.metadata(), "columns": columns, "capture": capture_info}

    # -- running
    def batches(self) -> list[list[int]]:
        order = list(range(len(self.token_ids)))
        if self.options.sort_by_length:
            order.sort(key=lambda i: (-len(self.token_ids[i]), i))
        size = self.options.batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    def run(self, skip: frozenset[int]) -> Iterator[tuple[int, Trace]]:
        """Yield ``(seq_id, trace)`` per prompt not in ``skip``, batch by batch."""
        for batch in self.batches():
            if all(i in skip for i in batch):
                continue
            for seq_id, trace in zip(batch, self._run_batch(batch), strict=True):
                if seq_id not in skip:
                    yield seq_id, trace

    def _run_batch(self, batch: list[int]) -> list[Trace]:
        import torch

        lengths = [len(self.token_ids[i]) for i in batch]
        width = max(lengths)
        pad = self.generation_config.pad_token_id
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (i, n) in enumerate(zip(batch, lengths, strict=True)):
            input_ids[row, width - n :] = torch.tensor(self.token_ids[i], dtype=torch.long)
            attention_mask[row, width - n :] = 1
        device = _input_device(self.model)
        recorder = RoutingRecorder(
            self.model, self.layout, logits=self.options.logits, speculative=self.options.speculative
        )
        with recorder, torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=copy.deepcopy(self.generation_config),
            )
        sequences = output.sequences if hasattr(output, "sequences") else output
        new_tokens = sequences[:, width:].cpu().numpy()
        generated = [
            _generated_length(row, _eos_ids(self.generation_config), self.options.ignore_eos) for row in new_tokens
        ]
        return [
            self._sequence(recorder.records, row, seq_id, lengths[row], width, generated[row])
            for row, seq_id in enumerate(batch)
        ]

    def _sequence(
        self, records: list[ForwardRecord], row: int, seq_id: int, prompt_len: int, width: int, generated: int
    ) -> Trace:
        """Rows of one prompt: its non-pad prefill columns, then the decode forwards that fed its tokens."""
        columns = {name: [] for name in ("experts", "weights", "logits", "predicted")}
        start = 0  # first padded-input column the next forward covers
        first_real = width - prompt_len
        decode_rows = max(generated - 1, 0)  # the last generated token is never fed back
        for record in records:
            stop = start + record.num_tokens
            if start < width and stop > width:
                raise CaptureError(
                    f"capture: a forward covered input columns {start}..{stop - 1} across the end of the prompt "
                    f"({width}); this generation mode is not supported"
                )
            if start >= width and record.num_tokens != 1:
                raise CaptureError(f"capture: a decode forward fed {record.num_tokens} tokens per sequence, expected 1")
            if stop <= width:
                lo, hi = max(start, first_real), stop
            else:
                lo, hi = start, min(stop, width + decode_rows)
            if lo < hi:
                base = row * record.num_tokens - start
                for name in columns:
                    values = getattr(record, name)
                    if values is not None:
                        columns[name].append(values[:, base + lo : base + hi])
            start = stop
        if start < width + decode_rows:
            raise CaptureError(
                f"capture: prompt {seq_id} generated {generated} tokens but only {start - width} decode forwards "
                f"ran; the generation loop did not behave as expected"
            )
        arrays = {
            name: np.ascontiguousarray(np.concatenate(parts, axis=1).transpose(1, 0, 2)) if parts else None
            for name, parts in columns.items()
        }
        num_tokens = prompt_len + decode_rows
        phases = np.ones(num_tokens, dtype=np.int8)
        phases[:prompt_len] = 0
        return Trace.from_arrays(
            arrays["experts"],
            num_experts=self.layout.num_experts,
            seq_ids=np.full(num_tokens, seq_id, dtype=np.int64),
            positions=np.arange(num_tokens, dtype=np.int32),
            phases=phases,
            weights=arrays["weights"],
            model=self.model_name,
            moe_layers=self.layout.moe_layers,
            predicted_experts=arrays["predicted"],
            router_logits=arrays["logits"],
        )


# ---------------------------------------------------------------------- helpers
def describe_model(model: Any) -> dict[str, Any]:
    """Provenance of a loaded model: id, commit, dtype, devices, library versions."""
    torch, transformers = _deps.require()
    config = model.config
    devices = sorted({str(p.device) for p in model.parameters()})
    info: dict[str, Any] = {
        "model_id": getattr(config, "name_or_path", None) or None,
        "revision": None,
        "commit_hash": getattr(config, "_commit_hash", None),
        "dtype": str(getattr(model, "dtype", "unknown")).removeprefix("torch."),
        "device": ",".join(devices),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    if any(d.startswith("cuda") for d in devices):
        info["gpus"] = sorted({torch.cuda.get_device_name(torch.device(d)) for d in devices if d.startswith("cuda")})
    from moesim import __version__

    info["moesim_version"] = __version__
    return info


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _vocab_size(model: Any) -> int | None:
    embeddings = model.get_input_embeddings()
    return getattr(embeddings, "num_embeddings", None)


def _input_device(model: Any) -> Any:
    return model.get_input_embeddings().weight.device


def _generation_config(model: Any, tokenizer: Any, options: CaptureOptions) -> Any:
    _, transformers = _deps.require()
    source = getattr(model, "generation_config", None)
    gc = copy.deepcopy(source) if source is not None else transformers.GenerationConfig()
    gc.do_sample = False
    gc.num_beams = 1
    # Neutral sampling values: greedy ignores them, and unset ones would be refilled from the
    # model's own (sampling) defaults and warned about on every batch.
    gc.temperature = 1.0
    gc.top_p = 1.0
    gc.top_k = 50  # transformers' default, which it does not warn about
    gc.max_length = None
    gc.max_new_tokens = options.max_new_tokens
    gc.return_dict_in_generate = False
    if options.ignore_eos:
        gc.min_new_tokens = options.max_new_tokens
    if getattr(gc, "stop_strings", None):
        raise CaptureError(
            f"capture: the model's generation config stops on strings {gc.stop_strings!r}, which the trace "
            f"cannot attribute to sequences; clear model.generation_config.stop_strings"
        )
    if gc.eos_token_id is None and tokenizer is not None and tokenizer.eos_token_id is not None:
        gc.eos_token_id = tokenizer.eos_token_id
    if gc.pad_token_id is None:
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        eos = _eos_ids(gc)
        gc.pad_token_id = pad if pad is not None else (eos[0] if eos else 0)
    return gc


def _generation_summary(gc: Any) -> dict[str, Any]:
    """The generation-config values that differ from transformers' defaults (JSON-safe)."""
    summary = gc.to_diff_dict() if hasattr(gc, "to_diff_dict") else gc.to_dict()
    summary.pop("transformers_version", None)
    return {
        k: v
        for k, v in summary.items()
        if not k.startswith("_") and isinstance(v, (str, int, float, bool, list, type(None)))
    }


def _eos_ids(gc: Any) -> list[int]:
    eos = gc.eos_token_id
    if eos is None:
        return []
    return [int(x) for x in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _generated_length(new_tokens: np.ndarray, eos_ids: list[int], ignore_eos: bool) -> int:
    """Tokens generated for one sequence: up to and including its first EOS."""
    if eos_ids and not ignore_eos:
        hits = np.flatnonzero(np.isin(new_tokens, eos_ids))
        if len(hits):
            return int(hits[0]) + 1
    return len(new_tokens)


def _tokenize(
    prompts: PromptSet, tokenizer: Any, options: CaptureOptions, vocab_size: int | None
) -> list[tuple[int, ...]]:
    ids = []
    for index, prompt in enumerate(prompts.prompts):
        where = f"{prompts.source}: prompt {index}"
        if prompt.token_ids is not None:
            tokens = prompt.token_ids
        else:
            if tokenizer is None:
                raise CaptureError(
                    f"{where}: is text but no tokenizer was loaded; give the model's tokenizer or input_ids"
                )
            chat = prompt.chat() if prompt.messages is not None else None
            if chat is None and options.chat_template:
                chat = [{"role": "user", "content": prompt.text}]
            if chat is not None:
                if not getattr(tokenizer, "chat_template", None):
                    raise CaptureError(f"{where}: needs a chat template but the tokenizer has none; use plain prompts")
                text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
                tokens = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            else:
                tokens = tuple(tokenizer(prompt.text)["input_ids"])
        if not tokens:
            raise CaptureError(f"{where}: tokenises to no tokens; remove it or add text")
        if vocab_size is not None and max(tokens) >= vocab_size:
            raise CaptureError(
                f"{where}: token id {max(tokens)} >= the model's vocabulary size {vocab_size}; "
                f"the prompts were tokenised for another model"
            )
        ids.append(tuple(int(t) for t in tokens))
    return ids
