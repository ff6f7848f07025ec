"""Face detection and the three alignment points (left brow, right brow, nose), two backends.

``MediaPipeDetector`` (default, offline, CPU): Google MediaPipe's BlazeFace full-range detector and
468-point FaceMesh landmark model, run by OpenCV's own TFLite importer (``cv2.dnn``), so no extra
runtime is needed. The two ``.tflite`` files (Apache-2.0) ship with the pack in ``face/models/``
(checked against its ``SHA256SUMS`` when loaded) or are read from ``model_dir``. Nothing is ever
downloaded. The three points are the FaceMesh equivalents of InsightFace-106 ``lmk[43,48,49,51,50]``,
``lmk[101:106]`` and ``lmk[74,77,83,86]``: the mean of each eyebrow's outline and the mean of four
mid/lower nose points. Limits: frontal to moderately turned faces; faces smaller than ~2 % of the frame's long side are
missed; very strong yaw makes the far brow inaccurate.

``InsightFaceDetector`` (reference): InsightFace ``buffalo_l`` (SCRFD + 2d106det) exactly as the
official pipeline, including its face filters. Needs ``insightface`` + ``onnxruntime`` installed and
the model folder present (e.g. ComfyUI's ``models/insightface/models/buffalo_l``); imported lazily.

Every backend returns faces sorted by box area, largest first.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

# InsightFace 2d106det indices of the three alignment groups.
LEFT_BROW_106 = (43, 48, 49, 51, 50)
RIGHT_BROW_106 = (101, 102, 103, 104, 105)
NOSE_106 = (74, 77, 83, 86)


def points3_from_106(landmarks: np.ndarray) -> np.ndarray:
    """[106,2] landmarks -> [3,2] float64 (left brow, right brow, nose), rounded as the official code."""
    lmk = np.round(np.asarray(landmarks, dtype=np.float64))
    groups = (LEFT_BROW_106, RIGHT_BROW_106, NOSE_106)
    return np.round(np.stack([lmk[list(g)].mean(0) for g in groups]))


@dataclass
class Face:
    """One detected face in frame pixels: box (x1, y1, x2, y2), score, the three alignment points."""

    box: np.ndarray
    score: float
    points3: np.ndarray  # [3,2] float64, integer-valued: left brow, right brow, nose (image left/right)
    landmarks: np.ndarray | None = None  # the backend's full landmark set [N,2] (468 FaceMesh / 106)

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


class FaceDetector(Protocol):
    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in a uint8 RGB frame [H,W,3], largest first."""


class ModelNotFoundError(FileNotFoundError):
    """A detector's model files are missing (nothing is downloaded at run time)."""


# --- MediaPipe BlazeFace (full range) + FaceMesh ------------------------------------------------

DET_SIZE, MESH_SIZE = 192, 192
DET_MIN_SCORE, NMS_IOU = 0.5, 0.3
ROI_SCALE = 1.5  # FaceMesh ROI = detection box grown 1.5x, square, rotated to level the eyes
# FaceMesh indices of each eyebrow's outline (upper + lower) and of the nose points whose mean matches
# InsightFace's lmk[74,77,83,86] (nose mid-bridge to just above the tip).
MESH_LEFT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)  # image left (subject's right)
MESH_RIGHT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
MESH_NOSE = (195, 5, 4, 45, 275)
MESH_EYES = ((33, 133, 159, 145), (362, 263, 386, 374))  # image-left / image-right eye corners + lids


MODEL_DIR = Path(__file__).resolve().parent / "models"  # the shipped MediaPipe files (see its README.md)
MEDIAPIPE_MODELS = ("face_detection_full_range", "face_landmark")


