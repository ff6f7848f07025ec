"""``python -m lipforcing_core convert IN -o OUT.safetensors [--dtype bf16|fp8_e4m3fn]``.

Rewrites any merged DiT checkpoint :func:`~lipforcing_core.checkpoints.load_dit` reads (the
released ``.pth`` pickle, safetensors, a shard folder or index) as one safetensors file, which
loads lazily and without unpickling. ``bf16`` casts every floating tensor to bfloat16 (the
release's own dtype: a bit-identical copy of it); ``fp8_e4m3fn`` also stores the transformer
blocks' linear weights as e4m3 with one float32 scale per output channel
(``<layer>.weight_scale``, see :mod:`lipforcing_core.models.fp8`), about half the size.

Streaming: the input is memory-mapped (pickles) or read tensor by tensor (safetensors), the
output header is computed from the input's shapes alone, and each tensor is converted and
written before the next is read, so the converted dict is never held in memory (the summary
printed at the end gives the process's peak resident set, ``peak_rss_mb``, beside the input
size; docs/benchmarks.md has measured numbers). The file is
written under a temporary name in the output folder and renamed when complete; a malformed or
incomplete input is rejected before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open

from ..checkpoints import (
    SAFETENSORS_SUFFIXES,
    CheckpointError,
    _is_diffusers,
    check_fp8_scales,
    check_state_dict,
    detect_preset,
    dit_keys,
    from_diffusers,
    read_shapes,
    read_state_dict,
    shard_paths,
    strip_prefixes,
    unwrap_state_dict,
)
from ..config import get_preset
from ..models.fp8 import BLOCK_LINEAR, FP8, SCALE_NAME, dequantize_rows, fp8_layer_names, quantize_rows

OUTPUT_DTYPES = {"bf16": torch.bfloat16, "fp8_e4m3fn": FP8}
_SAFETENSORS_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", FP8: "F8_E4M3",
                      torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8",
                      torch.bool: "BOOL"}
_DTYPES_BY_NAME = {str(d).removeprefix("torch."): d for d in _SAFETENSORS_NAMES}

Planned = tuple[str, torch.dtype, tuple[int, ...]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="merged DiT checkpoint: .pth/.pt, .safetensors, shard folder or index")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output .safetensors file")
    parser.add_argument("--dtype", choices=tuple(OUTPUT_DTYPES), default="bf16",
                        help="bf16: every float tensor in bfloat16; fp8_e4m3fn: block linear weights in fp8 "
                             "with per-output-channel scales, the rest bfloat16")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    report = convert(args.input, args.out, args.dtype, overwrite=args.overwrite)
    print(json.dumps(report))
    return 0


def convert(source: str | Path, out: str | Path, dtype: str = "bf16", *, overwrite: bool = False) -> dict:
    """Convert ``source`` to the safetensors file ``out`` (see the module docstring); returns a summary."""
    out = Path(out)
    if out.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise CheckpointError(f"output {out} must end in .safetensors")
    inputs = {p.resolve() for p in shard_paths(source)}
    if out.resolve() in inputs:
        raise FileExistsError(f"output {out} is the input; choose another name (inputs are never overwritten)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {out} exists; choose another name or pass --overwrite")
    shapes = read_shapes(source)
    preset = _check_complete(source, shapes)
    plan = output_plan(shapes, OUTPUT_DTYPES[dtype])
    metadata = {"format": "pt", "preset": preset, "dtype": dtype, "converted_from": Path(source).name}
    if dtype == "fp8_e4m3fn":
        metadata["quantization"] = json.dumps({"format": "float8_e4m3fn", "scale": "per output channel, float32",
                                               "scale_key": f"<layer>.{SCALE_NAME}", "layers": BLOCK_LINEAR.pattern})
    with ExitStack() as stack:
        tensors = lazy_tensors(source, stack)
        written = write_safetensors(out, plan, converted(tensors, shapes, OUTPUT_DTYPES[dtype]), metadata)
    return {"output": str(out), "preset": preset, "dtype": dtype, "tensors": len(plan), "bytes": written,
            "input_bytes": sum(f.stat().st_size for f in inputs),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _check_complete(source: str | Path, shapes: dict[str, tuple[list[int], str]]) -> str:
    """The preset of a complete Lip Forcing DiT, or a CheckpointError saying what is wrong."""
    preset = detect_preset(shapes)
    if "audio_proj.proj.weight" not in shapes:
        raise CheckpointError(f"{source} has no audio modules: a Wan2.1 base model, not a merged Lip Forcing DiT")
    expected = dit_keys(get_preset(preset), check_fp8_scales(shapes, source))
    missing, unexpected, wrong = check_state_dict(shapes, expected)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source} is not a complete Lip Forcing DiT (preset {preset!r}): missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    return preset


def _roles(shapes: dict[str, tuple[list[int], str]], dtype: torch.dtype) -> Iterator[tuple[str, str]]:
    """``(weight key, role)`` per input tensor except scales: ``fp8`` (kept with its scale), ``dequantize``
    (fp8 in, wider out), ``quantize`` (a block linear weight to fp8) or ``cast``."""
    stored_fp8 = set(fp8_layer_names(shapes))
    for key in shapes:
        if key.endswith("." + SCALE_NAME):
            continue  # travels with its weight
        layer = key.removesuffix(".weight")
        if layer in stored_fp8:
            yield key, "fp8" if dtype == FP8 else "dequantize"
        elif dtype == FP8 and key.endswith(".weight") and BLOCK_LINEAR.fullmatch(layer):
            yield key, "quantize"
        else:
            yield key, "cast"


def output_plan(shapes: dict[str, tuple[list[int], str]], dtype: torch.dtype) -> list[Planned]:
    """``(name, dtype, shape)`` of every output tensor, in writing order."""
    plan: list[Planned] = []
    for key, role in _roles(shapes, dtype):
        shape, stored = shapes[key]
        if role in ("fp8", "quantize"):
            plan += [(key, FP8, tuple(shape)), (_scale_key(key), torch.float32, (shape[0],))]
            continue
        kind = _DTYPES_BY_NAME.get(stored) if role == "cast" else dtype
        if kind is None:
            raise CheckpointError(f"tensor {key} has dtype {stored}, which the converter does not write")
        plan.append((key, torch.bfloat16 if kind.is_floating_point else kind, tuple(shape)))
    return plan


def _scale_key(weight_key: str) -> str:
    return f"{weight_key.removesuffix('.weight')}.{SCALE_NAME}"


def lazy_tensors(source: str | Path, stack: ExitStack) -> dict[str, Callable[[], torch.Tensor]]:
    """Key -> loader of every tensor named by ``source`` (keys as :func:`read_shapes` names them).

    Safetensors files stay open in ``stack`` and are read one tensor per call; pickles are
    memory-mapped, so a tensor's pages are read when it is converted.
    """
    out: dict[str, Callable[[], torch.Tensor]] = {}
    for f in shard_paths(source):
        if f.suffix.lower() in SAFETENSORS_SUFFIXES:
            handle = stack.enter_context(safe_open(str(f), framework="pt"))
            out.update({strip_prefixes(k): partial(handle.get_tensor, k) for k in handle.keys()})
        else:
            out.update({k: partial(torch.Tensor.detach, v)
                        for k, v in unwrap_state_dict(read_state_dict(f), str(f)).items()})
    return from_diffusers(out) if _is_diffusers(out) else out


def converted(tensors: dict[str, Callable[[], torch.Tensor]], shapes: dict, dtype: torch.dtype
              ) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` in :func:`output_plan` order, converting one input tensor at a time."""
    for key, role in _roles(shapes, dtype):
        value = _read(tensors, key)
        if role == "quantize":
            q, scale = quantize_rows(value)
            yield key, q
            yield _scale_key(key), scale
        elif role == "fp8":
            yield key, value
            yield _scale_key(key), _read(tensors, _scale_key(key)).float()
        elif role == "dequantize":
            yield key, dequantize_rows(value, _read(tensors, _scale_key(key)), torch.bfloat16)
        else:
            yield key, value.to(torch.bfloat16) if value.is_floating_point() else value


def _read(tensors: dict[str, Callable[[], torch.Tensor]], key: str) -> torch.Tensor:
    try:
        return tensors[key]()
    except Exception as err:  # noqa: BLE001 - a damaged file fails here at the latest
        raise CheckpointError(f"could not read tensor {key}: {err}") from err


def write_safetensors(path: Path, plan: list[Planned], tensors: Iterator[tuple[str, torch.Tensor]],
                      metadata: dict[str, str]) -> int:
    """Write ``tensors`` (which must follow ``plan``) as a safetensors file, atomically; returns its size.

    The header comes from ``plan`` alone, then each tensor's bytes are appended as it arrives.
    """
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape in plan:
        size = torch.Size(shape).numel() * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS_NAMES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".part", prefix=f".{path.stem}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            for (name, dtype, shape), (got, tensor) in zip(plan, tensors, strict=True):
                if (got, tensor.dtype, tuple(tensor.shape)) != (name, dtype, shape):
                    raise RuntimeError(f"converter produced {got} {tensor.dtype} {tuple(tensor.shape)}, "
                                       f"planned {name} {dtype} {shape}")
                f.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it a new file's usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(raw) + 8 + offset
