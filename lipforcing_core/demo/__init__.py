"""The demo domain: procedural cartoon talking faces with synthetic speech, and a download-free audio front end.

Any identity can speak any utterance, deterministically from seeds, which gives exact ground truth
for dubbing; see :func:`make_clip`. The names below resolve on first use, so that importing
:mod:`lipforcing_core.demo.constants` (what ComfyUI reads at start-up) loads none of the demo's code.
"""

from __future__ import annotations

from .. import lazy_getattr

#: public name -> submodule that defines it
_EXPORTS = {
    "LogMelConfig": "audio_features", "LogMelFeatures": "audio_features", "num_video_frames": "audio_features",
    "HeadMotion": "face_render", "Identity": "face_render", "render_frames": "face_render",
    "MOUTH_PARAMS": "phonemes", "PHONEMES": "phonemes", "Segment": "phonemes", "Utterance": "phonemes",
    "mouth_trace": "phonemes",
    "synthesize_speech": "speech",
    "Clip": "synthetic", "frame_times": "synthetic", "make_clip": "synthetic", "num_frames": "synthetic",
    "render_face": "synthetic",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
