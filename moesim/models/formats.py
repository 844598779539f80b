"""Weight and KV-cache storage formats, with their real size in bytes (scales and zeros included).

A :class:`WeightFormat` describes how one weight matrix ``[out_features, in_features]`` is stored:
values of ``value_bits`` packed into ``word_bits`` containers, plus quantisation metadata per
*block* (a scale and optionally a zero point for every ``block_rows x block_cols`` tile, with
``block_cols=None`` meaning one block per output row: per-channel scaling), plus optional second-level
metadata when the scales themselves are quantised (HQQ, QLoRA double quantisation). Blocks run along
the input (reduction) dimension, as GPTQ/AWQ groups, MX blocks and DeepSeek's FP8 tiles do.
:meth:`WeightFormat.matrix_bytes` is exact for a given shape; :attr:`WeightFormat.bits_per_param`
is the asymptotic rate for large matrices.

Built-in formats (``list_formats()``; bits per parameter for a large matrix, 4096 inputs per row):

===========  ===========================================================================  ========
name         layout                                                                       bits
===========  ===========================================================================  ========
fp32         IEEE float32                                                                 32
bf16, fp16   16-bit floats                                                                16
fp8          E4M3, one fp32 scale per output channel (W8A8 "channel" checkpoints)         8.008
fp8-block    E4M3, one fp32 scale per 128x128 tile (DeepSeek-V3 release format)          8.002
int8         symmetric int8, one fp32 scale per output channel (LLM.int8 style)           8.008
int4         asymmetric int4, group 128, fp16 scale + fp16 zero per group                 4.25
int4-awq     int4, group 128, fp16 scale + 4-bit packed zero (AWQ/GPTQ checkpoints)      4.156
nf4          NF4, block 64, fp32 absmax per block (bitsandbytes, no double quant)        4.5
mxfp4        FP4 E2M1, one E8M0 (8-bit) scale per 32 values (OCP MX v1.0; GPT-OSS)       4.25
hqq-4bit     4-bit, group 64, 8-bit scale/zero, scales requantised per 256 (fp16 meta)    4.252
hqq-3bit     3-bit packed 10 per int32, group 64, 8-bit scale/zero, scale meta per 128   3.454
hqq-2bit     2-bit, group 16, 8-bit scale/zero, scales requantised per 128 (fp16 meta)    3.016
===========  ===========================================================================  ========

The HQQ rows follow ``hqq_base_quant_config(nbits, group_size, quant_zero=True, quant_scale=True)``
of HQQ (Badri & Shaji 2023): scales are quantised to 8 bits in groups of 128 with an fp16 scale and
zero per group, zeros to 8 bits with one fp16 scale/zero pair per tensor. mixtral-offloading
(Eliseev & Mazur 2023, arXiv:2312.17238; ``src/build_model.py``) uses 2-bit group-16 experts and
4-bit group-64 attention with the scale groups widened to 256; the 3-bit row assumes group 64 and
HQQ's ``pack_3bit_32`` layout (ten 3-bit values per 32-bit word, i.e. 3.2 stored bits per value).

KV-cache formats (``kv_bytes_per_element``): fp32 (4), bf16 / fp16 (2), fp8 (1, per-tensor scale).

Formats live in a :class:`~moesim.policies.registry.Registry`; :func:`register_format` adds one and
unknown names raise a ConfigError listing the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from moesim import fields as F
from moesim.policies.registry import Registry

_WHERE = "format"
COMPUTE_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "fp4", "int4")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, kw_only=True)
class WeightFormat:
    """How a weight matrix is stored.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"int4"``.
    value_bits : int
        Bits per stored value (16 for bf16, 4 for int4/MXFP4, 3 for HQQ 3-bit).
    word_bits : int
        Width of the container values are packed into (8 = bytes; HQQ packs 3-bit values ten to a
        32-bit word). Values never straddle words, so a word holds ``word_bits // value_bits``.
    block_rows, block_cols : int, int or None
        Tile sharing one scale/zero: ``block_cols=None`` is one block per output row (per-channel);
        ignored when ``scale_bits == zero_bits == 0``.
    scale_bits, zero_bits : int
        Bits of the scale and of the zero point stored per block.
    scale_meta_group, scale_meta_bits : int
        Second-level metadata: every ``scale_meta_group`` blocks share ``scale_meta_bits`` bits
        (e.g. the fp16 scale and zero of 8-bit-quantised scales); 0 when scales are not quantised.
    tensor_meta_bits : int
        Constant bits per matrix (e.g. the fp16 pair that dequantises HQQ's 8-bit zeros).
    compute_dtype : str
        Tensor-core dtype the matmul runs in on hardware that supports it natively (one of
        ``COMPUTE_DTYPES``); weight-only formats compute in ``"bf16"``/``"fp16"``.
    vector_bytes : int
        Bytes per element of the small unquantised tensors stored beside such weights (norms,
        biases, routers): 4 for fp32 checkpoints, 2 otherwise.
    description, reference : str
        What the layout is and where it is specified.
    """

    name: str
    value_bits: int
    word_bits: int = 8
    block_rows: int = 1
    block_cols: int | None = None
    scale_bits: int = 0
    zero_bits: int = 0
    scale_meta_group: int = 0
    scale_meta_bits: int = 0
    tensor_meta_bits: int = 0
    compute_dtype: str = "bf16"
    vector_bytes: int = 2
    description: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        w = f"{_WHERE}[{self.name!r}]" if isinstance(self.name, str) else _WHERE
        F.check_str(f"{w}.name", self.name)
        F.check_int(f"{w}.value_bits", self.value_bits, minimum=1, maximum=32)
        F.check_int(
            f"{w}.word_bits",
            self.word_bits,
            minimum=self.value_bits,
            maximum=64,
            expected=f"a container width in {self.value_bits}..64 bits",
        )
        if self.word_bits % 8:
            F.fail(f"{w}.word_bits", f"expected a multiple of 8, got {self.word_bits}")
        F.check_int(f"{w}.block_rows", self.block_rows, minimum=1)
        if self.block_cols is not None:
            F.check_int(f"{w}.block_cols", self.block_cols, minimum=1)
        for field in ("scale_bits", "zero_bits", "scale_meta_group", "scale_meta_bits", "tensor_meta_bits"):
            F.check_int(f"{w}.{field}", getattr(self, field), minimum=0)
        if self.scale_meta_bits and not self.scale_meta_group:
            F.fail(f"{w}.scale_meta_group", "expected >= 1 when scale_meta_bits is set, got 0")
        F.check_str(f"{w}.compute_dtype", self.compute_dtype, choices=COMPUTE_DTYPES)
        F.check_int(f"{w}.vector_bytes", self.vector_bytes, minimum=1, maximum=8)

    @property
    def has_scales(self) -> bool:
        return bool(self.scale_bits or self.zero_bits)

    @property
    def values_per_word(self) -> int:
        return self.word_bits // self.value_bits

    @property
    def storage_bits_per_value(self) -> Fraction:
        """Bits a value occupies once packed (3.2 for ten 3-bit values per int32)."""
        return Fraction(self.word_bits, self.values_per_word)

    def bits_per_param(self, in_features: int = 4096) -> float:
        """Bits per weight of a large matrix whose rows hold ``in_features`` inputs."""
        value = self.storage_bits_per_value
        if self.has_scales:
            per_block = self.block_rows * (self.block_cols or in_features)
            value += Fraction(self.scale_bits + self.zero_bits, per_block)
            if self.scale_meta_group:
                value += Fraction(self.scale_meta_bits, per_block * self.scale_meta_group)
        return float(value)

    def num_blocks(self, out_features: int, in_features: int) -> int:
        """Scale blocks of a ``[out_features, in_features]`` matrix (0 without scales)."""
        if not self.has_scales:
            return 0
        cols = 1 if self.block_cols is None else _ceil_div(in_features, self.block_cols)
        return _ceil_div(out_features, self.block_rows) * cols

    def matrix_bits(self, out_features: int, in_features: int) -> int:
        """Exact storage bits of one ``[out_features, in_features]`` matrix (values + metadata)."""
        num_values = out_features * in_features
        if num_values == 0:
            return 0
        bits = _ceil_div(num_values, self.values_per_word) * self.word_bits
        blocks = self.num_blocks(out_features, in_features)
        if blocks:
            bits += blocks * (self.scale_bits + self.zero_bits)
            if self.scale_meta_group:
                bits += _ceil_div(blocks, self.scale_meta_group) * self.scale_meta_bits
            bits += self.tensor_meta_bits
        return bits

    def matrix_bytes(self, out_features: int, in_features: int) -> int:
        """Exact bytes of one ``[out_features, in_features]`` matrix, rounded up to whole bytes."""
        return _ceil_div(self.matrix_bits(out_features, in_features), 8)

    def summary(self) -> str:
        """One line: name, bits per parameter and layout."""
        return f"{self.name}: {self.bits_per_param():.4g} bits/param; {self.description}"


FORMATS: Registry[WeightFormat] = Registry("weight format")
KV_FORMATS: Registry[int] = Registry("KV-cache format")


def register_format(fmt: WeightFormat, *, aliases: tuple[str, ...] = ()) -> WeightFormat:
    """Add a weight format to the registry (``ValueError`` if the name is taken)."""
    return FORMATS.register(fmt.name, aliases=aliases)(fmt)


def get_format(name: object, *, field: str = "weight_format") -> WeightFormat:
    """The registered :class:`WeightFormat` called ``name`` (aliases accepted).

    Raises
    ------
    ConfigError
        ``field: unknown weight format 'x'; use one of bf16, fp16, ...``.
    """
    if isinstance(name, WeightFormat):
        return name
    return FORMATS.get(name, field=field)


def list_formats() -> tuple[str, ...]:
    """Names of the registered weight formats, in registration order."""
    return FORMATS.names()


def kv_bytes_per_element(kv_format: object, *, field: str = "kv_format") -> int:
    """Bytes per cached K/V (or latent, or state) element in ``kv_format``."""
    return KV_FORMATS.get(kv_format, field=field)


def list_kv_formats() -> tuple[str, ...]:
    return KV_FORMATS.names()


# fmt: off
# ------------------------------------------------------------------ built-in formats
register_format(WeightFormat(
    name="fp32", value_bits=32, word_bits=32, compute_dtype="fp32", vector_bytes=4,
    description="IEEE float32", reference="IEEE 754",
), aliases=("float32",))
register_format(WeightFormat(
    name="bf16", value_bits=16, word_bits=16, compute_dtype="bf16",
    description="bfloat16", reference="Google brain float; checkpoints' torch_dtype",
), aliases=("bfloat16",))
register_format(WeightFormat(
    name="fp16", value_bits=16, word_bits=16, compute_dtype="fp16",
    description="IEEE float16", reference="IEEE 754",
), aliases=("float16", "half"))
register_format(WeightFormat(
    name="fp8", value_bits=8, scale_bits=32, compute_dtype="fp8",
    description="FP8 E4M3 with one fp32 scale per output channel",
    reference="Micikevicius et al. 2022 (arXiv:2209.05433); compressed-tensors FP8 'channel' scheme",
), aliases=("fp8-e4m3", "float8"))
register_format(WeightFormat(
    name="fp8-block", value_bits=8, block_rows=128, block_cols=128, scale_bits=32, compute_dtype="fp8",
    description="FP8 E4M3 with one fp32 scale per 128x128 tile",
    reference="DeepSeek-V3 technical report (arXiv:2412.19437) sec. 3.3; weight_block_size [128, 128]",
))
register_format(WeightFormat(
    name="int8", value_bits=8, scale_bits=32, compute_dtype="int8",
    description="symmetric int8 with one fp32 scale per output channel",
    reference="Dettmers et al. 2022, LLM.int8() (arXiv:2208.07339): row-wise absmax scales",
))
register_format(WeightFormat(
    name="int4", value_bits=4, block_cols=128, scale_bits=16, zero_bits=16, compute_dtype="fp16",
    description="asymmetric int4, group 128 along inputs, fp16 scale and fp16 zero per group",
    reference="group-wise affine quantisation as in HQQ/bitsandbytes-style W4A16 (4 + 32/128 bits)",
), aliases=("int4-g128", "w4a16"))
register_format(WeightFormat(
    name="int4-awq", value_bits=4, block_cols=128, scale_bits=16, zero_bits=4, compute_dtype="fp16",
    description="int4, group 128, fp16 scale and 4-bit packed zero per group",
    reference="Lin et al. 2024, AWQ (arXiv:2306.00978); GPTQ checkpoints' qzeros/scales layout",
), aliases=("awq", "gptq"))
register_format(WeightFormat(
    name="nf4", value_bits=4, block_cols=64, scale_bits=32, compute_dtype="bf16",
    description="NormalFloat4, block 64, fp32 absmax per block (no double quantisation)",
    reference="Dettmers et al. 2023, QLoRA (arXiv:2305.14314); bitsandbytes blocksize 64",
))
register_format(WeightFormat(
    name="mxfp4", value_bits=4, block_cols=32, scale_bits=8, compute_dtype="fp4",
    description="MXFP4: FP4 E2M1 values, one E8M0 shared scale per 32 (4.25 bits)",
    reference="OCP Microscaling Formats (MX) Specification v1.0, 2023; GPT-OSS model card",
))
register_format(WeightFormat(
    name="hqq-4bit", value_bits=4, block_cols=64, scale_bits=8, zero_bits=8,
    scale_meta_group=256, scale_meta_bits=32, tensor_meta_bits=32, compute_dtype="fp16",
    description="HQQ 4-bit, group 64, 8-bit scale (meta per 256) and 8-bit zero",
    reference="mixtral-offloading attention config (Eliseev & Mazur 2023); HQQ (Badri & Shaji 2023)",
))
register_format(WeightFormat(
    name="hqq-3bit", value_bits=3, word_bits=32, block_cols=64, scale_bits=8, zero_bits=8,
    scale_meta_group=128, scale_meta_bits=32, tensor_meta_bits=32, compute_dtype="fp16",
    description="HQQ 3-bit (10 per int32), group 64, 8-bit scale (meta per 128) and 8-bit zero",
    reference="HQQ hqq_base_quant_config(nbits=3, group_size=64, quant_zero, quant_scale), pack_3bit_32",
))
register_format(WeightFormat(
    name="hqq-2bit", value_bits=2, block_cols=16, scale_bits=8, zero_bits=8,
    scale_meta_group=128, scale_meta_bits=32, tensor_meta_bits=32, compute_dtype="fp16",
    description="HQQ 2-bit, group 16, 8-bit scale (meta per 128) and 8-bit zero",
    reference="mixtral-offloading expert config (Eliseev & Mazur 2023, arXiv:2312.17238); HQQ",
))

KV_FORMATS.register("bf16", aliases=("bfloat16",))(2)
KV_FORMATS.register("fp16", aliases=("float16", "half"))(2)
KV_FORMATS.register("fp32", aliases=("float32",))(4)
KV_FORMATS.register("fp8", aliases=("fp8-e4m3", "float8"))(1)
# fmt: on
