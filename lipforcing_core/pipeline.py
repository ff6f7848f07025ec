"""Streaming lip-sync pipeline: aligned face frames + audio features -> generated frames, chunk by chunk.

This is the official streaming loop (docs/design.md §4) on our modules. Per chunk of 3 latent
frames (video frames 0-8 for the first chunk, then 12 at a time):

1. encode the chunk's unmasked and masked source frames as one batch of two through a streaming
   VAE encoder (equal to two independent streams; the first unmasked latent is the reference
   latent for the whole clip);
2. denoise the chunk's slice of the clip noise with the few-step schedule (no CFG);
3. decode the clean latents with a streaming decoder (TAEHV or the Wan VAE) and yield the frames;
4. run the ``t = 0`` pass that writes the chunk into the KV cache.

Conditioning ``y`` (49 channels): reference latent repeated | ``1 - mask`` on the latent grid |
masked-video latents | source-video latents (docs/design.md §2, input channels).

Length rule (official ``compute_generation_length``): with ``V`` audio frames (floor of duration x
25), ``L = 1 + (V - 1) // 4`` latent frames rounded down to a multiple of the chunk size (at least
one chunk), and ``1 + 4 (L - 1)`` output frames. The source video is cut to that length or, when
shorter, extended by ping-pong (0, 1, ..., n-1, n-2, ..., 1, 0, 1, ...); what was done is reported
in the ``info`` dict and by a warning.

Text: a ``[1, N, 4096]`` (or ``[B, N, 4096]``) UMT5 embedding. Without one, an all-zero embedding
is used, for models trained without text. One zero row is used: every zero row gives the same
key and value, so attending to one row equals attending to the official 512 zero rows.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import FPS, STREAM_WINDOW, TEXT_DIM, CausalSpec
from .face.paste import blend_mouth
from .models.dit import LipForcingDiT
from .sampling.causal import CausalSampler, NoiseSource, SeededNoise
from .sampling.schedule import STUDENT_T_LIST
from .sampling.teacher import sample_teacher
from .vae.wan_vae import SPACE_FACTOR, TIME_FACTOR

SIZE_MULTIPLE = 16  # VAE x8, then the DiT's 2x2 patches


# ------------------------------------------------------------------------------------------ lengths


def generation_length(audio_frames: int, chunk_size: int = 3) -> tuple[int, int]:
    """``(latent_frames, video_frames)`` generated for ``audio_frames`` frames of audio (official rule)."""
    if audio_frames < 1:
        raise ValueError(f"audio covers {audio_frames} video frames; at least one chunk is needed")
    latent = max((1 + (audio_frames - 1) // TIME_FACTOR) // chunk_size * chunk_size, chunk_size)
    return latent, 1 + TIME_FACTOR * (latent - 1)


def chunk_frames(index: int, chunk_size: int = 3) -> tuple[int, int]:
    """Video frame range ``[start, end)`` that latent chunk ``index`` covers (9 frames, then 12 each)."""
    first = 1 + TIME_FACTOR * (chunk_size - 1)
    if index == 0:
        return 0, first
    start = first + TIME_FACTOR * chunk_size * (index - 1)
    return start, start + TIME_FACTOR * chunk_size


def pingpong_indices(n: int, target: int) -> np.ndarray:
    """Indices extending ``n`` frames to ``target`` by playing forward and backward (cut when ``n >= target``)."""
    if n >= target:
        return np.arange(target)
    if n == 1:
        return np.zeros(target, dtype=np.int64)
    cycle = np.concatenate([np.arange(n), np.arange(n - 2, 0, -1)])
    return np.resize(cycle, target)


# ------------------------------------------------------------------------------------------ conditioning


class SourceFrames:
    """The source clip, converted to ``[B, 3, t, H, W]`` in [-1, 1] one range at a time.

    ``frames`` is ``[T, H, W, 3]`` uint8 (or float in [0, 255]) or ``[B, 3, T, H, W]`` in [-1, 1].
    Only the requested frames are converted, so memory does not grow with the clip beyond the
    caller's own array. ``length`` frames are served: the clip is cut or ping-pong extended.
    """

    def __init__(self, frames: Tensor | np.ndarray, length: int | None = None):
        x = torch.as_tensor(frames)
        if x.ndim == 4 and x.shape[-1] == 3:
            self.channels_last = True
        elif x.ndim == 5 and x.shape[1] == 3:
            self.channels_last = False
        else:
            raise ValueError(f"frames: expected [T, H, W, 3] uint8 or [B, 3, T, H, W] in [-1, 1], got shape {tuple(x.shape)}")
        self.frames = x
        self.num_frames = x.shape[0] if self.channels_last else x.shape[2]
        self.batch = 1 if self.channels_last else x.shape[0]
        self.size = tuple(x.shape[1:3] if self.channels_last else x.shape[3:])
        self.indices = pingpong_indices(self.num_frames, self.num_frames if length is None else length)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, frames: slice) -> Tensor:
        return self.pixels(frames)

    def pixels(self, frames: slice, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Frames ``[B, 3, t, H, W]`` in [-1, 1] on ``device``: uint8 frames travel as uint8 and are
        converted there (a quarter of the bytes of float32)."""
        idx = torch.from_numpy(self.indices[frames])
        if self.channels_last:
            raw = self.frames[idx].to(device, non_blocking=True)
            return (raw.float() / 255.0 * 2.0 - 1.0).permute(3, 0, 1, 2).unsqueeze(0).to(dtype)
        return self.frames[:, :, idx].to(device, torch.float32).to(dtype)


