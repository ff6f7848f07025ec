"""Loader nodes on the golden tiny checkpoints: folder lookup, memory-manager wrapping, wrong files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
from comfy_executor import Executor, WorkflowError
from lipforcing_pack.nodes import loaders
from lipforcing_pack.nodes._types import LipForcingInputError
from lipforcing_pack.nodes.memory import ManagedModel

from lipforcing_core.models.dit import LipForcingDiT
from lipforcing_core.vae.taehv import TAEHV
from lipforcing_core.vae.wan_vae import WanVAE


@pytest.fixture()
def base(tmp_path, golden_root):
    base = comfy_env.use_base(tmp_path)
    comfy_env.link_model(base, "diffusion_models", golden_root / "dit" / "weights.safetensors", "tiny_dit.safetensors")
    comfy_env.link_model(base, "vae", golden_root / "vae" / "weights.safetensors", "tiny_vae.safetensors")
    comfy_env.link_model(base, "diffusion_models", golden_root / "vae" / "weights.safetensors", "not_a_dit.safetensors")
    return base


def test_model_loader_lists_and_loads_the_dit(base):
    options = loaders.ModelLoader.define_schema().inputs[0].options
    assert options == sorted(["not_a_dit.safetensors", "tiny_dit.safetensors", *comfy_env.bundled("diffusion_models")])
    (model,) = loaders.ModelLoader.execute("tiny_dit.safetensors", "fp32", "auto").args
    assert isinstance(model, ManagedModel) and model.kind == "dit" and model.filename == "tiny_dit.safetensors"
    assert isinstance(model.module, LipForcingDiT)
    assert {p.dtype for p in model.module.parameters()} == {torch.float32}
    assert model.on_device() is model.module
    (half,) = loaders.ModelLoader.execute("tiny_dit.safetensors", "bf16", "tiny").args
    assert half.module.patch_embedding.weight.dtype == torch.bfloat16


def test_model_loader_explains_a_wrong_file(base):
    with pytest.raises(LipForcingInputError, match="'model_name': 'not_a_dit.safetensors' is not a Lip Forcing diffusion model"):
        loaders.ModelLoader.execute("not_a_dit.safetensors", "default", "auto")
    with pytest.raises(LipForcingInputError, match="'model_name': 'gone.pth' is not a file in ComfyUI's models/diffusion_models"):
        loaders.ModelLoader.execute("gone.pth", "default", "auto")


def test_vae_loader(base):
    (vae,) = loaders.VAELoader.execute("tiny_vae.safetensors", "fp32").args
    assert vae.kind == "vae" and isinstance(vae.module, WanVAE)


def test_taew_loader(base, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.half() for k, v in TAEHV().state_dict().items()}, str(tmp_path / "taew2_1.safetensors"))
    comfy_env.link_model(base, "vae_approx", tmp_path / "taew2_1.safetensors")
    (taew,) = loaders.TAEWLoader.execute("taew2_1.safetensors", "fp32").args
    assert taew.kind == "taew" and isinstance(taew.module, TAEHV)
    assert {p.dtype for p in taew.module.parameters()} == {torch.float32}


def test_taew_loader_rejects_a_vae_file(base):
    comfy_env.link_model(base, "vae_approx", base / "models" / "vae" / "tiny_vae.safetensors", "wrong.safetensors")
    with pytest.raises(LipForcingInputError, match="'taew_name': 'wrong.safetensors' is not a tiny video decoder"):
        loaders.TAEWLoader.execute("wrong.safetensors", "fp32")


def test_loaders_in_a_workflow(base):
    workflow = {
        "1": {"class_type": "LipForcingModelLoader",
              "inputs": {"model_name": "tiny_dit.safetensors", "weight_dtype": "default", "size": "auto"}},
        "2": {"class_type": "LipForcingVAELoader", "inputs": {"vae_name": "tiny_vae.safetensors", "weight_dtype": "bf16"}},
    }
    result = Executor(loaders.NODES).run(workflow)
    assert result.outputs["1"][0].kind == "dit" and result.outputs["2"][0].kind == "vae"
    workflow["2"]["inputs"]["vae_name"] = "../../etc/passwd"
    with pytest.raises(WorkflowError, match="is not one of"):
        Executor(loaders.NODES).run(workflow)


def test_model_loader_refuses_an_attention_backend_that_is_not_installed(monkeypatch):
    from lipforcing_core.models import attention

    monkeypatch.setattr(attention, "_kernel", lambda name: None)
    with pytest.raises(LipForcingInputError, match="attention"):
        loaders.ModelLoader.execute("anything.safetensors", "default", "auto", "flash_attn")


def test_model_loader_carries_the_attention_backend_to_the_sampler(base):
    (model,) = loaders.ModelLoader.execute("tiny_dit.safetensors", "fp32", "auto", "math").args
    assert model.attention == "math" and model.kind == "dit"
    (default,) = loaders.ModelLoader.execute("tiny_dit.safetensors", "fp32", "auto").args
    assert default.attention == "auto"
