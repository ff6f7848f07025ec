"""Checks of a command's inputs that run before any model is loaded or any frame is generated.

Each check reads only what it needs: the first bytes of a file, a media file's headers and packet
index, the driving audio (small next to video), checkpoint headers (safetensors: the JSON header;
pickles: memory-mapped). A failure raises :class:`~lipforcing_core.errors.InputError` naming the
option (``--video``, ``--dit`` ...) and what was expected, so a mistake costs a second instead of a
model load. The ComfyUI nodes share the messages of the checks that apply to them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import av

from .atomic import check_target
from .errors import InputError, about

MEDIA = {"video": "a video file (.mp4, .mov, .mkv, ...)",
         "audio": "an audio file (.wav, .mp3, .flac, ...) or a video with sound"}
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"PK\x03\x04", "a zip archive (a torch checkpoint?)"), (b"%PDF", "a PDF document"))


def not_media(path: Path) -> str | None:
    """What ``path``'s first bytes say it is when that is plainly not audio or video (else None)."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors weight file"
    text = head.decode("utf-8", errors="ignore")
    plain = len(text) >= len(head) - 3 and all(c.isprintable() or c in "\n\r\t" for c in text)
    return "a text file" if plain else None


def check_media(path: str | Path, want: str) -> None:
    """``path`` is a readable, complete file with a ``want`` ("video" or "audio") stream.

    Complete: every packet its index lists is present (a cut-off download fails here, not mid-run).
    """
    path, expected = Path(path), MEDIA[want]
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected {expected}")
    kind = not_media(path)
    if kind:
        raise InputError(f"{path} is {kind}; expected {expected}")
    try:
        with av.open(str(path)) as container:
            streams = container.streams.video if want == "video" else container.streams.audio
            if not streams:
                only_sound = " (it holds only sound)" if container.streams.audio else ""
                raise InputError(f"{path} has no {want} stream{only_sound}; expected {expected}")
            listed = streams[0].frames
            present = sum(1 for packet in container.demux(streams[0]) if packet.size)
    except av.error.FFmpegError as err:
        raise InputError(f"{path} is not a readable {want} file ({err.strerror or err}); expected {expected} "
                         "(a corrupt or truncated file reads like this)") from err
    if not present:
        raise InputError(f"{path}: its {want} stream is empty; expected {expected}")
    if listed and present < listed:
        raise InputError(f"{path} is truncated: {present} of its {listed} {want} packets are present")


def check_speech(path: str | Path) -> float:
    """The driving audio at ``path`` decodes, is finite and lasts at least one generation chunk; its
    duration in seconds. Peaks beyond ±1 are scaled with a warning (see ``audio.io.load_audio``)."""
    from .audio.features import check_duration
    from .audio.io import load_audio

    check_media(path, "audio")
    waveform, rate = load_audio(path)
    check_duration(waveform.shape[-1], rate, name=f"{path}: ")
    return waveform.shape[-1] / rate


def check_audio_width(model_width: int, encoder_width: int) -> None:
    """The DiT's audio projection takes the per-frame feature width the audio encoder gives."""
    from .config import PRESETS

    if model_width != encoder_width:
        hint = (" The bundled demo model takes the demo's built-in log-mel features, not wav2vec2."
                if model_width == PRESETS["demo"].audio_dim else " Pair the model with the audio encoder it was "
                "trained with (wav2vec2-base-960h for the released models).")
        raise InputError(f"the model takes {model_width} audio features per frame but the audio encoder gives "
                         f"{encoder_width}.{hint}")


def check_latent_width(model_channels: int, vae_channels: int) -> None:
    """The DiT predicts as many latent channels as the VAE encodes (16 for Wan2.1)."""
    if model_channels != vae_channels:
        raise InputError(f"the model works on {model_channels}-channel latents but the VAE makes {vae_channels}; "
                         "expected the Wan2.1 VAE (16 channels), e.g. not the Wan2.2 one (48)")


def dit_widths(path: str | Path) -> tuple[int, int]:
    """``(audio feature width, latent channels)`` of a Lip Forcing DiT file, from its shapes alone."""
    from .checkpoints import CheckpointError, detect_preset, read_shapes
    from .config import get_preset

    shapes = {k: shape for k, (shape, _) in read_shapes(path).items()}
    preset = detect_preset(shapes)
    if "audio_proj.proj.weight" not in shapes:
        raise CheckpointError(f"{path} has no audio modules: it looks like a Wan2.1 base model, not a Lip Forcing "
                              "student")
    cfg = get_preset(preset)
    return (shapes["audio_proj.proj.weight"][1] // cfg.audio_frames_per_latent,
            shapes["head.head.weight"][0] // math.prod(cfg.patch_size))


def check_models(dit: str | Path, vae: str | Path | None, wav2vec: str | Path | None) -> None:
    """The DiT, VAE and audio encoder files are what they claim and fit together (shapes / config only)."""
    from .audio.wav2vec2 import feature_width
    from .vae.wan_vae import latent_channels

    with about("--dit"):
        audio_width, channels = dit_widths(dit)
    if wav2vec is not None:
        with about("--wav2vec"):
            width = feature_width(wav2vec)
        with about(f"--dit {dit} with --wav2vec {wav2vec}:"):
            check_audio_width(audio_width, width)
    if vae is not None:
        with about("--vae"):
            z = latent_channels(vae)
        with about(f"--dit {dit} with --vae {vae}:"):
            check_latent_width(channels, z)


def check_sync(args: argparse.Namespace) -> None:
    """Everything ``sync`` can check before loading a model: the output path, the video, the driving
    audio and the model files (their headers). Whether the clip shows a face is found by opening the
    job (:func:`lipforcing_core.sync.open_job`), which stops at the first face."""
    with about("-o"):
        check_target(args.output, args.overwrite)
    with about("--video"):
        check_media(args.video, "video")
    if args.audio is None:
        with about("--video"):
            if not _has_audio(args.video):
                raise InputError(f"{args.video} has no sound; give the speech to sync to with --audio")
    with about("--audio" if args.audio else "--video"):
        check_speech(args.audio or args.video)
    if args.dit:
        check_models(args.dit, args.vae, args.wav2vec)


def _has_audio(path: str | Path) -> bool:
    with av.open(str(path)) as container:
        return bool(container.streams.audio)