def _as_array(mask: Tensor | np.ndarray) -> np.ndarray:
    m = np.asarray(mask.detach().cpu() if isinstance(mask, Tensor) else mask, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"mask: expected a 2-D [H, W] keep-mask (1 = keep, 0 = mouth), got shape {m.shape}")
    return m


def _mask_array(mask: Tensor | np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The mask as float32, checked against the frame size ``hw`` (same size or aspect ratio) and range."""
    m = _as_array(mask)
    (mh, mw), (h, w) = m.shape, hw
    if mh * w != mw * h:
        raise ValueError(f"mask is {mh}x{mw} but the frames are {h}x{w}: the mask must have the frames' size "
                         f"or the same aspect ratio")
    if m.min() < 0 or m.max() > 1:
        raise ValueError(f"mask values must lie in [0, 1] (1 = keep), got [{m.min()}, {m.max()}]")
    return m


def pixel_mask(mask: Tensor | np.ndarray, hw: tuple[int, int]) -> Tensor:
    """Binary ``[H, W]`` keep-mask at frame size: bilinear (cv2) resize if needed, then ``> 0.5`` (official)."""
    m = _mask_array(mask, hw)
    if m.shape != tuple(hw):
        m = cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy((m > 0.5).astype(np.float32))


def latent_mask(mask: Tensor | np.ndarray, latent_hw: tuple[int, int]) -> Tensor:
    """Binary ``[h, w]`` keep-mask on the latent grid: bilinear resize of the given mask, then ``> 0.5`` (official)."""
    m = torch.from_numpy(_as_array(mask))
    small = F.interpolate(m[None, None], size=tuple(latent_hw), mode="bilinear", align_corners=False)[0, 0]
    return (small > 0.5).float()


def build_y(ref_latent: Tensor, keep_mask: Tensor, masked: Tensor, ref_sequence: Tensor) -> Tensor:
    """49 conditioning channels ``[B, 49, n, h, w]`` for ``n`` latent frames.

    ``ref_latent [B,16,1,h,w]`` is repeated over time, ``keep_mask`` (1 = keep; ``[h,w]`` shared or
    ``[B,h,w]`` per sample) enters as ``1 - mask``, then the masked-video and source-video latents
    ``[B,16,n,h,w]`` of the same frames.
    """
    b, _, n, h, w = masked.shape
    if ref_sequence.shape != masked.shape or tuple(keep_mask.shape[-2:]) != (h, w) or keep_mask.ndim not in (2, 3):
        raise ValueError(f"conditioning shapes disagree: masked {tuple(masked.shape)}, ref_sequence "
                         f"{tuple(ref_sequence.shape)}, mask {tuple(keep_mask.shape)}")
    plane = (1 - keep_mask).to(masked).reshape(-1, 1, 1, h, w).expand(b, 1, n, h, w)
    return torch.cat([ref_latent.to(masked).expand(-1, -1, n, -1, -1), plane, masked, ref_sequence], dim=1)


class StreamingEncoder:
    """Encodes a clip's unmasked and mouth-masked frames chunk by chunk.

    ``vae`` is a :class:`~lipforcing_core.vae.WanVAE` (or anything with ``new_encode_stream`` and
    ``encode_chunk``). The two streams run as one batch (unmasked samples first, then masked) in
    one encoder stream, which equals two independent streams (samples do not interact in the
    encoder) at half the calls. The reference latent is the first latent of the unmasked stream.
    """

    def __init__(self, vae, video: SourceFrames, keep_mask: Tensor, chunk_size: int = 3):
        self.vae, self.video, self.chunk_size = vae, video, chunk_size
        param = next(vae.parameters())
        self.keep = keep_mask.to(param.device, param.dtype)  # moved once
        self.stream = vae.new_encode_stream()
        self.ref_latent: Tensor | None = None

    def __call__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(ref_latent, masked, ref_sequence)`` latents of chunk ``index`` (chunks in order)."""
        a, b = chunk_frames(index, self.chunk_size)
        pixels = self.video.pixels(slice(a, b), self.keep.device, self.keep.dtype)
        both = self.vae.encode_chunk(torch.cat([pixels, pixels * self.keep]), self.stream)
        ref_sequence, masked = both.chunk(2)
        if self.ref_latent is None:
            self.ref_latent = ref_sequence[:, :, :1]
        return self.ref_latent, masked, ref_sequence


class PrecomputedLatents:
    """Conditioning from latents computed beforehand (cached training data, the golden tests)."""

    def __init__(self, masked: Tensor, ref_sequence: Tensor, ref_latent: Tensor | None = None, chunk_size: int = 3):
        self.masked, self.ref_sequence, self.chunk_size = masked, ref_sequence, chunk_size
        self.ref_latent = ref_sequence[:, :, :1] if ref_latent is None else ref_latent

    def __call__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        s = slice(index * self.chunk_size, (index + 1) * self.chunk_size)
        return self.ref_latent, self.masked[:, :, s], self.ref_sequence[:, :, s]


def frames_to_uint8(frames: Tensor) -> np.ndarray:
    """Generated ``[B, 3, n, H, W]`` in [-1, 1] -> uint8 ``[B, n, H, W, 3]`` (rounded)."""
    return _to_uint8(frames).permute(0, 2, 3, 4, 1).cpu().numpy()


def _to_uint8(frames: Tensor) -> Tensor:
    return ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def composite_mouth(generated: Tensor, source: np.ndarray, keep: Tensor) -> np.ndarray:
    """Mouth-only blend in aligned space on the CPU: generated ``[1, 3, n, H, W]`` where ``keep`` is 0,
    the source uint8 ``[n, H, W, 3]`` faces elsewhere; uint8 ``[n, H, W, 3]`` (the official composite,
    rounding as :func:`composite_mouth_device`)."""
    return composite_mouth_device(generated.cpu(), torch.from_numpy(np.asarray(source)), keep.cpu()).numpy()


def composite_mouth_device(generated: Tensor, source: Tensor, keep: Tensor) -> Tensor:
    """:func:`composite_mouth` where the tensors are (e.g. on the GPU).

    ``source`` is uint8 ``[n, H, W, 3]`` and ``keep`` ``[H, W]`` on the device of ``generated``;
    returns uint8 ``[n, H, W, 3]`` there, for one copy to the host (:class:`HostCopy`). Rounding: the
    generated frames are rounded to uint8 first (as they would be saved), the blend
    (:func:`~lipforcing_core.face.paste.blend_mouth`) is truncated to uint8.
    """
    gen = _to_uint8(generated)[0].permute(1, 2, 3, 0)
    return blend_mouth(gen, source, keep[None, :, :, None]).to(torch.uint8)


class HostCopy:
    """One asynchronous device-to-host copy into pinned memory; :meth:`wait` returns the CPU tensor.

    The copy is queued behind the work that produced the tensor, so handing frames over does not
    stall the device; only the consumer waits, when it needs them.
    """

    def __init__(self, tensor: Tensor):
        self.event = None
        if tensor.is_cuda:
            self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.host.copy_(tensor, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = tensor

    def wait(self) -> Tensor:
        if self.event is not None:
            self.event.synchronize()
        return self.host


# ------------------------------------------------------------------------------------------ timing


class StageTimer:
    """Seconds per pipeline stage, only when a timer is given (the pipeline times nothing otherwise).

    On CUDA a stage is bracketed by two CUDA events: nothing waits for the device while the
    pipeline runs, and :attr:`seconds` waits for the recorded events when it is read. Elsewhere
    (and for stages given no device) it is wall-clock time.
    """

    def __init__(self):
        self._seconds: dict[str, float] = {}
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def _add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    @contextmanager
    def stage(self, name: str, device: torch.device | None = None):
        if device is not None and device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._pending.append((name, start, end))
            return
        began = time.perf_counter()
        try:
            yield
        finally:
            self._add(name, time.perf_counter() - began)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per stage so far (waits for the device work of the stages recorded)."""
        for name, start, end in self._pending:
            end.synchronize()
            self._add(name, start.elapsed_time(end) / 1000.0)
        self._pending.clear()
        return self._seconds


def timed(timer: StageTimer | None, name: str, device: torch.device):
    """``timer.stage(name, device)``, or a no-op (no device wait) without a timer."""
    return nullcontext() if timer is None else timer.stage(name, device)


# ------------------------------------------------------------------------------------------ pipeline


@dataclass
class ChunkOutput:
    """One generated chunk: its clean latents and (when a decoder is set) its decoded frames."""

    index: int
    frame_start: int  # index in the clip of the first frame in ``frames``
    latents: Tensor  # [B, 16, chunk, h, w]
    frames: Tensor | None  # [B, 3, n, H, W] in [-1, 1]


class LipSyncPipeline:
    """The streaming student: ``stream`` yields chunks as they are ready, ``run`` returns the whole clip.

    ``vae`` encodes the source frames (and decodes when ``decoder`` is None); ``decoder`` is e.g. a
    :class:`~lipforcing_core.vae.TAEHV`. ``t_list`` is the step schedule (1-4 steps ending in 0),
    ``spec`` windowed (:data:`STREAM_WINDOW`) or full causal attention. ``timer`` (a
    :class:`StageTimer`) records per-stage times; without one nothing is timed. ``cuda_graphs``
    as for :class:`~lipforcing_core.sampling.causal.CausalSampler` (default: on for a windowed
    student on CUDA).
    """

    def __init__(self, model: LipForcingDiT, vae=None, decoder=None, *, t_list=STUDENT_T_LIST,
                 spec: CausalSpec = STREAM_WINDOW, bf16_attn: bool = False, timer: StageTimer | None = None,
                 cuda_graphs: bool | None = None):
        self.model, self.vae = model, vae
        self.decoder = decoder if decoder is not None else vae
        self.sampler = CausalSampler(model, t_list, spec, bf16_attn, cuda_graphs)
        self.timer = timer

    def _stage(self, name: str):
        return timed(self.timer, name, self.device)

    @property
    def device(self) -> torch.device:
        return self.model.patch_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.patch_embedding.weight.dtype

    def prepare(self, frames: Tensor | np.ndarray, audio_emb: Tensor, mask: Tensor | np.ndarray,
                info: dict | None = None) -> tuple[SourceFrames, Tensor, np.ndarray]:
        """Validate inputs and apply the length rule: ``(source frames, audio [B, N, D], keep-mask)``.

        ``frames`` may also be a :class:`SourceFrames` (e.g. one that decodes lazily); it is used as
        given, so it must already serve the generated length."""
        given = frames if isinstance(frames, SourceFrames) else None
        video = given if given is not None else SourceFrames(frames)
        (h, w), t, b = video.size, video.num_frames, video.batch
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(f"frames are {h}x{w}; height and width must be multiples of {SIZE_MULTIPLE} "
                             f"(e.g. the 512x512 aligned face)")
        if t == 0:
            raise ValueError("frames: the source video has no frames")
        keep = _mask_array(mask, (h, w))
        audio = torch.as_tensor(audio_emb)
        if audio.ndim == 2:
            audio = audio.unsqueeze(0)
        if audio.ndim != 3 or audio.shape[0] not in (1, b):
            raise ValueError(f"audio_emb: expected [V, D] or [B, V, D] per-frame features (B={b}), got {tuple(audio.shape)}")
        if audio.shape[-1] != self.model.config.audio_dim:
            raise ValueError(f"audio_emb has {audio.shape[-1]} features per frame but the model takes "
                             f"{self.model.config.audio_dim}: use the audio encoder the model was trained with "
                             "(wav2vec2-base-960h gives 10752 for the released models, the demo log-mel 160)")
        first = chunk_frames(0, self.sampler.chunk_size)[1]
        if audio.shape[1] < first:
            raise ValueError(f"audio_emb covers {audio.shape[1]} video frames; one chunk needs at least {first} "
                             f"({first / FPS:.2f} s of audio)")
        latent, n = generation_length(audio.shape[1], self.sampler.chunk_size)
        report = {"audio_frames": audio.shape[1], "audio_frames_used": n, "video_frames_in": t,
                  "latent_frames": latent, "output_frames": n, "video_adjust": "none"}
        if given is not None and t != n:
            raise ValueError(f"frames: the source serves {t} frames but the audio gives {n}")
        if t != n:
            report["video_adjust"] = "ping-pong extended" if t < n else "cut"
            warnings.warn(f"source video has {t} frames, the audio gives {n} output frames: video "
                          f"{report['video_adjust']} to {n} frames", stacklevel=3)
        if info is not None:
            info.update(report)
        return given if given is not None else SourceFrames(frames, n), audio[:, :n].expand(b, -1, -1), keep

    def text(self, text: Tensor | None, batch: int) -> Tensor:
        """The text embedding for ``batch`` samples (one zero row when ``text`` is None)."""
        if text is None:
            text = torch.zeros(1, 1, TEXT_DIM, device=self.device, dtype=self.dtype)
        if text.ndim != 3 or text.shape[-1] != TEXT_DIM or text.shape[0] not in (1, batch):
            raise ValueError(f"text: expected a [1, N, {TEXT_DIM}] or [B, N, {TEXT_DIM}] embedding, got {tuple(text.shape)}")
        return text.to(self.device, self.dtype).expand(batch, -1, -1)

    def stream(self, frames: Tensor | np.ndarray, audio_emb: Tensor, mask: Tensor | np.ndarray, *,
               text: Tensor | None = None, seed: int | torch.Generator = 42, noise: NoiseSource | None = None,
               info: dict | None = None) -> Iterator[ChunkOutput]:
        """Yield the generated clip chunk by chunk (see the module docstring).

        ``frames`` are aligned faces, ``audio_emb`` per-frame wav2vec2 features ``[V, 10752]``,
        ``mask`` the mouth keep-mask (1 = keep). Noise is drawn from ``seed`` unless ``noise``
        is given. ``info`` (a dict) receives the length decisions.
        """
        if self.vae is None:
            raise ValueError("streaming from frames needs a VAE to encode them; pass vae=... to LipSyncPipeline")
        video, audio, keep = self.prepare(frames, audio_emb, mask, info)
        latent_hw = (video.size[0] // SPACE_FACTOR, video.size[1] // SPACE_FACTOR)
        chunk = self.sampler.chunk_size
        source = StreamingEncoder(self.vae, video, pixel_mask(keep, video.size), chunk)
        yield from self.stream_latents(source, audio, latent_mask(keep, latent_hw),
                                       generation_length(audio.shape[1], chunk)[0], latent_hw, text=text,
                                       noise=noise or SeededNoise(seed, self.device))

    def stream_latents(self, source, audio_emb: Tensor | None, keep_mask: Tensor, num_frames: int,
                       latent_hw: tuple[int, int], *, text: Tensor | None = None, noise: NoiseSource | None = None,
                       decode: bool = True, records: list[dict] | None = None) -> Iterator[ChunkOutput]:
        """The chunk loop on latent conditioning: ``source(k) -> (ref_latent, masked, ref_sequence)``.

        ``audio_emb`` covers ``1 + 4 (num_frames - 1)`` video frames; ``keep_mask`` is on the latent
        grid. ``records`` (a list) receives one dict of intermediates per chunk (the sampler's record names).
        """
        chunk, dev = self.sampler.chunk_size, self.device
        if num_frames % chunk:
            raise ValueError(f"num_frames {num_frames} is not a multiple of the chunk size {chunk}")
        noise = noise or SeededNoise(42, dev)
        b = audio_emb.shape[0] if audio_emb is not None else 1
        with self._stage("setup"):
            state = self.sampler.start(self.text(text, b), None if audio_emb is None else audio_emb.to(dev, self.dtype),
                                       latent_hw, num_frames)
            clip_noise = noise.initial((b, 16, num_frames, *latent_hw), self.dtype, dev)
            keep_mask = keep_mask.to(dev)
        decoder = self.decoder if decode else None
        dec_stream = decoder.new_decode_stream() if decoder is not None else None
        frame_start = 0
        for k in range(num_frames // chunk):
            c0 = k * chunk
            with self._stage("encode"):
                ref_latent, masked, ref_sequence = source(k)
                y = build_y(ref_latent, keep_mask, masked, ref_sequence).to(dev, self.dtype)
            record = {} if records is not None else None
            with self._stage("denoise"):
                x0 = self.sampler.denoise(state, clip_noise[:, :, c0:c0 + chunk], y, noise, c0, record)
            frames = None
            if decoder is not None:
                with self._stage("decode"), torch.no_grad():
                    param = next(decoder.parameters())
                    frames = decoder.decode_chunk(x0.to(param.device, param.dtype), dec_stream)
            yield ChunkOutput(k, frame_start, x0, frames)
            frame_start += 0 if frames is None else frames.shape[2]
            with self._stage("cache_write"):
                self.sampler.commit(state, x0, y, c0, record)
            if records is not None:
                records.append(record)

    def run(self, frames: Tensor | np.ndarray, audio_emb: Tensor, mask: Tensor | np.ndarray, **kwargs) -> Tensor:
        """Whole clip in, whole clip out: the frames of :meth:`stream` joined, ``[B, 3, N, H, W]`` in [-1, 1]."""
        return torch.cat([c.frames for c in self.stream(frames, audio_emb, mask, **kwargs)], dim=2)


@torch.no_grad()
def teacher_clip(model: LipForcingDiT, vae, frames: Tensor | np.ndarray, audio_emb: Tensor, mask: Tensor | np.ndarray,
                 *, decoder=None, steps: int = 50, cfg_scale: float = 4.5, shift: float = 5.0,
                 seed: int | torch.Generator = 0, timer: StageTimer | None = None) -> Tensor:
    """The bidirectional teacher on a whole clip: encode, ``steps`` CFG Euler steps, decode -> ``[1, 3, n, H, W]``.

    ``frames`` (``n = 1 + 4k`` of them) and ``audio_emb [n, D]`` as for :meth:`LipSyncPipeline.stream`;
    the negative is zero audio and zero text. ``seed`` as for :meth:`LipSyncPipeline.stream`; stage
    times go to ``timer``.
    """
    dev, dtype = model.patch_embedding.weight.device, model.patch_embedding.weight.dtype

    video = SourceFrames(frames)
    n, hw = video.num_frames, video.size
    latent_hw = (hw[0] // SPACE_FACTOR, hw[1] // SPACE_FACTOR)
    keep = pixel_mask(mask, hw)
    with timed(timer, "encode", dev):
        pixels = video[0:n].to(dev, next(vae.parameters()).dtype)
        ref = vae.encode(pixels)
        y = build_y(ref[:, :, :1], latent_mask(mask, latent_hw).to(dev), vae.encode(pixels * keep.to(pixels)), ref)
    with timed(timer, "denoise", dev):
        noise = SeededNoise(seed, dev).initial((1, 16, ref.shape[2], *latent_hw), dtype, dev)
        text = torch.zeros(1, 1, TEXT_DIM, device=dev, dtype=dtype)
        x0 = sample_teacher(model, noise, y.to(dtype), text, torch.as_tensor(audio_emb)[None].to(dev, dtype),
                            steps=steps, cfg_scale=cfg_scale, shift=shift)
    with timed(timer, "decode", dev):
        dec = decoder if decoder is not None else vae
        return dec.decode_chunk(x0.to(next(dec.parameters()).dtype), dec.new_decode_stream())
