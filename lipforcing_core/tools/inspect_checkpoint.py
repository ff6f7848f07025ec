"""``python -m lipforcing_core inspect``: what a DiT checkpoint file (or a preset) holds.

Reports the kind of file, the matching preset, parameter count, dtypes and the keys missing,
unexpected or mis-shaped against that preset. Presets are built on the meta device, and
checkpoint tensors are memory-mapped (pickles) or only their headers read (safetensors).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import torch

from ..checkpoints import LORA_KEY, check_state_dict, detect_preset, read_shapes
from ..config import PRESETS, get_preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help=f"checkpoint file, shard index/folder, or preset name ({', '.join(PRESETS)})")
    parser.add_argument("--json", action="store_true", help="print one JSON object (keys with shapes included)")


def preset_keys(name: str) -> dict[str, list[int]]:
    """Key -> shape of a preset's state dict, built on the meta device (no weights allocated)."""
    from ..models.dit import LipForcingDiT

    with torch.device("meta"):
        model = LipForcingDiT(get_preset(name))
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def describe(target: str) -> dict:
    """Report on a preset name or a checkpoint path (raises CheckpointError for unusable files)."""
    if target.strip().lower() in PRESETS and not Path(target).exists():
        keys = preset_keys(target)
        return _report(target, "preset", target.strip().lower(), keys, {"float32": len(keys)}, [], [], [])
    entries = read_shapes(target)
    keys = {k: shape for k, (shape, _) in entries.items()}
    dtypes = dict(Counter(dtype for _, dtype in entries.values()))
    if any(LORA_KEY.match(k) for k in keys):
        return _report(target, "omniavatar-adapter", None, keys, dtypes, [], [], [])
    preset = detect_preset(keys)
    kind = "lipforcing-dit" if "audio_proj.proj.weight" in keys else "wan2.1-base"
    missing, unexpected, wrong = check_state_dict(keys, preset_keys(preset))
    return _report(target, kind, preset, keys, dtypes, missing, unexpected, wrong)


def _report(target, kind, preset, keys, dtypes, missing, unexpected, wrong) -> dict:
    return {"target": str(target), "kind": kind, "preset": preset, "num_tensors": len(keys),
            "num_params": sum(math.prod(s) for s in keys.values()), "dtypes": dtypes, "missing": missing,
            "unexpected": unexpected, "wrong_shape": wrong, "keys": keys}


def run(args: argparse.Namespace) -> int:
    report = describe(args.target)  # a CheckpointError becomes one line on stderr, exit code 2 (cli.main)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['target']}: {report['kind']}, preset {report['preset'] or '-'}")
    print(f"  {report['num_tensors']} tensors, {report['num_params']:,} parameters, dtypes {report['dtypes']}")
    for field in ("missing", "unexpected", "wrong_shape"):
        if report[field]:
            print(f"  {field} ({len(report[field])}): {', '.join(report[field][:8])}")
    return 0
