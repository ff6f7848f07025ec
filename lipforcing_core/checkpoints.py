"""Every on-disk weight format the pack accepts, read safely into one flat state dict.

Untrusted pickles (``.pth/.pt/.bin/.model``) are only ever opened with ``weights_only=True``
and memory-mapped, so reading a 28 GB checkpoint costs address space, not RAM.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import load_file

from .errors import InputError

StateDict = dict[str, torch.Tensor]
ModuleT = TypeVar("ModuleT", bound=nn.Module)
ConfigT = TypeVar("ConfigT")

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


class CheckpointError(InputError):
    """A weight file is missing, unreadable, or not the kind of model the caller asked for."""


def read_state_dict(path: str | Path, device: str = "cpu") -> StateDict:
    """Read a safetensors or torch-pickle file into a (possibly nested) mapping of tensors.

    Pickles are loaded with ``weights_only=True`` and ``mmap=True`` (zip-format files). A pickle
    that holds anything but plain data and tensors is refused with our own message and never run.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        try:
            return load_file(str(path), device=device)
        except Exception as err:  # noqa: BLE001 - any parse failure means "not a weight file"
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # harmless, multi-line
            try:
                return torch.load(path, map_location=device, weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                # Legacy (non-zip) pickles cannot be memory-mapped.
                return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a weight file"
        raise _unreadable(path, err) from None


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    """Our own words for a failed ``torch.load``: torch's message for a refused pickle suggests
    disabling ``weights_only``, which would run the file's code, so it is never passed on."""
    text = str(err)
    named = re.search(r"GLOBAL (\S+)", text)
    if "Weights only load failed" in text and named:
        return CheckpointError(f"{path} is not a plain weights file: it holds Python objects ({named.group(1)}) "
                               "besides tensors and plain data, so it was not loaded (pickled code is never run); "
                               "expected a .safetensors file or a torch state dict")
    if "Weights only load failed" in text:
        reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        text = reason.group(1) if reason else "refused by the weights-only loader"
    reason = (text.strip().splitlines() or [""])[0]
    return CheckpointError(f"{path} is not a readable torch checkpoint ({type(err).__name__}: {reason}); expected "
                           ".safetensors or a torch state dict (.pth/.pt/.bin)")


def read_metadata(path: str | Path) -> dict[str, object]:
    """JSON-decoded safetensors metadata of ``path`` (``{}`` for other formats or files without any).

    Files this project writes carry their architecture as ``config`` (and e.g. ``metrics``), so a
    loader needs nothing but the file.
    """
    if Path(path).suffix.lower() not in SAFETENSORS_SUFFIXES:
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    out = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # plain strings, e.g. {"format": "pt"} written by other tools
    return out


def stored_config(path: str | Path, config_cls: type[ConfigT]) -> ConfigT | None:
    """The dataclass ``config_cls`` from the ``config`` entry of ``path``'s metadata (None if absent)."""
    stored = read_metadata(path).get("config")
    if not isinstance(stored, dict):
        return None
    try:
        return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
    except TypeError as err:
        raise CheckpointError(f"{path}: its metadata config does not describe a {config_cls.__name__} ({err})") from err


def materialize(build: Callable[[], ModuleT], state: StateDict, *, what: str,
                dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> ModuleT:
    """Build a module on the meta device and give it ``state``'s tensors by assignment.

    The weights are never held twice: the module has no storage until it takes the checkpoint's
    (memory-mapped) tensors. Floating tensors are cast to ``dtype`` when given. A key or shape
    mismatch raises :class:`CheckpointError` naming ``what``. Returns the module in eval mode
    without gradients.
    """
    with torch.device("meta"):
        model = build()
    cast = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
            for k, v in state.items()}
    try:
        model.load_state_dict(cast, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint does not match {what}: {err}") from err
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------
# Lip Forcing DiT checkpoints
# --------------------------------------------------------------------------------------------
# Accepted layouts (docs/design.md §1):
# * one merged file (``lipforcing_14b.pth``, ``.safetensors``): flat keys, or nested under
#   ``{"model": {"net": ...}}`` / ``{"net": ...}``, optionally prefixed ``model.`` / ``_core.``;
# * Wan2.1-T2V base shards (original or diffusers key names, a list of files, their
#   ``*.index.json`` or their folder) plus an OmniAvatar-LS adapter: LoRA pairs
#   ``<module>.lora_A[.default].weight`` / ``lora_B`` merged as ``W += (alpha/r) B@A``, the
#   audio modules, and a 33/49/65-channel patch embedding zero-padded to 65 input channels.

NESTING_KEYS = ("model", "net", "state_dict", "module", "ema")
KEY_PREFIXES = ("_core.", "model.", "module.", "net.", "transformer.", "diffusion_model.")
LORA_KEY = re.compile(r"^(?P<base>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")
DEFAULT_LORA_ALPHA = 64.0

# diffusers WanTransformer3DModel name -> original Wan name (order matters).
_DIFFUSERS_RENAMES = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("proj_out", "head.head"),
    ("attn1.to_out.0", "self_attn.o"), ("attn2.to_out.0", "cross_attn.o"),
    ("attn1.to_", "self_attn."), ("attn2.to_", "cross_attn."),
    ("attn1.norm_", "self_attn.norm_"), ("attn2.norm_", "cross_attn.norm_"),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
)


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> StateDict:
    """Find the flat tensor mapping inside a loaded checkpoint and strip wrapper prefixes."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise CheckpointError(f"{source} holds no tensors (top-level keys: {_few(obj)})")
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} is not a state dict (got {type(obj).__name__})")
    return {strip_prefixes(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def strip_prefixes(key: str) -> str:
    """Drop wrapper prefixes such as ``model.`` or ``_core.`` from a parameter name."""
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _few(keys: Iterable[str], n: int = 5) -> str:
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(map(str, keys[:n])) + more


def from_diffusers(sd: StateDict) -> StateDict:
    """Rename diffusers ``WanTransformer3DModel`` keys to the original Wan / Lip Forcing names."""
    out = {}
    for key, value in sd.items():
        for old, new in _DIFFUSERS_RENAMES:
            key = key.replace(old, new)
        if key.startswith("blocks."):
            key = re.sub(r"\.norm([23])\.", lambda m: ".norm3." if m.group(1) == "2" else ".norm2.", key)
            key = key.replace(".scale_shift_table", ".modulation")
        elif key == "scale_shift_table":
            key = "head.modulation"
        out[key] = value
    return out


def _is_diffusers(sd: Mapping[str, object]) -> bool:
    return any("condition_embedder" in k or ".attn1." in k for k in sd)


def shard_paths(path: str | Path) -> list[Path]:
    """Weight files named by ``path``: a file, a ``*.index.json``, or a folder of shards."""
    path = Path(path)
    if path.is_dir():
        index = sorted(path.glob("*.safetensors.index.json"))
        if index:
            return shard_paths(index[0])
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"folder {path} holds no .safetensors weight files")
        return files
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"{path} is not a safetensors index (no weight_map): {err}") from err
        return [path.parent / name for name in dict.fromkeys(weight_map.values())]
    return [path]


def read_shards(paths: str | Path | Sequence[str | Path]) -> StateDict:
    """Read and merge every file named by ``paths`` into one unwrapped state dict."""
    files = [f for p in ([paths] if isinstance(paths, (str, Path)) else paths) for f in shard_paths(p)]
    merged: StateDict = {}
    for f in files:
        merged.update(unwrap_state_dict(read_state_dict(f), str(f)))
    return from_diffusers(merged) if _is_diffusers(merged) else merged


def read_shapes(path: str | Path) -> dict[str, tuple[list[int], str]]:
    """Key -> (shape, dtype name) of every tensor named by ``path`` without loading safetensors data.

    Pickles are memory-mapped, so even a 28 GB ``.pth`` costs no RAM here.
    """
    out: dict[str, tuple[list[int], str]] = {}
    for f in shard_paths(path):
        if f.suffix.lower() in SAFETENSORS_SUFFIXES:
            if not f.is_file():
                raise CheckpointError(f"checkpoint file not found: {f}")
            try:
                with safe_open(str(f), framework="pt") as handle:
                    entries = {k: handle.get_slice(k) for k in handle.keys()}
                    raw = {k: (list(e.get_shape()), _dtype_name(e.get_dtype())) for k, e in entries.items()}
            except Exception as err:  # noqa: BLE001 - any parse failure means "not a weight file"
                raise CheckpointError(f"{f} is not a readable safetensors file: {err}") from err
            out.update({strip_prefixes(k): v for k, v in raw.items()})
        else:
            sd = unwrap_state_dict(read_state_dict(f), str(f))
            out.update({k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()})
    return from_diffusers(out) if _is_diffusers(out) else out


def _dtype_name(safetensors_dtype: str) -> str:
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
             "I32": "int32", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn"}
    return names.get(safetensors_dtype, safetensors_dtype.lower())


def detect_preset(state_dict: Mapping[str, object]) -> str:
    """Name of the preset whose sizes match the state dict (by dim, FFN width and depth)."""
    from .config import PRESETS

    shapes = {k: tuple(_shape(v)) for k, v in state_dict.items()}
    if any(LORA_KEY.match(k) for k in shapes):
        raise CheckpointError("this is an OmniAvatar adapter (LoRA weights), not a full DiT: pass the "
                              "Wan2.1 base shards as the checkpoint and this file as the LoRA adapter")
    if "blocks.0.ffn.0.weight" not in shapes or "blocks.0.self_attn.q.weight" not in shapes:
        raise CheckpointError(f"not a Lip Forcing / Wan2.1 DiT checkpoint (keys: {_few(sorted(shapes))})")
    ffn_dim, dim = shapes["blocks.0.ffn.0.weight"]
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    for name, cfg in PRESETS.items():
        if (cfg.dim, cfg.ffn_dim, cfg.num_layers) == (dim, ffn_dim, layers):
            return name
    raise CheckpointError(f"DiT with dim {dim}, ffn {ffn_dim}, {layers} layers matches no preset "
                          f"({', '.join(f'{n}: {c.dim}/{c.ffn_dim}/{c.num_layers}' for n, c in PRESETS.items())})")


def _shape(value: object) -> Sequence[int]:
    """Shape of a tensor, or of a ``(shape, dtype)`` entry from :func:`read_shapes`."""
    if isinstance(value, torch.Tensor):
        return value.shape
    return value[0] if isinstance(value, tuple) else value


def split_lora(sd: StateDict) -> tuple[StateDict, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Separate ``(A, B)`` LoRA pairs (keyed by the base module) from ordinary weights."""
    plain, halves = {}, {}
    for key, value in sd.items():
        m = LORA_KEY.match(key)
        if m:
            halves.setdefault(m["base"], {})[m["ab"]] = value
        else:
            plain[key] = value
    broken = [k for k, ab in halves.items() if len(ab) != 2]
    if broken:
        raise CheckpointError(f"LoRA pairs without both lora_A and lora_B: {_few(broken)}")
    return plain, {k: (ab["A"], ab["B"]) for k, ab in halves.items()}


def apply_adapter(base: StateDict, adapter: StateDict, in_dim: int, alpha: float = DEFAULT_LORA_ALPHA,
                  device: str | torch.device = "cpu") -> StateDict:
    """Base weights + OmniAvatar adapter: merge LoRA, take audio / patch-embedding weights, pad channels.

    Merged weights are computed in float32 on ``device`` (a GPU makes the 14B merge take seconds).
    """
    plain, pairs = split_lora(adapter)
    out = dict(base)
    out.update(plain)
    for module, (a, b) in pairs.items():
        key = f"{module}.weight"
        if key not in out:
            raise CheckpointError(f"LoRA targets {module!r}, which the base model does not have")
        w = out[key]
        delta = (alpha / a.shape[0]) * (b.to(device, torch.float32) @ a.to(device, torch.float32))
        out[key] = (w.to(device, torch.float32) + delta).to(w.dtype)
    weight = out.get("patch_embedding.weight")
    if weight is not None and weight.shape[1] < in_dim:
        padded = weight.new_zeros(weight.shape[0], in_dim, *weight.shape[2:])
        padded[:, :weight.shape[1]] = weight
        out["patch_embedding.weight"] = padded
    return out


def check_state_dict(sd: Mapping[str, object], expected: Mapping[str, Sequence[int]]) -> tuple[list, list, list]:
    """``(missing, unexpected, wrong_shape)`` keys of ``sd`` against ``expected`` key -> shape."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and tuple(_shape(sd[k])) != tuple(expected[k])]
    return missing, unexpected, wrong


def load_dit(path_or_paths: str | Path | Sequence[str | Path], preset: str | None = None,
             dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
             lora: str | Path | None = None, lora_alpha: float = DEFAULT_LORA_ALPHA):
    """Build a :class:`~lipforcing_core.models.dit.LipForcingDiT` from any accepted layout.

    ``path_or_paths``: a merged checkpoint, or the Wan2.1 base shards (files, index json or
    folder) when ``lora`` names the OmniAvatar adapter. ``preset`` is detected when None.
    The model is built on the meta device and takes the loaded tensors by ``assign=True``,
    so weights are never held twice. ``dtype`` casts floating weights (default: as stored).
    """
    from .config import get_preset
    from .models.dit import LipForcingDiT

    sd = read_shards(path_or_paths)
    detected = detect_preset(sd)
    name = preset or detected
    cfg = get_preset(name)
    if lora is not None:
        sd = apply_adapter(sd, unwrap_state_dict(read_state_dict(lora), str(lora)), cfg.in_dim, lora_alpha, device)
    elif "audio_proj.proj.weight" not in sd:
        raise CheckpointError(f"{path_or_paths} has no audio modules: it looks like a Wan2.1 base model; "
                              "pass the OmniAvatar-LS adapter file as lora=...")
    with torch.device("meta"):
        expected = {k: v.shape for k, v in LipForcingDiT(cfg).state_dict().items()}
    missing, unexpected, wrong = check_state_dict(sd, expected)
    if wrong:
        raise CheckpointError(f"{path_or_paths}: shapes do not fit preset {name!r} "
                              f"(e.g. {wrong[0]} {tuple(sd[wrong[0]].shape)} vs {tuple(expected[wrong[0]])}); "
                              f"the file fits preset {detected!r}")
    if missing or unexpected:
        raise CheckpointError(f"{path_or_paths} is not a complete Lip Forcing DiT for preset {name!r}: "
                              f"missing [{_few(missing)}], unexpected [{_few(unexpected)}]")
    return materialize(lambda: LipForcingDiT(cfg), sd, what=f"Lip Forcing DiT preset {name!r}",
                       dtype=dtype, device=device)
