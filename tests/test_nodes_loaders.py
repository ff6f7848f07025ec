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


def test_model_loader_fp8_weights(base):
    from lipforcing_core.models.fp8 import FP8, Fp8Linear

    (model,) = loaders.ModelLoader.execute("tiny_dit.safetensors", "fp8_e4m3fn", "auto").args
    linear = model.module.blocks[0].ffn[0]
    assert isinstance(linear, Fp8Linear) and linear.weight.dtype == FP8
    assert model.module.patch_embedding.weight.dtype == torch.bfloat16  # computes in bf16


def test_model_loader_reads_converted_files(base, tmp_path, golden_root):
    from lipforcing_core.models.fp8 import Fp8Linear
    from lipforcing_core.tools.convert import convert

    for dtype in ("bf16", "fp8_e4m3fn"):
        convert(golden_root / "dit" / "weights.safetensors", tmp_path / f"tiny_{dtype}.safetensors", dtype)
        comfy_env.link_model(base, "diffusion_models", tmp_path / f"tiny_{dtype}.safetensors")
        (model,) = loaders.ModelLoader.execute(f"tiny_{dtype}.safetensors", "default", "auto").args
        assert isinstance(model.module.blocks[2].self_attn.o, Fp8Linear) == (dtype == "fp8_e4m3fn")
        assert model.module.head.head.weight.dtype == torch.bfloat16


def test_model_loader_block_swap_reserves_only_the_resident_part(base):
    (full,) = loaders.ModelLoader.execute("tiny_dit.safetensors", "fp32", "auto").args
    (swapped,) = loaders.ModelLoader.execute("tiny_dit.safetensors", "fp32", "auto", "auto", 3).args
    sizes = {k: v.nbytes for k, v in full.module.state_dict().items()}
    block = sum(n for k, n in sizes.items() if k.startswith("blocks.5."))
    assert swapped.patcher.model_size() == sum(sizes.values()) - 3 * block + 2 * block  # 3 blocks out, 2 buffers in
    assert full.patcher.model_size() == sum(sizes.values())
    swapped.patcher.model.to("meta")  # what ComfyUI's loader moves: the resident part only
    assert swapped.module.blocks[2].ffn[0].weight.is_meta
    assert swapped.module.blocks[3].ffn[0].weight.device.type == "cpu"
    with pytest.raises(LipForcingInputError, match="'blocks_to_swap': blocks to swap must be between 1 and 6"):
        loaders.ModelLoader.execute("tiny_dit.safetensors", "fp32", "auto", "auto", 7)
