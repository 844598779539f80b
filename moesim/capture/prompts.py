"""Prompt files for trace capture: ``.txt`` (one prompt per line) or ``.jsonl`` (one object per line).

A ``.jsonl`` object holds exactly one of

* ``"prompt"``: a string (wrapped as a user message when the chat template is requested),
* ``"messages"``: a chat, a list of ``{"role": ..., "content": ...}`` (always rendered with the
  tokenizer's chat template),
* ``"input_ids"``: already tokenised prompt, a list of token ids (fed as is).

Other keys (ids, labels, categories) are ignored. Blank lines are skipped in both formats; sequence
ids in the trace are the 0-based index of the prompt among the non-blank lines. Nothing here imports
torch.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import CaptureError

PROMPT_SUFFIXES = (".txt", ".jsonl")
_KINDS = ("prompt", "messages", "input_ids")


@dataclass(frozen=True)
class Prompt:
    """One prompt: exactly one of ``text``, ``messages`` or ``token_ids`` is set."""

    text: str | None = None
    messages: tuple[tuple[tuple[str, str], ...], ...] | None = None
    token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.text, self.messages, self.token_ids)) != 1:
            raise CaptureError("prompt: give exactly one of text, messages or token_ids")

    @classmethod
    def from_messages(cls, messages: Sequence[dict[str, str]]) -> Prompt:
        return cls(messages=tuple(tuple(sorted(m.items())) for m in messages))

    def chat(self) -> list[dict[str, str]]:
        """The messages as the list of dicts ``apply_chat_template`` takes."""
        return [dict(m) for m in self.messages or ()]

    def to_json(self) -> dict[str, Any]:
        if self.text is not None:
            return {"prompt": self.text}
        if self.messages is not None:
            return {"messages": self.chat()}
        return {"input_ids": list(self.token_ids or ())}


@dataclass(frozen=True)
class PromptSet:
    """Prompts in file order with the provenance recorded in a trace."""

    prompts: tuple[Prompt, ...]
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def from_prompts(cls, prompts: Iterable[Prompt | str | Sequence[int]], source: str = "<memory>") -> PromptSet:
        """Prompts given in code: strings are text prompts, integer sequences are token ids.

        ``sha256`` is taken over the canonical JSON of the prompts, so equal prompts hash equally.
        """
        items = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, Prompt):
                items.append(prompt)
            elif isinstance(prompt, str):
                items.append(Prompt(text=prompt))
            else:
                items.append(Prompt(token_ids=_token_ids(f"prompt {i}", prompt)))
        if not items:
            raise CaptureError(f"{source}: no prompts given")
        canonical = json.dumps([p.to_json() for p in items], sort_keys=True, separators=(",", ":"))
        return cls(tuple(items), source, hashlib.sha256(canonical.encode()).hexdigest())


def read_prompts(path: str | os.PathLike) -> PromptSet:
    """Read a ``.txt`` or ``.jsonl`` prompt file.

    Raises
    ------
    CaptureError
        Naming the file and line of the first problem (unknown extension, unreadable or empty
        file, malformed JSON, a line without ``prompt``/``messages``/``input_ids``).
    """
    path = Path(path)
    where = f"file '{path}'"
    suffix = path.suffix.lower()
    if suffix not in PROMPT_SUFFIXES:
        raise CaptureError(
            f"{where}: unknown prompt file extension {suffix!r}; use .txt (one prompt per line) or "
            f'.jsonl (one {{"prompt": ...}} or {{"messages": [...]}} object per line)'
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaptureError(f"{where}: cannot be read ({exc.strerror or exc}); check the path") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CaptureError(f"{where} line {line}: not valid UTF-8 ({exc.reason}); save the file as UTF-8") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if suffix == ".txt":
            prompts.append(Prompt(text=line))
        else:
            prompts.append(_json_prompt(f"{where} line {number}", line))
    if not prompts:
        raise CaptureError(f"{where}: no prompts (the file is empty or blank); put one prompt per line")
    return PromptSet(tuple(prompts), str(path), hashlib.sha256(raw).hexdigest())


def _json_prompt(where: str, line: str) -> Prompt:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CaptureError(
            f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
        ) from None
    if not isinstance(record, dict):
        raise CaptureError(f"{where}: expected a JSON object, got {type(record).__name__}")
    present = [key for key in _KINDS if key in record]
    if len(present) != 1:
        found = f"found {present}" if present else f"found keys {sorted(record)}"
        raise CaptureError(f"{where}: expected exactly one of 'prompt', 'messages' or 'input_ids', {found}")
    key = present[0]
    value = record[key]
    if key == "prompt":
        if not isinstance(value, str) or not value:
            raise CaptureError(f"{where}: 'prompt' must be a non-empty string, got {value!r:.60}")
        return Prompt(text=value)
    if key == "input_ids":
        return Prompt(token_ids=_token_ids(where, value))
    if not isinstance(value, list) or not value:
        raise CaptureError(f'{where}: \'messages\' must be a non-empty list of {{"role", "content"}} objects')
    for i, message in enumerate(value):
        ok = (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        )
        if not ok:
            raise CaptureError(
                f"{where}: messages[{i}] must be an object with string 'role' and 'content', got {message!r:.80}"
            )
    return Prompt.from_messages(value)


def _token_ids(where: str, value: object) -> tuple[int, ...]:
    expected = f"{where}: 'input_ids' must be a non-empty list of non-negative token ids"
    if isinstance(value, (str, bytes, dict)):
        raise CaptureError(f"{expected}, got {value!r:.60}")
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise CaptureError(f"{expected}, got {value!r:.60}") from None
    if not items:
        raise CaptureError(f"{expected}, got an empty list")
    ids = []
    for token in items:
        try:
            if isinstance(token, bool):
                raise TypeError
            token_id = operator.index(token)
        except TypeError:
            raise CaptureError(f"{expected}, found {token!r:.30}") from None
        if token_id < 0:
            raise CaptureError(f"{expected}, found {token_id}")
        ids.append(token_id)
    return tuple(ids)
