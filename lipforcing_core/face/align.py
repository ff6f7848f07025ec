"""LatentSync-style face alignment: three points -> similarity -> 420x560 warp -> 512x512 crop.

This reproduces the geometry of the Lip Forcing release (vendored from LatentSync) exactly, because
the released model only ever saw crops made this way (docs/design.md §6):

* three points (left brow, right brow, nose) from InsightFace-106 landmarks, rounded half-to-even;
* a float32 Umeyama similarity onto ``TEMPLATE`` plus a small EMA'd offset (the nose row of the two
  *normalised* point sets, not a pixel translation), reset at the start of every clip;
* the matrix cast to float16 -- the warp and the later paste-back both use that float16 matrix;
* a bilinear align-corners warp to 420x560 with fill 127, rounded to float16 and truncated to uint8;
* a LANCZOS4 resize to 512x512.

Coordinates are (x, y) with integer pixel centres; ``M`` maps frame -> crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

RESOLUTION = 512
RATIO = 5.6
CROP_W, CROP_H = int(75 * RATIO), int(100 * RATIO)  # 420 x 560
TEMPLATE = (np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]]) * RATIO).astype(np.float32)
FILL = 127.0
EMA_PREV, EMA_CUR = 0.2, 0.8

def similarity(points3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 Umeyama similarity frame->crop for one frame: (M [2,3] float32, raw smoothing term [2])."""
    p = torch.as_tensor(np.asarray(points3), dtype=torch.float32)
    q = torch.as_tensor(TEMPLATE)
    c1, c2 = p.mean(0), q.mean(0)
    s1, s2 = (p - c1).std(), (q - c2).std()  # pooled x/y, n-1
    pn, qn = (p - c1) / s1, (q - c2) / s2
    u, _, vt = torch.linalg.svd(pn.T @ qn)
    r = vt.T @ u.T
    if torch.det(r) < 0:
        vt = vt.clone()
        vt[-1] *= -1
        r = vt.T @ u.T
    lin = (s2 / s1) * r
    m = torch.cat([lin, (c2 - lin @ c1)[:, None]], dim=1)
    return m.numpy(), (qn[2] - pn[2]).numpy()


class BiasSmoother:
    """The official EMA of the normalised nose offset; create one per clip (state starts empty)."""

    def __init__(self) -> None:
        self.bias: np.ndarray | None = None

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        self.bias = raw if self.bias is None else (EMA_PREV * self.bias + EMA_CUR * raw).astype(np.float32)
        return self.bias


def smoothed_matrix(points3: np.ndarray, smoother: BiasSmoother) -> np.ndarray:
    """The float16 frame->crop matrix the official pipeline warps with and keeps for paste-back."""
    m, raw = similarity(points3)
    m = m.copy()
    m[:, 2] += smoother(raw)
    return m.astype(np.float16)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a [2,3] affine (computed in float64)."""
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _axis_share(coord: np.ndarray, n: int) -> np.ndarray:
    """Share of the two linear-interpolation weights along one axis whose taps fall inside [0, n)."""
    i = np.floor(coord)
    f = coord - i
    return np.where((i >= 0) & (i < n), 1 - f, 0.0) + np.where((i >= -1) & (i < n - 1), f, 0.0)


def sample_affine(image: np.ndarray, src_of_dst: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear sampling of ``image`` [H,W,C] at ``src_of_dst``·(x, y, 1) for every output pixel, with
    integer pixel centres (align-corners) and zero padding -- the kornia ``warp_affine`` geometry.
    Positions are computed in float64, the interpolation in float32 (as kornia on CPU).
    Returns (samples [h,w,C] float32, in-image weight share w [h,w] float32).

    Only the part of ``image`` the positions reach (plus one pixel) is converted and sampled, so
    warping a face out of a 1080p frame costs what the face costs; where every position lies inside
    the image the share is 1 without being computed."""
    h, w = image.shape[:2]
    oh, ow = out_hw
    a = np.asarray(src_of_dst, np.float64)
    xs, ys = np.arange(ow, dtype=np.float64), np.arange(oh, dtype=np.float64)[:, None]
    sx = (a[0, 1] * ys + a[0, 2]) + a[0, 0] * xs
    sy = (a[1, 1] * ys + a[1, 2]) + a[1, 0] * xs
    x0, x1 = _reach(sx, w)
    y0, y1 = _reach(sy, h)
    roi = image[y0:y1, x0:x1]
    rw, rh = x1 - x0, y1 - y0
    grid = np.empty((oh, ow, 2), np.float32)
    grid[..., 0] = (sx - x0) * (2.0 / max(rw - 1, 1)) - 1.0
    grid[..., 1] = (sy - y0) * (2.0 / max(rh - 1, 1)) - 1.0
    src = torch.from_numpy(np.ascontiguousarray(roi)).permute(2, 0, 1)[None].float()
    out = F.grid_sample(src, torch.from_numpy(grid)[None], mode="bilinear", padding_mode="zeros", align_corners=True)
    samples = out[0].permute(1, 2, 0).numpy()
    inside = sx.min() >= 0 and sx.max() <= w - 1 and sy.min() >= 0 and sy.max() <= h - 1
    share = np.ones((oh, ow), np.float32) if inside else (_axis_share(sx, w) * _axis_share(sy, h)).astype(np.float32)
    return samples, share


