"""Loader nodes for the diffusion model and the video decoders.

Each picks a file from a ComfyUI model folder, loads it with the core loader and hands it to
ComfyUI's memory manager (weights stay on the offload device until a node needs them).
"""

from __future__ import annotations

import dataclasses
from functools import partial

from lipforcing_core.checkpoints import load_dit
from lipforcing_core.config import PRESETS
from lipforcing_core.models.attention import BACKENDS, check_backend
from lipforcing_core.models.block_swap import BlockSwap
from lipforcing_core.models.fp8 import FP8
from lipforcing_core.vae.taehv import load_taehv
from lipforcing_core.vae.wan_vae import load_wan_vae

from ._comfy import io
from ._types import DTYPES, LipForcingInputError, dtype_input
from .memory import load_managed, reserve_working_memory
from .paths import choices

CATEGORY = "LipForcing/loaders"

LipForcingModel = io.Custom("LIPFORCING_MODEL")
WanVAE = io.Custom("LIPFORCING_VAE")
TinyDecoder = io.Custom("LIPFORCING_TAEW")
FP8_OPTION = "fp8_e4m3fn"


class ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingModelLoader",
            display_name="Lip Forcing Model Loader",
            category=CATEGORY,
            description="Load a Lip Forcing causal student (lipforcing_14b.pth, the 1.3B student or a demo model).",
            inputs=[
                io.Combo.Input("model_name", options=choices("diffusion_models"),
                               tooltip="A merged Lip Forcing checkpoint in models/diffusion_models "
                                       "(.pth or .safetensors), or the bundled demo_student.safetensors."),
                dtype_input("default", "Weight dtype. 'default' keeps the file's dtype (bf16 for the release); "
                                        "fp32 is exact but needs twice the memory; fp8_e4m3fn stores the "
                                        "transformer blocks' linear weights in fp8 (half of bf16; a file made by "
                                        "'python -m lipforcing_core convert --dtype fp8_e4m3fn' loads as fp8 "
                                        "with any choice) and computes in bf16.",
                            ("default", *DTYPES, FP8_OPTION)),
                io.Combo.Input("size", options=["auto", *PRESETS], default="auto",
                               tooltip="Architecture preset; 'auto' reads it from the tensor shapes."),
                io.Combo.Input("attention", options=list(BACKENDS), default="auto", optional=True,
                               tooltip="Attention kernel: 'auto' uses flash-attn or xformers for 16-bit CUDA when "
                                       "installed, else PyTorch SDPA; 'math' is PyTorch's unfused reference."),
                io.Int.Input("blocks_to_swap", default=0, min=0, max=max(c.num_layers for c in PRESETS.values()),
                             optional=True,
                             tooltip="Keep this many of the last transformer blocks in (pinned) CPU memory and "
                                     "copy each to the GPU just before it runs, the next one ahead: less GPU "
                                     "memory, same results, slower when the copies outrun the compute. "
                                     "0 keeps every block on the GPU."),
            ],
            outputs=[LipForcingModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model_name: str, weight_dtype: str, size: str, attention: str = "auto",
                blocks_to_swap: int = 0) -> io.NodeOutput:
        try:
            check_backend(attention)
        except ValueError as err:
            raise LipForcingInputError("attention", str(err)) from err
        dtype = FP8 if weight_dtype == FP8_OPTION else DTYPES.get(weight_dtype)
        load = partial(load_dit, preset=None if size == "auto" else size, dtype=dtype)
        managed = load_managed("dit", "diffusion_models", model_name, "model_name", load)
        if blocks_to_swap:
            try:
                swap = BlockSwap(managed.module.blocks, blocks_to_swap)
            except ValueError as err:
                raise LipForcingInputError("blocks_to_swap", str(err)) from err
            reserve_working_memory(managed, 2 * swap.block_bytes)  # the running block and the next one
        return io.NodeOutput(dataclasses.replace(managed, attention=attention))


class VAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingVAELoader",
            display_name="Lip Forcing VAE Loader",
            category=CATEGORY,
            description="Load the Wan2.1 video VAE (encodes the source video; can also decode).",
            inputs=[
                io.Combo.Input("vae_name", options=choices("vae"),
                               tooltip="Wan2.1_VAE.pth or ComfyUI's wan_2.1_vae.safetensors in models/vae, or "
                                       "the bundled demo_vae.safetensors (for the demo model only)."),
                dtype_input("fp32", "Compute dtype of the VAE; bf16 halves its memory."),
            ],
            outputs=[WanVAE.Output(display_name="vae")],
        )

    @classmethod
    def execute(cls, vae_name: str, weight_dtype: str) -> io.NodeOutput:
        load = partial(load_wan_vae, dtype=DTYPES[weight_dtype])
        return io.NodeOutput(load_managed("vae", "vae", vae_name, "vae_name", load))


class TAEWLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingTAEWLoader",
            display_name="Lip Forcing Tiny Decoder Loader",
            category=CATEGORY,
            description="Load TAEHV (taew2_1), the fast streaming decoder for Wan2.1 latents.",
            inputs=[
                io.Combo.Input("taew_name", options=choices("vae_approx"),
                               tooltip="taew2_1.pth / taew2_1.safetensors in models/vae_approx."),
                dtype_input("fp16", "Compute dtype; the release decodes in fp16. Use fp32 on CPU."),
            ],
            outputs=[TinyDecoder.Output(display_name="taew")],
        )

    @classmethod
    def execute(cls, taew_name: str, weight_dtype: str) -> io.NodeOutput:
        load = partial(load_taehv, dtype=DTYPES[weight_dtype])
        return io.NodeOutput(load_managed("taew", "vae_approx", taew_name, "taew_name", load))


NODES = [ModelLoader, VAELoader, TAEWLoader]