def _bundled_models() -> dict[str, Path]:
    """The shipped ``.tflite`` files, each checked against ``models/SHA256SUMS`` (a damaged install fails here)."""
    sums = dict(line.split()[::-1] for line in (MODEL_DIR / "SHA256SUMS").read_text().splitlines() if line.strip())
    files = {name: MODEL_DIR / f"{name}.tflite" for name in MEDIAPIPE_MODELS}
    for path in files.values():
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if digest != sums.get(path.name):
            raise ModelNotFoundError(f"the shipped face model {path} is {'missing' if digest == 'missing' else 'damaged'} "
                                     "(checked against SHA256SUMS); reinstall the pack")
    return files


def _anchors(grid: int) -> np.ndarray:
    """Full-range BlazeFace anchors: one per cell of a grid x grid map, centres in [0,1]."""
    c = (np.arange(grid) + 0.5) / grid
    ys, xs = np.meshgrid(c, c, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray) -> list[tuple]:
    """MediaPipe's weighted NMS: overlapping candidates are averaged, weighted by score."""
    order = np.argsort(-scores)
    out = []
    while len(order):
        b = boxes[order]
        x1, y1 = np.maximum(b[0, 0], b[:, 0]), np.maximum(b[0, 1], b[:, 1])
        x2, y2 = np.minimum(b[0, 2], b[:, 2]), np.minimum(b[0, 3], b[:, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        iou = inter / (area[0] + area - inter + 1e-9)
        group = order[iou > NMS_IOU]
        w = scores[group][:, None]
        out.append(((boxes[group] * w).sum(0) / w.sum(), float(scores[order[0]]),
                    (keypoints[group] * w[:, :, None]).sum(0) / w.sum()))
        order = order[iou <= NMS_IOU]
    return out


class MediaPipeDetector:
    """BlazeFace full-range + FaceMesh through cv2.dnn; see the module docstring."""

    def __init__(self, model_dir: str | Path | None = None, min_score: float = DET_MIN_SCORE) -> None:
        if model_dir is None:
            files = _bundled_models()
        else:
            files = {name: Path(model_dir) / f"{name}.tflite" for name in MEDIAPIPE_MODELS}
            missing = [str(p) for p in files.values() if not p.is_file()]
            if missing:
                raise ModelNotFoundError(f"MediaPipe face models not found: missing {', '.join(missing)} "
                                         "(model_dir= must hold face_detection_full_range.tflite and face_landmark.tflite)")
        # OpenCV 5's new engine exposes only one output of these graphs; the classic one (4.x) both.
        engine = {"engine": cv2.dnn.ENGINE_CLASSIC} if hasattr(cv2.dnn, "ENGINE_CLASSIC") else {}
        self.det = cv2.dnn.readNetFromTFLite(str(files["face_detection_full_range"]), **engine)
        self.mesh = cv2.dnn.readNetFromTFLite(str(files["face_landmark"]), **engine)
        self.det_outputs = ["reshaped_classifier_face_4", "reshaped_regressor_face_4"]
        self.anchors = _anchors(DET_SIZE // 4)
        self.min_score = min_score

    def _detect_boxes(self, frame: np.ndarray) -> list[tuple]:
        """Letterbox to 192x192, run BlazeFace, decode to (box xyxy, score, keypoints [6,2]) in frame px."""
        h, w = frame.shape[:2]
        side = max(h, w)
        scale = DET_SIZE / side
        step = max(1, side // (2 * DET_SIZE))  # every step-th pixel first: area-averaging 1080p costs more than the net
        small = cv2.resize(frame[::step, ::step], (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((DET_SIZE, DET_SIZE, 3), np.float32)
        oy, ox = (DET_SIZE - small.shape[0]) // 2, (DET_SIZE - small.shape[1]) // 2
        canvas[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
        self.det.setInput((canvas / 127.5 - 1.0).transpose(2, 0, 1)[None])
        logits, reg = (o.reshape(-1, o.shape[-1]) for o in self.det.forward(self.det_outputs))
        scores = 1 / (1 + np.exp(-np.clip(logits[:, 0], -100, 100)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        reg, anchors, scores = reg[keep] / DET_SIZE, self.anchors[keep], scores[keep]
        centre = reg[:, :2] + anchors
        half = reg[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        kps = reg[:, 4:16].reshape(-1, 6, 2) + anchors[:, None]
        offset = np.array([ox, oy])

        def to_frame(p: np.ndarray) -> np.ndarray:
            return (p * DET_SIZE - offset) / scale

        return [(to_frame(b.reshape(2, 2)).ravel(), s, to_frame(k)) for b, s, k in _weighted_nms(boxes, scores, kps)]

    def _landmarks(self, frame: np.ndarray, box: np.ndarray, eyes: np.ndarray) -> np.ndarray:
        """FaceMesh 468 (x, y) landmarks in frame pixels for the face in ``box``."""
        (rx, ry), (lx, ly) = eyes
        angle = math.atan2(ly - ry, lx - rx)  # eye line, image coordinates
        size = ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        c, s = math.cos(angle), math.sin(angle)
        k = MESH_SIZE / size
        # frame -> ROI: rotate by -angle around the box centre, scale, move centre to the ROI centre
        to_roi = np.array([[k * c, k * s, 0.0], [-k * s, k * c, 0.0]])
        to_roi[:, 2] = MESH_SIZE / 2 - to_roi[:, :2] @ np.array([cx, cy])
        roi = cv2.warpAffine(frame, to_roi, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        self.mesh.setInput((roi.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])
        pts = self.mesh.forward("conv2d_20").reshape(-1, 3)[:, :2]
        back = cv2.invertAffineTransform(to_roi)
        return pts @ back[:, :2].T + back[:, 2]

    def detect(self, frame: np.ndarray) -> list[Face]:
        faces = []
        for box, score, kps in self._detect_boxes(frame):
            mesh = self._landmarks(frame, box, kps[:2])
            groups = (MESH_LEFT_BROW, MESH_RIGHT_BROW, MESH_NOSE)
            points = np.round(np.stack([mesh[list(g)].mean(0) for g in groups]).astype(np.float64))
            faces.append(Face(np.asarray(box, np.float64), score, points, mesh))
        return sorted(faces, key=lambda f: -f.area)


# --- InsightFace buffalo_l (the reference pipeline) ---------------------------------------------

class InsightFaceDetector:
    """InsightFace ``buffalo_l`` with the official filters (box >= 50x80 px, aspect 0.2-1.5, score >= 0.5).

    ``root`` is the InsightFace root (it holds ``models/<name>``), e.g. ComfyUI's ``models/insightface``."""

    def __init__(self, root: str | Path, name: str = "buffalo_l", providers: list[str] | None = None,
                 det_size: tuple[int, int] = (512, 512)) -> None:
        model_dir = Path(root) / "models" / name
        if not any(model_dir.glob("*.onnx")):
            raise ModelNotFoundError(f"InsightFace models not found in {model_dir} (expected the {name} .onnx files; "
                                     "nothing is downloaded -- place them there)")
        try:
            from insightface.app import FaceAnalysis
        except ImportError as err:
            raise ImportError("InsightFaceDetector needs `pip install insightface onnxruntime`") from err
        self.app = FaceAnalysis(name=name, root=str(root), providers=providers or ["CPUExecutionProvider"],
                                allowed_modules=["detection", "landmark_2d_106"])
        self.app.prepare(ctx_id=0, det_size=det_size)

    def detect(self, frame: np.ndarray) -> list[Face]:
        faces = []
        # The official pipeline hands insightface the RGB frame (not BGR); do the same to match it.
        for f in self.app.get(np.ascontiguousarray(frame)):
            x1, y1, x2, y2 = f.bbox.astype(np.int_).tolist()
            w, h = x2 - x1, y2 - y1
            if w < 50 or h < 80 or not 0.2 <= w / h <= 1.5 or f.det_score < 0.5:
                continue
            faces.append(Face(np.asarray(f.bbox, np.float64), float(f.det_score), points3_from_106(f.landmark_2d_106),
                              np.asarray(f.landmark_2d_106)))
        return sorted(faces, key=lambda f: -f.area)
