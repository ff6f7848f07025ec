"""FaceAligner behaviour: gap filling, no-face errors, picking among several faces, pass-through."""

from __future__ import annotations

import numpy as np
import pytest

from lipforcing_core.face import (
    Face,
    FaceAligner,
    FaceNotFoundError,
    InsightFaceDetector,
    MediaPipeDetector,
    ModelNotFoundError,
    load_mouth_mask,
    paste_back,
)
from lipforcing_core.face.align import align_points, fill_gaps
from lipforcing_core.video import read_video

POINTS = np.array([[60.0, 50.0], [100.0, 50.0], [80.0, 80.0]])


class ScriptedDetector:
    """Returns a fixed face on the frames listed in ``present`` (frame value = its index)."""

    def __init__(self, present):
        self.present = set(present)

    def detect(self, frame):
        t = int(frame[0, 0, 0])
        return [Face(np.array([40.0, 30, 120, 130]), 0.9, POINTS + t)] if t in self.present else []


def _frames(n):
    frames = np.zeros((n, 160, 160, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(n)
    return frames


def test_fill_gaps_rules():
    a, b = np.zeros((3, 2)), np.ones((3, 2))
    filled = fill_gaps([None, None, a] + [None] * 59 + [b] + [None] * 60 + [a])
    assert filled[0] is a and filled[1] is a  # leading gap uses the first face
    assert all(p is a for p in filled[3:62])  # 59 missing frames reuse the last face
    assert all(p is None for p in filled[63:123])  # 60 missing frames stay empty
    assert filled[123] is a


def test_aligner_gaps_and_pass_through():
    frames = _frames(12)
    detector = ScriptedDetector(present=[0, 1, 2])  # then 9 frames without a face
    crops, transforms, has_face = FaceAligner(detector, max_gap=9).align(frames)
    assert has_face[:3].all() and not has_face[3:].any()
    assert not crops[3:].any() and np.isnan(transforms[3:].astype(np.float32)).all()
    short = FaceAligner(detector, max_gap=10).align(frames)
    assert short.has_face.all()
    np.testing.assert_array_equal(short.transforms[11].astype(np.float32).round(0), short.transforms[2].astype(np.float32).round(0))
    generated = np.full_like(crops, 200)
    out = paste_back(frames, generated, transforms, load_mouth_mask(), original_crops=crops)
    np.testing.assert_array_equal(out[3:], frames[3:])  # no face: unchanged


def test_no_face_names_the_clip():
    with pytest.raises(FaceNotFoundError, match="my_clip.mp4"):
        FaceAligner(ScriptedDetector(present=[])).align(_frames(5), name="my_clip.mp4")


def test_mouth_only_needs_original_crops():
    frames = _frames(2)
    crops, transforms, _ = FaceAligner(ScriptedDetector([0, 1])).align(frames)
    with pytest.raises(ValueError, match="original_crops"):
        paste_back(frames, crops, transforms, load_mouth_mask())


def test_several_faces_largest_or_by_index(media_root):
    try:
        detector = MediaPipeDetector()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    small = read_video(media_root / "latentsync_demo3_video.mp4", size=(540, 960), max_frames=1).frames[0]
    large = read_video(media_root / "latentsync_demo2_video.mp4", size=(540, 960), max_frames=1).frames[0]
    frame = np.concatenate([small, large], axis=1)[None]
    faces = detector.detect(frame[0])
    assert len(faces) == 2 and faces[0].box[0] > 540 > faces[1].box[2]  # largest (right half) first
    first = FaceAligner(detector).align(frame)
    second = FaceAligner(detector, face_index=1).align(frame)
    assert first.transforms[0, 0, 2] < second.transforms[0, 0, 2]  # crop of the right face shifts further
    with pytest.raises(FaceNotFoundError, match="face #2"):
        FaceAligner(detector, face_index=2).align(frame)


def test_missing_models_are_reported(tmp_path):
    with pytest.raises(ModelNotFoundError, match="face_landmark.tflite"):
        MediaPipeDetector(model_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match="buffalo_l"):
        InsightFaceDetector(tmp_path)


def test_fill_outside_the_frame():
    frames = np.zeros((1, 160, 160, 3), np.uint8)
    points = [np.array([[5.0, 5.0], [45.0, 5.0], [25.0, 35.0]])]  # face at the top-left corner
    crop = align_points(frames, points).crops[0]
    assert (crop[:40] == 127).all()  # above the frame: fill value
    assert (crop[300:400, 200:300] == 0).all()  # inside the (black) frame