def _reach(coord: np.ndarray, n: int) -> tuple[int, int]:
    """``[lo, hi)`` of the pixels along one axis that bilinear taps at ``coord`` touch, within ``[0, n)``;
    at least two pixels wide where the image allows it (the align-corners normalisation needs two)."""
    lo = int(np.clip(np.floor(coord.min()), 0, n - 1))
    hi = int(np.clip(np.floor(coord.max()) + 2, lo + 1, n))
    if hi - lo < 2:
        lo, hi = max(0, min(lo, n - 2)), min(n, max(hi, 2))
    return lo, hi


def warp_crop(frame: np.ndarray, m16: np.ndarray) -> np.ndarray:
    """uint8 RGB frame [H,W,3] -> 420x560 crop [560,420,3] uint8 with the float16 matrix ``m16``."""
    samples, share = sample_affine(frame, invert_affine(m16), (CROP_H, CROP_W))
    v = torch.from_numpy(samples + FILL * (1.0 - share[..., None]))
    return v.half().float().clamp_(0, 255).to(torch.uint8).numpy()  # official output is float16, then truncation


def align_frame(frame: np.ndarray, m16: np.ndarray, size: int = RESOLUTION) -> np.ndarray:
    """Warp and LANCZOS4-resize one frame to the aligned ``size`` x ``size`` face (uint8 RGB)."""
    return cv2.resize(warp_crop(frame, m16), (size, size), interpolation=cv2.INTER_LANCZOS4)


@dataclass
class Alignment:
    """Per-clip alignment result. ``transforms[t]`` is the float16 frame->crop matrix (NaN where no face)."""

    crops: np.ndarray  # [T,512,512,3] uint8 (zeros where no face)
    transforms: np.ndarray  # [T,2,3] float16
    has_face: np.ndarray  # [T] bool

    def __iter__(self):  # allows ``crops, transforms, has_face = aligner.align(frames)``
        return iter((self.crops, self.transforms, self.has_face))


def align_points(frames: np.ndarray, points3: list[np.ndarray | None], size: int = RESOLUTION) -> Alignment:
    """Align every frame with its three points (None = no face: crop zeros, transform NaN).

    The bias EMA runs over the frames with a face, in order, starting fresh for this clip."""
    smoother = BiasSmoother()
    n = len(points3)
    crops = np.zeros((n, size, size, 3), np.uint8)
    transforms = np.full((n, 2, 3), np.nan, np.float16)
    has_face = np.array([p is not None for p in points3])
    for t, p in enumerate(points3):
        if p is not None:
            transforms[t] = smoothed_matrix(p, smoother)
            crops[t] = align_frame(frames[t], transforms[t], size)
    return Alignment(crops, transforms, has_face)


MAX_GAP = 60  # detection gaps shorter than this reuse the nearest face (the official "last good face")


