"""Face pipeline (LatentSync-style): detect -> three points -> 512 alignment -> mouth mask -> paste-back."""

from .align import Alignment, FaceAligner, FaceNotFoundError, align_points
from .detect import Face, FaceDetector, InsightFaceDetector, MediaPipeDetector, ModelNotFoundError, points3_from_106
from .mask import load_mouth_mask
from .paste import paste_back

__all__ = [
    "Alignment", "Face", "FaceAligner", "FaceDetector", "FaceNotFoundError", "InsightFaceDetector",
    "MediaPipeDetector", "ModelNotFoundError", "align_points", "load_mouth_mask", "paste_back",
    "points3_from_106",
]
