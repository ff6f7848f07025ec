"""ComfyUI value types <-> the plain tensors/arrays ``lipforcing_core`` takes, with clear errors.

ComfyUI conventions: IMAGE is float ``[B,H,W,C]`` in 0..1 (B = frames of a video), MASK is float
``[B,H,W]`` or ``[H,W]``, AUDIO is ``{"waveform": [B,C,T], "sample_rate": int}``, CONDITIONING is a
list of ``[tensor [1,N,D], dict]`` pairs.
"""

from __future__ import annotations

import numpy as np
import torch

from ._comfy import io, model_management

TEXT_TOKENS = 512  # UMT5 context length the DiT was trained with (zero-padded)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dtype_input(default: str, tooltip: str, options: tuple[str, ...] = tuple(DTYPES)) -> io.Combo.Input:
    """The ``weight_dtype`` combo every loader has."""
    return io.Combo.Input("weight_dtype", options=list(options), default=default, tooltip=tooltip)


class LipForcingInputError(ValueError):
    """A node input that cannot be used; the message names the input and what was expected."""

    def __init__(self, input_name: str, problem: str, fix: str = ""):
        super().__init__(f"Lip Forcing input '{input_name}': {problem}" + (f" {fix}" if fix else ""))


def frames_from_image(image: torch.Tensor, name: str = "images") -> np.ndarray:
    """IMAGE ``[T,H,W,C]`` in 0..1 -> uint8 RGB frames ``[T,H,W,3]`` (the exact inverse of LoadImage's /255)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise LipForcingInputError(name, f"expected an IMAGE batch [frames, height, width, 3], got {shape}.")
    if image.shape[0] == 0:
        raise LipForcingInputError(name, "the image batch has no frames.")
    rgb = image[..., :3].detach().float().clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8).cpu().numpy()


def image_from_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames ``[T,H,W,3]`` -> IMAGE in 0..1 on ComfyUI's intermediate device."""
    frames = torch.as_tensor(frames)
    return (frames.float() / 255).to(model_management.intermediate_device())


def clip_waveform(audio: dict, name: str = "audio") -> tuple[torch.Tensor, int]:
    """AUDIO holding one clip -> (float32 waveform ``[C,T]`` on CPU, sample rate)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise LipForcingInputError(name, "expected an AUDIO value (from LoadAudio or a video loader).")
    waveform = audio["waveform"]
    if waveform.ndim != 3:
        raise LipForcingInputError(name, f"expected a waveform [batch, channels, samples], got {tuple(waveform.shape)}.")
    if waveform.shape[0] != 1:
        raise LipForcingInputError(name, f"holds {waveform.shape[0]} clips; lip sync takes exactly one.",
                                   "Split the batch or pick one clip.")
    if waveform.shape[-1] == 0:
        raise LipForcingInputError(name, "the audio clip is empty.")
    return waveform[0].detach().float().cpu(), int(audio["sample_rate"])


def mono_waveform(audio: dict, name: str = "audio") -> tuple[torch.Tensor, int]:
    """AUDIO holding one clip -> (mono float32 waveform ``[T]``, sample rate); channels are averaged."""
    waveform, sample_rate = clip_waveform(audio, name)
    return waveform.mean(0), sample_rate


def text_from_conditioning(conditioning: list, name: str = "text") -> torch.Tensor:
    """CONDITIONING from ``CLIPTextEncode`` (UMT5 via ``CLIPLoader type=wan``) -> ``[1,512,D]`` float32.

    Shorter contexts are zero-padded and longer ones cut to 512 tokens, as the DiT's text length.
    """
    if not isinstance(conditioning, list) or not conditioning or not isinstance(conditioning[0][0], torch.Tensor):
        raise LipForcingInputError(name, "expected CONDITIONING from CLIPTextEncode.")
    if len(conditioning) != 1:
        raise LipForcingInputError(name, f"holds {len(conditioning)} prompts; Lip Forcing takes one.",
                                   "Do not combine or concatenate conditionings here.")
    context = conditioning[0][0]
    if context.ndim != 3 or context.shape[0] != 1:
        raise LipForcingInputError(name, f"expected a text context [1, tokens, dim], got {tuple(context.shape)}.")
    context = context[:, :TEXT_TOKENS].detach().float().cpu()
    return torch.nn.functional.pad(context, (0, 0, 0, TEXT_TOKENS - context.shape[1]))


def same_length(frames: int, expected: int, name: str, expected_what: str) -> None:
    """Raise a clear error when two per-frame inputs disagree in length."""
    if frames != expected:
        raise LipForcingInputError(name, f"has {frames} frames but {expected_what} has {expected}.",
                                   "Wire inputs that come from the same clip, or trim them to the same length.")
