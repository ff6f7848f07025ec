"""bench: analytic FLOPs, a miniature end-to-end run through the CLI, and the memory probe's fields."""

from __future__ import annotations

import json

import pytest
import torch

from lipforcing_core.tools.bench import (
    dit_pass_flops,
    flops_table,
    memory_probe,
    student_flops_per_frame,
    teacher_flops_per_frame,
)
from lipforcing_core.cli import main
from lipforcing_core.config import STREAM_FULL, get_preset


@pytest.fixture(autouse=True)
def restore_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_pass_flops_scale_with_tokens_and_keys():
    cfg = get_preset("tiny")
    one, two = dit_pass_flops(cfg, 3, 3, 16, 16), dit_pass_flops(cfg, 6, 6, 16, 16)
    more_keys = dit_pass_flops(cfg, 3, 7, 16, 16)
    d = cfg.dim
    assert more_keys - one == cfg.num_layers * 2 * 2 * (3 * 16) * (4 * 16) * d  # only attention grows
    assert 2 * one < two < 4 * one


def test_flop_table_for_real_presets():
    table = flops_table()
    for name in ("1.3b", "14b"):
        cfg = get_preset(name)
        row = table[name]
        assert row["teacher"] / row["student"] > 20
        assert row["student_full_attention"] > row["student"]
        assert student_flops_per_frame(cfg, spec=STREAM_FULL) > student_flops_per_frame(cfg)
        assert teacher_flops_per_frame(cfg) > 40 * student_flops_per_frame(cfg)
    # 1.3B student, one 512x512 latent frame pass ~ 2 * params * tokens
    assert 2.5e12 < dit_pass_flops(get_preset("1.3b"), 1, 7, 1024) < 4.5e12


def test_bench_cli_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "tiny", "--device", "cpu", "--out", str(out), "--size", "32", "--chunks", "2",
                 "--teacher-steps", "2", "--threads", "1", "--no-memory"]) == 0
    r = json.loads(out.read_text())
    for key in ("student_fps", "teacher_fps", "speedup", "ttff_s", "peak_memory_mb", "stages_s", "passes_per_chunk",
                "flops_per_frame", "denoise_speedup"):
        assert key in r, key
    assert r["clip"]["frames"] == 21 and r["passes_per_chunk"]["student"] == 3 and len(r["chunk_s"]) == 2
    assert {"encode", "denoise", "decode", "composite", "cache_write"} <= set(r["stages_s"]["student"])
    assert {"encode", "denoise", "decode", "composite"} <= set(r["stages_s"]["teacher"])
    assert 0 < r["ttff_s"] < sum(r["chunk_s"]) + 1e-3
    assert r["speedup"] == pytest.approx(r["student_fps"] / r["teacher_fps"], rel=0.05)


def test_memory_probe_fields():
    r = memory_probe("tiny", "cpu", 1, 32, 4, "wan", 1)
    assert r["chunks"] == 1 and r["frames"] == 9
    assert r["peak_rss_mb"] >= r["peak_rss_rise_mb"] >= 0 and r["peak_rss_mb"] > 50


def test_bench_student_only_with_fast_paths_off(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "tiny", "--device", "cpu", "--out", str(out), "--size", "32", "--chunks", "2",
                 "--teacher-steps", "0", "--threads", "1", "--no-memory", "--no-fast"]) == 0
    r = json.loads(out.read_text())
    assert {"device", "preset", "student_fps", "ttff_s", "stages_s"} <= set(r) and "teacher_fps" not in r
    assert r["device"] == "cpu" and r["preset"] == "tiny" and set(r["stages_s"]) == {"student"}
    assert r["fast_paths"] == {"enabled": False, "cuda_graphs": False, "cudnn_benchmark": False, "attention": "sdpa",
                               "composite": "numpy"}
