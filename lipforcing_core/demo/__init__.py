"""The demo domain: procedural cartoon talking faces with synthetic speech, and a download-free audio front end.

Any identity can speak any utterance, deterministically from seeds, which gives exact ground truth
for dubbing; see :func:`make_clip`.
"""

from .audio_features import LogMelConfig, LogMelFeatures, num_video_frames
from .face_render import HeadMotion, Identity, render_frames
from .phonemes import MOUTH_PARAMS, PHONEMES, Segment, Utterance, mouth_trace
from .speech import synthesize_speech
from .synthetic import Clip, frame_times, make_clip, num_frames, render_face

__all__ = [
    "MOUTH_PARAMS",
    "PHONEMES",
    "Clip",
    "HeadMotion",
    "Identity",
    "LogMelConfig",
    "LogMelFeatures",
    "Segment",
    "Utterance",
    "frame_times",
    "make_clip",
    "mouth_trace",
    "num_frames",
    "num_video_frames",
    "render_face",
    "render_frames",
    "synthesize_speech",
]
