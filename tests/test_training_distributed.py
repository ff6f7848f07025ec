"""Stage 2 under ``torchrun --nproc_per_node=2`` (gloo, FSDP2) equals one process on the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from lipforcing_core.cli import main
from lipforcing_core.training.data import save_clip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_clips import random_clip  # noqa: E402  (a helper module beside the tests)

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--set", "batch_size=2", "--set", "steps=2", "--set", "student_update_every=1", "--set", "lr=1e-3",
        "--set", "critic_lr=1e-3", "--set", "ema_decay=0.9", "--set", "lora_rank=4", "--set", "lora_alpha=8"]


def _can_run_torchrun() -> str | None:
    if not dist.is_available() or not dist.is_gloo_available():
        return "this torch build has no gloo backend"
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        return "torchrun is not on PATH"
    return None


@pytest.mark.skipif(_can_run_torchrun() is not None, reason=str(_can_run_torchrun()))
def test_torchrun_fsdp_matches_single_process(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for s in range(4):
        save_clip(data / f"clip{s}.safetensors", random_clip(frames=6, hw=(2, 2), seed=s))
    common = ["train", "dmd", "--set", f"data={data}", *ARGS]
    # 2 ranks x 1 sample, versus 1 process accumulating 2 micro-batches of 1: the same global batch

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lipforcing_core", *common, "--set", "grad_accum=1", "--set", f"out_dir={tmp_path / 'fsdp'}",
           "--history", str(tmp_path / "fsdp.json"), "--export", str(tmp_path / "fsdp_student.safetensors")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main([*common, "--set", "grad_accum=2", "--set", f"out_dir={tmp_path / 'single'}",
              "--history", str(tmp_path / "single.json"),
              "--export", str(tmp_path / "single_student.safetensors")])
    finally:
        torch.set_num_threads(old)

    fsdp, single = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("fsdp", "single"))
    assert len(fsdp) == len(single) == 2 and set(fsdp[0]) == {"critic_loss", "vsd_loss", "student_loss"}
    for a, b in zip(fsdp, single):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    wa, wb = (load_file(str(tmp_path / f"{n}_student.safetensors")) for n in ("fsdp", "single"))
    assert set(wa) == set(wb)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=key)
    ckpt = load_file(str(tmp_path / "fsdp" / "checkpoint_000002.safetensors"))
    assert any(k.startswith("optim.student.") for k in ckpt) and any(k.startswith("ema.student.") for k in ckpt)
