"""Load a Hugging Face MoE model and tokenizer for capture, checking support before the weights."""

from __future__ import annotations

from typing import Any

from moesim.capture import _deps
from moesim.capture.architectures import check_supported
from moesim.errors import CaptureError, ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; checks ``cuda[:N]`` exists."""
    torch, _ = _deps.require()
    if not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
        raise ConfigError(f"device: expected one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CaptureError(f"device: {device!r} requested but torch sees no CUDA GPU; use --device cpu")
    return device


def load_model(
    model_id: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Load ``model_id`` (Hub id or local directory) for capture.

    Parameters
    ----------
    model_id : str
    device : {"auto", "cpu", "cuda", "cuda:N"}
        Single device to put the whole model on; ignored when ``device_map`` is given.
    dtype : {"auto", "float32", "bfloat16", "float16"}
        ``"auto"`` keeps the checkpoint's dtype.
    revision : str, optional
        Branch, tag or commit on the Hub.
    device_map : str or dict, optional
        Passed to ``from_pretrained`` (e.g. ``"auto"`` to spread a large model over GPUs and CPU;
        needs ``accelerate``).
    attn_implementation : str, optional
        E.g. ``"eager"`` or ``"sdpa"``; default is transformers' choice.

    Returns
    -------
    (model, tokenizer or None, provenance dict)
        The model in eval mode; the tokenizer is None when the checkpoint has none.

    Raises
    ------
    CaptureError
        Unsupported architecture (checked from the config, before any weights are read), a model
        that cannot be found or loaded, or a missing ``accelerate`` for ``device_map``.
    """
    torch, transformers = _deps.require()
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    where = f"model '{model_id}'"
    try:
        config = transformers.AutoConfig.from_pretrained(model_id, revision=revision)
    except (OSError, ValueError) as exc:
        raise CaptureError(
            f"{where}: cannot load its config ({_first_line(exc)}); check the id/path and network access"
        ) from None
    check_supported(config, model_id)
    kwargs: dict[str, Any] = {"revision": revision, "dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    target = None
    if device_map is not None:
        kwargs["device_map"] = device_map
    else:
        target = resolve_device(device)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    except ImportError as exc:
        raise CaptureError(f"{where}: {_first_line(exc)}; device_map needs `pip install accelerate`") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise CaptureError(f"{where}: cannot load its weights ({_first_line(exc)})") from None
    if target is not None:
        model = model.to(target)
    model.eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_id, revision=revision)
    except (OSError, ValueError, KeyError, TypeError):
        tokenizer = None  # token-id prompts still work; text prompts report the missing tokenizer
    provenance = {
        "model_id": model_id,
        "revision": revision,
        "device_map": _json_device_map(model) if device_map else None,
    }
    return model, tokenizer, provenance


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:240] + ("..." if len(text) > 240 else "")


def _json_device_map(model: Any) -> dict[str, str] | None:
    mapping = getattr(model, "hf_device_map", None)
    return {str(k): str(v) for k, v in mapping.items()} if mapping else None
