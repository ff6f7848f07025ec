"""The pack's plumbing: type adapters, model folders, memory-manager wrapping, progress, entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
import comfy.model_management as mm
import comfy.utils
import folder_paths
from lipforcing_pack.nodes import _types, memory, paths, progress


@pytest.fixture()
def comfy_base(tmp_path):
    folder_paths.set_base_path(str(tmp_path))
    yield tmp_path
    folder_paths.set_base_path(str(tmp_path / "unused"))


def test_image_frames_round_trip_is_exact():
    frames = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    image = _types.image_from_frames(frames)
    assert image.shape == (3, 5, 7, 3) and image.dtype == torch.float32 and float(image.max()) <= 1.0
    np.testing.assert_array_equal(_types.frames_from_image(image), frames)
    rgba = torch.cat([image, torch.ones(3, 5, 7, 1)], dim=-1)
    np.testing.assert_array_equal(_types.frames_from_image(rgba), frames)


@pytest.mark.parametrize("bad", [torch.zeros(5, 7, 3), torch.zeros(1, 5, 7, 2), torch.zeros(0, 5, 7, 3), "x"])
def test_bad_image_names_the_input(bad):
    with pytest.raises(_types.LipForcingInputError, match="'video'"):
        _types.frames_from_image(bad, "video")


def test_audio_is_mixed_to_mono_and_checked():
    stereo = torch.stack([torch.ones(100), -torch.ones(100) * 0.5])[None]
    wave, rate = _types.mono_waveform({"waveform": stereo, "sample_rate": 44100})
    assert rate == 44100 and wave.shape == (100,)
    torch.testing.assert_close(wave, torch.full((100,), 0.25))
    with pytest.raises(_types.LipForcingInputError, match="2 clips"):
        _types.mono_waveform({"waveform": torch.zeros(2, 1, 100), "sample_rate": 16000})
    with pytest.raises(_types.LipForcingInputError, match="AUDIO"):
        _types.mono_waveform(torch.zeros(1, 1, 100))
    clip, _ = _types.clip_waveform({"waveform": stereo, "sample_rate": 44100})
    assert clip.shape == (2, 100)


def test_conditioning_is_padded_or_cut_to_512_tokens():
    short = torch.randn(1, 7, 16)
    text = _types.text_from_conditioning([[short, {"pooled_output": None}]])
    assert text.shape == (1, 512, 16)
    torch.testing.assert_close(text[:, :7], short)
    assert text[:, 7:].abs().sum() == 0
    assert _types.text_from_conditioning([[torch.randn(1, 600, 16), {}]]).shape == (1, 512, 16)
    with pytest.raises(_types.LipForcingInputError, match="2 prompts"):
        _types.text_from_conditioning([[short, {}], [short, {}]])
    with pytest.raises(_types.LipForcingInputError, match="CONDITIONING"):
        _types.text_from_conditioning(short)


def test_register_folder_keeps_configured_paths_first(comfy_base):
    configured = str(comfy_base / "from_yaml")
    folder_paths.add_model_folder_path("syncnet", configured)  # what extra_model_paths.yaml does
    paths.register_model_folders()
    registered = folder_paths.get_folder_paths("syncnet")
    assert registered[0] == configured and registered[1].endswith("models/syncnet")
    paths.register_model_folders()
    assert folder_paths.get_folder_paths("syncnet") == registered


def test_new_folder_lists_weight_files_only(comfy_base):
    paths.register_model_folders()
    folder = comfy_base / "models" / "syncnet"
    folder.mkdir(parents=True)
    (folder / "syncnet_v2.model").write_bytes(b"x")
    (folder / "s.safetensors").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    assert paths.choices("syncnet") == ["demo_syncnet.safetensors", "s.safetensors", "syncnet_v2.model"]


def test_demo_weights_are_the_last_path_of_their_folders(comfy_base):
    from lipforcing_core.demo.constants import WEIGHTS_DIR

    configured = str(comfy_base / "from_yaml")
    folder_paths.add_model_folder_path("vae", configured)  # what extra_model_paths.yaml does
    before = folder_paths.get_folder_paths("vae")
    paths.register_model_folders()
    paths.register_model_folders()  # ComfyUI may call the entry point again: nothing is added twice
    for folder in paths.DEMO_FOLDERS:
        registered = folder_paths.get_folder_paths(folder)
        assert registered[-1] == str(WEIGHTS_DIR / folder) and registered.count(registered[-1]) == 1
    assert folder_paths.get_folder_paths("vae") == [*before, str(WEIGHTS_DIR / "vae")]
    assert "demo_vae.safetensors" in paths.choices("vae")
    shadow = comfy_base / "models" / "vae" / "demo_vae.safetensors"  # a user's file of the same name wins
    shadow.parent.mkdir(parents=True)
    shadow.write_bytes(b"x")
    assert paths.model_path("vae", "demo_vae.safetensors", "vae_name") == str(shadow)


def test_model_path_stays_inside_model_folders(comfy_base):
    (comfy_base / "models" / "vae").mkdir(parents=True)
    (comfy_base / "models" / "vae" / "v.safetensors").write_bytes(b"x")
    (comfy_base / "secret.safetensors").write_bytes(b"x")
    assert paths.model_path("vae", "v.safetensors", "vae_name").endswith("models/vae/v.safetensors")
    for escape in ("../../secret.safetensors", str(comfy_base / "secret.safetensors")):
        with pytest.raises(_types.LipForcingInputError, match="'vae_name'.*models/vae"):
            paths.model_path("vae", escape, "vae_name")


class ReadOnlyDevice(torch.nn.Linear):
    @property
    def device(self) -> torch.device:  # like the core's AudioEncoder
        return self.weight.device


def test_managed_model_goes_through_the_memory_manager(monkeypatch):
    wrapped = memory.manage(ReadOnlyDevice(2, 2), "vae", "v.safetensors")
    assert wrapped.on_device() is wrapped.module and isinstance(wrapped.module, ReadOnlyDevice)
    assert wrapped.patcher.model.device == mm.vae_device()
    calls = []
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kw: calls.append(models))
    wrapped.on_device()
    assert calls == [[wrapped.patcher]]
    assert not any(p.requires_grad for p in wrapped.module.parameters())
    assert memory.expect(wrapped, "vae", "vae") is wrapped
    with pytest.raises(_types.LipForcingInputError, match="'model': expected a Lip Forcing diffusion model, got a Wan2.1 video VAE"):
        memory.expect(wrapped, "dit", "model")
    with pytest.raises(_types.LipForcingInputError, match="got Tensor"):
        memory.expect(torch.zeros(1), "dit", "model")


def test_progress_reports_previews_and_honours_cancel():
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, preview, node_id=None: seen.append((v, t, preview)))
    try:
        bar = progress.Progress(3)
        bar.step(1, np.zeros((8, 8, 3), np.uint8))
        bar.step(2)
        assert [(v, t) for v, t, _ in seen] == [(1, 3), (2, 3)]
        kind, image, size = seen[0][2]
        assert kind == "JPEG" and image.size == (8, 8) and size == progress.PREVIEW_SIZE and seen[1][2] is None
        mm.interrupt_current_processing()
        with pytest.raises(mm.InterruptProcessingException):
            bar.step(3)
        assert len(seen) == 2
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


def test_entry_point_registers_folders_and_matches_node_list(comfy_base):
    """ComfyUI imports the repo folder as a package and awaits ``comfy_entrypoint``."""
    assert "syncnet" not in folder_paths.folder_names_and_paths
    node_ids = [cls.GET_SCHEMA().node_id for cls in comfy_env.node_classes()]
    assert "syncnet" in folder_paths.folder_names_and_paths
    listed = json.loads((comfy_env.REPO / "workflows" / "node_list.json").read_text())
    assert node_ids == listed["nodes"]
    assert len(set(node_ids)) == len(node_ids)


def test_every_node_follows_the_pack_conventions():
    for cls in comfy_env.node_classes():
        schema = cls.GET_SCHEMA()  # finalises and validates (unique input/output ids)
        assert schema.node_id.startswith("LipForcing") and schema.category.startswith("LipForcing/")
        assert schema.display_name and schema.description, schema.node_id
        missing = [spec.id for spec in schema.inputs if not spec.tooltip]
        assert not missing, f"{schema.node_id}: inputs without tooltip {missing}"
