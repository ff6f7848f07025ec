"""The demo end to end: ``train-demo --quick`` from scratch, the ``demo`` command, the evaluation (``sync --demo`` on real video: tests/test_stream_job.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lipforcing_core.audio.features import encode_audio
from lipforcing_core.audio.io import load_audio, write_wav
from lipforcing_core.checkpoints import load_dit
from lipforcing_core.cli import main
from lipforcing_core.demo import LogMelFeatures
from lipforcing_core.demo.dub import dub, dubbing_pair, to_uint8
from lipforcing_core.demo.dit_recipe import pixel_keep_mask
from lipforcing_core.demo.evaluate import load_demo_models, summarize
from lipforcing_core.demo.recipe import load_demo_vae, read_metadata
from lipforcing_core.vae.wan_vae import load_wan_vae
from lipforcing_core.video import read_video


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Every demo model trained from scratch for a few steps by the real command, and its run dir."""
    root = tmp_path_factory.mktemp("demo")
    assert main(["train-demo", "--quick", "--run-dir", str(root / "run"), "--weights-dir", str(root / "w"),
                 "--threads", "1"]) == 0
    return root


def _files(root):
    w = root / "w"
    return {"student": w / "diffusion_models/demo_student.safetensors",
            "teacher": w / "diffusion_models/demo_teacher.safetensors",
            "vae": w / "vae/demo_vae.safetensors", "syncnet": w / "syncnet/demo_syncnet.safetensors"}


def test_train_demo_quick_writes_every_model_and_the_evaluation(quick):
    files = _files(quick)
    models = load_demo_models(**files, with_teacher=True)
    assert load_dit(files["student"]).config.audio_dim == 160
    assert len(read_metadata(files["vae"])["train_history"]) == 2  # both quick VAE phases, chained
    assert read_metadata(files["syncnet"])["metrics"]["vae_view"]["clips"] == 1  # trained and scored through the VAE
    recipe = json.loads((quick / "run/recipe.json").read_text())
    assert {f"{s}_minutes" for s in ("vae", "syncnet", "prepare", "teacher", "df", "dmd", "eval")} <= recipe.keys()
    report = json.loads((quick / "run/eval.json").read_text())
    assert report["summary"]["clips"] == 1 and report["speed"]["frames"] > 0
    assert {"vae_offset", "vae_lse_c"} <= report["rows"][0].keys()  # the sync ceiling through the VAE
    assert {"sync_gain_ge_3db", "within_1db_of_teacher", "student_ge_25fps", "student_ge_20x_teacher"} <= \
        report["summary"]["checks"].keys()
    assert models.teacher is not None
    for name in ("teacher", "student"):  # the eval's numbers are written into the shipped DiT files
        assert read_metadata(files[name])["metrics"]["sync_gain_db"] == report["summary"]["sync_gain_db"]


def test_demo_command_writes_video_strip_and_report(quick, tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--seconds", "1.5", "--student", str(_files(quick)["student"]), "--threads", "1"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    video = read_video(out / "out.mp4")
    assert video.frames.shape == (report["frames"], 256, 3 * 256, 3) and report["frames"] == 33
    assert video.audio is not None and abs(video.audio.shape[1] / video.sample_rate - 33 / 25) < 0.05
    assert Image.open(out / "strip.png").size == (110 + 8 * 128, 3 * 128)
    assert report["speed"]["fps"] > 0 and 0 < report["speed"]["ttff_s"] <= report["speed"]["seconds"]
    assert report["sync"]["ground_truth"]["offset"] == 0  # the real demo SyncNet on the exact rendering
    assert report["fidelity"]["psnr_outside_mouth_vs_source_db"] > 60  # the composite keeps the rest
    source = read_video(out / "source.mp4")
    assert source.frames.shape[1:] == (256, 256, 3) and (out / "speech.wav").is_file()
    with pytest.raises(SystemExit) as exit_info:  # an existing out.mp4 is never replaced without --overwrite
        main(args)
    assert exit_info.value.code == 2


def test_dub_keeps_outside_pixels_and_extends_a_short_video(quick):
    models = load_demo_models(**{k: v for k, v in _files(quick).items() if k != "teacher"})
    pair = dubbing_pair(1_000_001, 1_000_002, 1_000_003, duration_s=1.4)
    keep = pixel_keep_mask(64)
    features = models.features(pair.target_audio)[0]  # 35 frames of speech -> 33 output frames
    result = dub(models.pipeline(), pair.source[:20], features, keep)  # 20 frames: ping-pong extended
    assert result.frames.shape == (33, 64, 64, 3) and len(result.chunk_s) == 3
    source = to_uint8(pair.source)
    extended = np.concatenate([source[:20], source[18:5:-1]])
    outside = keep.numpy().astype(bool)
    assert np.array_equal(result.frames[:, outside], extended[:, outside])


def test_summary_checks_follow_the_acceptance_rules():
    row = {"psnr_lips_db": 30.0, "psnr_lips_silent_db": 26.5, "psnr_lips_teacher_db": 30.8, "psnr_mouth_db": 33.0,
           "psnr_mouth_silent_db": 32.0,
           "psnr_outside_db": 99.0, "student_lse_c": 0.4, "truth_lse_c": 0.5, "student_lse_d": 0.9,
           "truth_lse_d": 0.8, "student_offset": 1, "shift_offsets": {-3: -3, 3: 2},
           "vae_offset": 0, "vae_lse_c": 0.45, "vae_lse_d": 0.88}
    summary = summarize([row, row | {"vae_offset": 4}])
    assert all(summary["checks"].values())
    assert summary["vae_offset_within_1"] == 0.5 and summary["vae_lse_c_ratio"] == pytest.approx(0.9)
    bad = summarize([row | {"psnr_lips_silent_db": 27.5, "student_lse_c": 0.39, "student_offset": 2,
                            "shift_offsets": {-3: -1, 3: 3}}])["checks"]
    assert not any(bad[k] for k in ("sync_gain_ge_3db", "lse_c_ge_80pct", "offset_0_pm_1", "shift_follows_k"))


def test_wav_round_trip_and_log_mel_through_encode_audio(tmp_path):
    wave = torch.sin(torch.linspace(0, 800, 16000)) * 0.5
    path = write_wav(tmp_path / "a.wav", wave.numpy(), 16000)
    loaded, rate = load_audio(path)
    assert rate == 16000 and torch.allclose(loaded[0], wave, atol=1 / 32767)
    with pytest.raises(FileExistsError):
        write_wav(path, wave.numpy(), 16000)
    features = LogMelFeatures()
    assert torch.allclose(encode_audio(features, loaded, rate), features(loaded[0])[0], atol=1e-5)
    with pytest.raises(ValueError, match="fps"):
        encode_audio(features, loaded, rate, fps=30.0)


def test_generic_vae_loader_reads_the_demo_config():
    vae = load_wan_vae(load_demo_vae.__defaults__[0])
    assert vae.config == load_demo_vae().config and vae.config.num_res_blocks == 1