class FaceNotFoundError(InputError):
    """No usable face anywhere in a clip."""


def fill_gaps(points: list[np.ndarray | None], max_gap: int = MAX_GAP) -> list[np.ndarray | None]:
    """Runs of missing faces shorter than ``max_gap`` reuse the last face before them (a leading run
    uses the first face after it); longer runs stay empty so those frames pass through unchanged."""
    out = list(points)
    t, n = 0, len(out)
    while t < n:
        if out[t] is not None:
            t += 1
            continue
        end = t
        while end < n and out[end] is None:
            end += 1
        source = out[t - 1] if t > 0 else (out[end] if end < n else None)
        if end - t < max_gap and source is not None:
            out[t:end] = [source] * (end - t)
        t = end
    return out


class FaceAligner:
    """Detect, pick and align one face per frame: ``crops, transforms, has_face = aligner.align(frames)``.

    ``detector``: any object with ``detect(frame) -> list[Face]`` sorted largest first (default: the
    offline MediaPipe backend). ``face_index`` picks the n-th largest face when several are present.
    Temporal smoothing is the official EMA of the nose offset (``BiasSmoother``); averaging the
    points themselves over frames was measured and did not reduce frame-to-frame jitter."""

    def __init__(self, detector=None, *, face_index: int = 0, max_gap: int = MAX_GAP,
                 size: int = RESOLUTION) -> None:
        if detector is None:
            from .detect import MediaPipeDetector
            detector = MediaPipeDetector()
        self.detector, self.face_index = detector, face_index
        self.max_gap, self.size = max_gap, size

    def points(self, frames) -> list[np.ndarray | None]:
        """Raw three points per frame (None where the chosen face is missing)."""
        out = []
        for frame in frames:
            faces = self.detector.detect(frame)
            out.append(faces[self.face_index].points3 if len(faces) > self.face_index else None)
        return out

    def align(self, frames: np.ndarray, name: str = "clip") -> Alignment:
        points = self.points(frames)
        if all(p is None for p in points):
            raise no_face_error(name, len(points), self.face_index)
        points = fill_gaps(points, self.max_gap)
        return align_points(frames, points, self.size)


class FaceTracker:
    """Causal per-frame alignment for streaming: ``crop, m16 = tracker(frame)``, ``m16`` None without a face.

    The smoothing is :func:`align_points`' EMA over the frames with a face, in order. A frame without
    the face is not pasted into (``m16`` None) but still gives the model an input: the last aligned
    face, or before the first one, ``first_crop`` (the face found by :func:`first_face`)."""

    def __init__(self, detector, *, face_index: int = 0, size: int = RESOLUTION,
                 first_crop: np.ndarray | None = None) -> None:
        self.detector, self.face_index, self.size = detector, face_index, size
        self.smoother, self.last_crop = BiasSmoother(), first_crop

    def points(self, frame: np.ndarray) -> np.ndarray | None:
        faces = self.detector.detect(frame)
        return faces[self.face_index].points3 if len(faces) > self.face_index else None

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        points = self.points(frame)
        if points is None:
            return self.last_crop, None
        m16 = smoothed_matrix(points, self.smoother)
        self.last_crop = align_frame(frame, m16, self.size)
        return self.last_crop, m16


def first_face(tracker: FaceTracker, frames, name: str = "clip") -> tuple[int, np.ndarray]:
    """``(index, aligned crop)`` of the first frame of ``frames`` (an iterable) showing the tracker's face;
    reads no further than that frame. :class:`FaceNotFoundError` (one line) if no frame does."""
    count = 0
    for count, frame in enumerate(frames, 1):
        points = tracker.points(frame)
        if points is not None:
            return count - 1, align_frame(frame, smoothed_matrix(points, BiasSmoother()), tracker.size)
    raise no_face_error(name, count, tracker.face_index)


def no_face_error(name: str, frames: int, face_index: int) -> FaceNotFoundError:
    which = f"face #{face_index} (0 = largest)" if face_index else "a face"
    return FaceNotFoundError(f"{name}: no frame of {frames} contains {which}; the clip needs a visible, roughly "
                             "frontal face")
