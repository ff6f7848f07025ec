"""Audio front end: file/ComfyUI audio → 16 kHz mono → wav2vec2 per-video-frame features."""

from lipforcing_core.audio.features import encode_audio, features_at, normalize
from lipforcing_core.audio.io import load_audio, prepare_waveform, resample
from lipforcing_core.audio.wav2vec2 import AudioEncoder, Wav2Vec2Config, load_wav2vec2

__all__ = [
    "AudioEncoder",
    "Wav2Vec2Config",
    "encode_audio",
    "features_at",
    "load_audio",
    "load_wav2vec2",
    "normalize",
    "prepare_waveform",
    "resample",
]
