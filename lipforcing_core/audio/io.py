"""Audio in: decode files with PyAV, mix to mono, resample to 16 kHz exactly as librosa does.

The official pipelines call ``librosa.load(path, sr=16000)``: decode (16-bit PCM → value/32768),
average the channels, then resample with soxr "HQ" (librosa's default ``res_type``) to
ceil(n · 16000 / sr) samples. torchaudio's resampler differs by up to 0.018 in the waveform and
up to 0.5 in the features, so soxr is used here.
"""

from __future__ import annotations

import math
import warnings
import wave
from pathlib import Path

import av
import numpy as np
import soxr
import torch
from torch import Tensor

from ..atomic import atomic_output
from ..errors import InputError

SAMPLE_RATE = 16000
NOT_FINITE = "holds NaN or infinite samples; expected finite audio in [-1, 1]"


def as_batch(waveform: Tensor | np.ndarray, name: str = "waveform") -> Tensor:
    """``[T]``, ``[C, T]`` or ``[B, C, T]`` audio → float32 ``[B, C, T]`` on CPU, validated."""
    x = torch.as_tensor(waveform)
    if x.ndim not in (1, 2, 3):
        raise ValueError(f"{name}: expected [T], [C, T] or [B, C, T] audio, got shape {list(x.shape)}")
    x = x.reshape((1,) * (3 - x.ndim) + tuple(x.shape)).detach().to("cpu", torch.float32)
    if x.numel() == 0:
        raise InputError(f"{name}: empty audio (shape {list(x.shape)}); expected at least one sample per channel")
    if not torch.isfinite(x).all():
        raise InputError(f"{name}: {NOT_FINITE}")
    return x


def resample(x: Tensor, sample_rate: int, target_rate: int = SAMPLE_RATE) -> Tensor:
    """Resample ``[..., T]`` with soxr HQ to ceil(T · target / sr) samples (librosa's ``soxr_hq``)."""
    if sample_rate == target_rate:
        return x
    lead, length = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, length).T.contiguous().numpy()
    out = torch.from_numpy(np.ascontiguousarray(soxr.resample(flat, sample_rate, target_rate, quality="HQ").T))
    size = math.ceil(length * target_rate / sample_rate)
    out = torch.nn.functional.pad(out, (0, max(size - out.shape[-1], 0)))[:, :size]
    return out.reshape(*lead, size)


def prepare_waveform(waveform: Tensor | np.ndarray, sample_rate: int) -> Tensor:
    """Any audio → mono 16 kHz float32 ``[B, T]``: channel mean first, then soxr HQ resampling."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate: expected a positive integer in Hz, got {sample_rate!r}")
    return resample(as_batch(waveform).mean(1), int(sample_rate))


def load_audio(path: str | Path, stream: int = 0) -> tuple[Tensor, int]:
    """Decode the ``stream``-th audio stream of a file with PyAV → (float32 ``[C, T]``, sample rate).

    Integer PCM is scaled like soundfile / librosa (int16 / 32768). A file that is not audio, holds
    no samples or holds NaN / infinite samples raises :class:`~lipforcing_core.errors.InputError`;
    float audio peaking beyond ±1 is scaled down to ±1 with a warning (it would clip in the output).
    """
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file; expected an audio file (.wav, .mp3, .flac, ...)")
    try:
        with av.open(str(path)) as container:
            if len(container.streams.audio) <= stream:
                raise InputError(f"{path}: no audio stream #{stream} (found {len(container.streams.audio)}); "
                                 "expected an audio file or a video with sound")
            audio = container.streams.audio[stream]
            chunks = [_frame_to_float(frame) for frame in container.decode(audio)]
            rate = audio.codec_context.sample_rate
    except av.error.FFmpegError as err:
        raise InputError(f"{path}: not a readable audio file ({err.strerror or err})") from err
    if not chunks or not sum(c.shape[1] for c in chunks):
        raise InputError(f"{path}: the audio stream holds no samples")
    return torch.from_numpy(checked_audio(np.concatenate(chunks, axis=1), str(path))), rate


def checked_audio(audio: np.ndarray, name: str) -> np.ndarray:
    """``audio`` with NaN / infinite samples refused and peaks beyond ±1 scaled down to ±1 (with a warning)."""
    if not np.isfinite(audio).all():
        raise InputError(f"{name}: {NOT_FINITE}")
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > 1.0:
        warnings.warn(f"{name}: samples peak at {peak:.3g}, beyond [-1, 1]; the audio is scaled down by that "
                      "factor so it does not clip", stacklevel=3)
        audio = audio / peak
    return audio


def write_wav(path: str | Path, waveform: Tensor | np.ndarray, sample_rate: int, *, overwrite: bool = False) -> Path:
    """Write float mono ``[N]`` / ``[C, N]`` audio in [-1, 1] as 16-bit PCM WAV, atomically (never over an
    existing file unless ``overwrite``)."""
    audio = np.atleast_2d(np.asarray(waveform, np.float32))
    pcm = (np.clip(audio, -1, 1) * 32767).round().astype("<i2").T.tobytes()
    with atomic_output(path, overwrite) as tmp, wave.open(str(tmp), "wb") as f:
        f.setnchannels(audio.shape[0])
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm)
    return Path(path)


def _frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    data = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: [1, T * C] interleaved
        data = data.reshape(-1, len(frame.layout.channels)).T
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        half = (int(info.max) + 1 - int(info.min)) // 2  # 32768 for int16; uint8 is offset by 128
        data = (data.astype(np.float64) - (info.min + half)) / half
    return data.astype(np.float32)
