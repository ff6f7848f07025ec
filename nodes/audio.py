"""Audio nodes: load wav2vec2 (or pick the demo's built-in log-mel front end) and turn an AUDIO clip
into per-video-frame speech features."""

from __future__ import annotations

from functools import partial

from lipforcing_core.audio.features import encode_audio
from lipforcing_core.audio.wav2vec2 import load_wav2vec2
from lipforcing_core.config import FPS

from ._comfy import io, model_management
from ._types import DTYPES, LipForcingInputError, clip_waveform, dtype_input
from .memory import expect, load_managed, manage
from .paths import choices

AudioEncoder = io.Custom("LIPFORCING_AUDIO_ENCODER")
AudioEmbeds = io.Custom("LIPFORCING_AUDIO_EMBEDS")

DEMO_LOGMEL = "demo log-mel (built in, no download)"  # the demo model's audio front end: no weights


class AudioEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingAudioEncoderLoader",
            display_name="Lip Forcing Audio Encoder Loader",
            category="LipForcing/loaders",
            description="Load wav2vec2-base-960h, the speech encoder Lip Forcing is conditioned on, or pick the "
                        "bundled demo model's built-in log-mel front end.",
            inputs=[
                io.Combo.Input("audio_encoder_name", options=[*choices("audio_encoders"), DEMO_LOGMEL],
                               tooltip="wav2vec2 weights in models/audio_encoders: a single file, or the HF "
                                       "folder's model.safetensors / pytorch_model.bin (its config.json is read). "
                                       f"'{DEMO_LOGMEL}' is the demo model's audio features (160 per frame, "
                                       "no weights); only the demo model takes it."),
                dtype_input("fp32", "Compute dtype of the encoder; the release runs it in fp32. The demo "
                                    "log-mel front end always computes in fp32."),
            ],
            outputs=[AudioEncoder.Output(display_name="audio_encoder")],
        )

    @classmethod
    def execute(cls, audio_encoder_name: str, weight_dtype: str) -> io.NodeOutput:
        if audio_encoder_name == DEMO_LOGMEL:
            from lipforcing_core.demo.audio_features import LogMelFeatures  # the demo's code loads on first use

            return io.NodeOutput(manage(LogMelFeatures(), "audio_encoder", DEMO_LOGMEL))
        load = partial(load_wav2vec2, dtype=DTYPES[weight_dtype])
        return io.NodeOutput(load_managed("audio_encoder", "audio_encoders", audio_encoder_name,
                                          "audio_encoder_name", load))


class AudioEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LipForcingAudioEncode",
            display_name="Lip Forcing Audio Encode",
            category="LipForcing/audio",
            description="wav2vec2 features for every video frame (OmniAvatar recipe: 14 layers x 768 = 10752 "
                        "values per frame; 160 with the demo log-mel front end), from audio at any sample rate.",
            inputs=[
                AudioEncoder.Input("audio_encoder", tooltip="From Lip Forcing Audio Encoder Loader."),
                io.Audio.Input("audio", tooltip="The speech to lip sync to (one clip, any sample rate; "
                                                "channels are mixed to mono)."),
                io.Float.Input("fps", default=FPS, min=1.0, max=120.0, step=0.001,
                               tooltip="Video frame rate the features are made for; the released models "
                                       "work at 25 fps."),
                io.Int.Input("frames", default=0, min=0, max=1_000_000,
                             tooltip="Number of video frames to make features for; 0 = as many as the audio "
                                     "lasts (floor(duration x fps)). Longer than the audio pads with silence."),
            ],
            outputs=[
                AudioEmbeds.Output(display_name="audio_embeds", tooltip="[frames, 10752] features ([frames, 160] "
                                                                         "from the demo log-mel front end)."),
                io.Int.Output(display_name="frames", tooltip="How many video frames the features cover."),
            ],
        )

    @classmethod
    def execute(cls, audio_encoder, audio: dict, fps: float, frames: int) -> io.NodeOutput:
        encoder = expect(audio_encoder, "audio_encoder", "audio_encoder")
        waveform, sample_rate = clip_waveform(audio, "audio")
        try:
            features = encode_audio(encoder.on_device(), waveform, sample_rate, num_frames=frames or None, fps=fps)
        except ValueError as err:
            raise LipForcingInputError("audio", str(err)) from err
        return io.NodeOutput(features.to(model_management.intermediate_device()), int(features.shape[0]))


NODES = [AudioEncoderLoader, AudioEncode]
