"""wav2vec2 loading: every on-disk key layout users have, config inference, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lipforcing_core.audio.wav2vec2 import (
    POS_CONV,
    Wav2Vec2Config,
    build_model,
    hf_to_torchaudio,
    load_wav2vec2,
)
from lipforcing_core.checkpoints import CheckpointError

HF_POS = "wav2vec2.encoder.pos_conv_embed.conv."


@pytest.fixture(scope="module")
def tiny_dir(golden_root):
    return golden_root / "audio" / "wav2vec2_tiny"


@pytest.fixture(scope="module")
def reference(tiny_dir):
    return {k: v.clone() for k, v in load_wav2vec2(tiny_dir).state_dict().items()}


def _variant(sd: dict, prefix: bool, parametrized: bool) -> dict:
    out = {}
    for key, value in sd.items():
        if parametrized:
            key = key.replace("conv.weight_g", "conv.parametrizations.weight.original0")
            key = key.replace("conv.weight_v", "conv.parametrizations.weight.original1")
        out[key if prefix else key.removeprefix("wav2vec2.")] = value
    return out


@pytest.mark.parametrize("suffix", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("prefix", [True, False])
@pytest.mark.parametrize("parametrized", [True, False])
def test_loads_every_key_layout(tiny_dir, reference, tmp_path, suffix, prefix, parametrized):
    sd = _variant(load_file(str(tiny_dir / "model.safetensors")), prefix, parametrized)
    if suffix.endswith(".safetensors"):
        save_file(sd, str(tmp_path / suffix))
    else:
        torch.save(sd, tmp_path / suffix)
    shutil.copy(tiny_dir / "config.json", tmp_path / "config.json")
    for path in (tmp_path, tmp_path / suffix):  # the folder and the single file beside its config
        loaded = load_wav2vec2(path).state_dict()
        assert loaded.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(loaded[key], value), key


def test_pos_conv_weight_norm_is_per_tap(tiny_dir):
    sd = load_file(str(tiny_dir / "model.safetensors"))
    g, v = sd[HF_POS + "weight_g"], sd[HF_POS + "weight_v"]
    expected = torch.stack([g[0, 0, k] * v[:, :, k] / v[:, :, k].norm() for k in range(v.shape[2])], dim=2)
    baked = load_wav2vec2(tiny_dir).model.encoder.transformer.pos_conv_embed.conv.weight
    assert torch.allclose(baked, expected, atol=1e-6)
    wrong = g * v / v.norm(dim=(1, 2), keepdim=True)  # the common bug the golden README names
    assert not torch.allclose(baked, wrong, atol=1e-3)


def test_drops_ctc_head_and_strict_load(tiny_dir):
    sd = hf_to_torchaudio(load_file(str(tiny_dir / "model.safetensors")))
    assert not any(k.startswith(("lm_head", "masked_spec_embed")) for k in sd)
    model = build_model(Wav2Vec2Config.from_hf(json.loads((tiny_dir / "config.json").read_text())))
    assert set(model.state_dict()) == set(sd)


def test_infers_config_from_shapes_without_config(tmp_path):
    config = Wav2Vec2Config(
        conv_dim=(8,) * 7,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=32,
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
    )
    model = build_model(config)
    hf = {
        "wav2vec2."
        + k.replace("encoder.transformer.", "encoder.").replace("encoder.feature_projection.", "feature_projection."): v
        for k, v in model.state_dict().items()
    }
    save_file(hf, str(tmp_path / "w2v.safetensors"))
    loaded = load_wav2vec2(tmp_path / "w2v.safetensors")
    assert loaded.config == config
    assert torch.equal(
        loaded.model.encoder.transformer.pos_conv_embed.conv.weight, model.encoder.transformer.pos_conv_embed.conv.weight
    )


def test_single_file_without_config_needs_head_count(tiny_dir, tmp_path):
    shutil.copy(tiny_dir / "model.safetensors", tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="config.json"):
        load_wav2vec2(tmp_path / "tiny.safetensors")  # hidden 32: heads cannot be inferred


def test_rejects_non_wav2vec2_file(tmp_path):
    save_file({"blocks.0.weight": torch.zeros(2, 2)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match="not a wav2vec2 checkpoint"):
        load_wav2vec2(tmp_path / "dit.safetensors")
    (tmp_path / "notes.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_wav2vec2(tmp_path / "notes.bin")
    with pytest.raises(CheckpointError, match="not found"):
        load_wav2vec2(tmp_path / "absent.safetensors")


def test_rejects_empty_folder_and_unsupported_variant(tiny_dir, tmp_path):
    with pytest.raises(CheckpointError, match="no wav2vec2 weights"):
        load_wav2vec2(tmp_path)
    shutil.copy(tiny_dir / "model.safetensors", tmp_path / "model.safetensors")
    cfg = json.loads((tiny_dir / "config.json").read_text()) | {"do_stable_layer_norm": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unsupported wav2vec2 variant"):
        load_wav2vec2(tmp_path)


def test_config_mismatch_is_checkpoint_error(tiny_dir, tmp_path):
    shutil.copy(tiny_dir / "model.safetensors", tmp_path / "model.safetensors")
    cfg = json.loads((tiny_dir / "config.json").read_text()) | {"num_hidden_layers": 3}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match"):
        load_wav2vec2(tmp_path)


def test_dtype_and_no_grad(tiny_dir):
    encoder = load_wav2vec2(tiny_dir, dtype=torch.bfloat16)
    assert encoder.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in encoder.parameters())
    assert POS_CONV + "weight" in encoder.model.state_dict()
