"""Paste generated aligned faces back into the original frames (the official soft-edged blend).

Per frame, in float32 (docs/design.md §6, step 9):

1. mouth-only composite in aligned space ``F = gen*(1-M) + orig*M`` (``M`` = mouth mask, 1 = keep);
2. antialiased bicubic resize 512 -> 560x420, then to [-1, 1];
3. inverse bilinear warp into the frame with the inverse of the same float16 matrix used to align;
4. soft alpha: the warped all-ones crop ``m``, a 2x2 erosion ``e``, ``w_edge = floor(sqrt(sum e))//20``,
   erosion by a ``2*w_edge`` square, then a Gaussian blur (k = 2*w_edge+1, sigma = 0.3*((k-1)/2-1)+0.8);
5. ``out = alpha*(e*face) + (1-alpha)*frame`` truncated to uint8.

Pixels where alpha is 0 keep their input value bit for bit; frames without a face pass through.
The work is done on the face's bounding box plus a margin, which gives the same result as the
full frame because every term is exactly zero outside it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .align import CROP_H, CROP_W, FILL, invert_affine, sample_affine


def blend_mouth(generated: torch.Tensor, source: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The one mouth composite: ``source + (generated - source) * (1 - keep)`` in float32 on pixel
    values (``keep`` 1 = source, 0 = generated mouth, broadcast against the pixels).

    It does not round; its callers state their rounding: the aligned-space composite truncates the
    blend of the uint8-rounded generated face to uint8 (``pipeline.composite_mouth``), the paste-back
    keeps it in float and rounds once, in the full frame (:func:`paste_face_into`).
    """
    source = source.float()
    return source + (generated.float() - source) * (1 - keep.float())


def mouth_composite(generated: np.ndarray, original: np.ndarray, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [512,512,3] faces -> float32 CHW in [0,1]: generated mouth, original elsewhere (not rounded)."""
    g = torch.from_numpy(np.ascontiguousarray(generated)).permute(2, 0, 1)
    a = torch.from_numpy(np.ascontiguousarray(original)).permute(2, 0, 1)
    return blend_mouth(g, a, torch.as_tensor(mask, dtype=torch.float32)) / 255.0


def _crop_bbox(frame_of_crop: np.ndarray, hw: tuple[int, int], margin: int) -> tuple[int, int, int, int]:
    """[y0, y1, x0, x1) of the crop rectangle mapped into the frame, grown by ``margin`` and clipped."""
    corners = np.array([[0, 0, 1], [CROP_W - 1, 0, 1], [0, CROP_H - 1, 1], [CROP_W - 1, CROP_H - 1, 1]], np.float64)
    xy = corners @ np.asarray(frame_of_crop, np.float64).T
    x0, y0 = np.floor(xy.min(0)).astype(int) - margin
    x1, y1 = np.ceil(xy.max(0)).astype(int) + margin + 1
    h, w = hw
    return max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)


def soft_alpha(coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Warped ones-mask ``m`` [h,w] float32 -> (alpha, 2x2-eroded e, w_edge)."""
    e = cv2.erode(coverage, np.ones((2, 2), np.uint8))
    w_edge = int(math.sqrt(float(e.sum(dtype=np.float32)))) // 20
    center = cv2.erode(e, np.ones((2 * w_edge, 2 * w_edge), np.uint8)) if w_edge > 0 else e
    k = 2 * w_edge + 1
    sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8
    alpha = cv2.GaussianBlur(center, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101) if w_edge > 0 else center
    return alpha, e, w_edge


def paste_face(frame: np.ndarray, face: torch.Tensor, m16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend one float32 CHW face in [0,1] (512x512) back into ``frame`` with the float16 frame->crop
    matrix ``m16``. Returns (result uint8 [H,W,3], alpha float32 [H,W])."""
    result = frame.copy()
    (y0, y1, x0, x1), alpha = paste_face_into(result, face, m16)
    full_alpha = np.zeros(frame.shape[:2], np.float32)
    full_alpha[y0:y1, x0:x1] = alpha
    return result, full_alpha


def paste_face_into(frame: np.ndarray, face: torch.Tensor, m16: np.ndarray, mouth: torch.Tensor | None = None
                    ) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """:func:`paste_face` in place, on the face's region of interest only: returns that region
    ``(y0, y1, x0, x1)`` and its alpha. ``mouth`` ([H,W] float in [0,1] on the aligned face, 1 =
    mouth) limits the blend to the mouth: every pixel outside it keeps its value bit for bit (for
    models whose faces are too small to replace a whole face, such as the 64x64 demo model)."""
    h, w = frame.shape[:2]
    face = face * 2 - 1
    if mouth is not None:
        face = torch.cat([face, mouth.to(face)[None]])
    face = F.interpolate(face[None], size=(CROP_H, CROP_W), mode="bicubic", antialias=True, align_corners=False)[0]
    m_inv = invert_affine(m16).astype(np.float32)  # crop -> frame, as stored for the paste-back
    # one pass over the crop's box grown by the widest erosion + blur reach its area allows
    y0, y1, x0, x1 = _crop_bbox(m_inv, (h, w), 2 * _edge_bound(m_inv) + 4)
    samples, share = sample_affine(face.permute(1, 2, 0).numpy(), _shifted(invert_affine(m_inv), x0, y0),
                                   (y1 - y0, x1 - x0))
    v = samples[..., :3] + FILL * (1 - share[..., None])
    inv_face = np.clip(v / 2 + 0.5, 0, 1) * np.float32(255)
    alpha, e, _ = soft_alpha(share)
    if mouth is not None:
        alpha = alpha * np.clip(samples[..., 3], 0, 1)
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    a = alpha[..., None]
    frame[y0:y1, x0:x1] = (a * (e[..., None] * inv_face) + (1 - a) * roi).astype(np.uint8)  # truncation, as official
    return (y0, y1, x0, x1), alpha


def _edge_bound(crop_to_frame: np.ndarray) -> int:
    """An upper bound of :func:`soft_alpha`'s ``w_edge`` for a crop mapped by ``crop_to_frame``: the
    eroded coverage sums to at most the crop's area in the frame (plus a one-pixel rim)."""
    scale = abs(float(np.linalg.det(np.asarray(crop_to_frame, np.float64)[:, :2])))
    area = (CROP_W + 2) * (CROP_H + 2) * scale
    return int(math.sqrt(area)) // 20 + 1


def _shifted(src_of_dst: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Compose a dst->src affine with a dst translation so that dst pixel (0,0) is frame (x0, y0)."""
    a = np.asarray(src_of_dst, np.float64).copy()
    a[:, 2] += a[:, 0] * x0 + a[:, 1] * y0
    return a


def paste_back(frames: np.ndarray, generated: np.ndarray, transforms: np.ndarray, mask: np.ndarray | None,
               original_crops: np.ndarray | None = None, has_face: np.ndarray | None = None,
               mouth_only: bool = False) -> np.ndarray:
    """Paste generated aligned faces [T,512,512,3] uint8 into ``frames`` [T,H,W,3] uint8.

    ``mask`` ([512,512], 1 = keep) selects mouth-only compositing against ``original_crops`` (the
    aligned input faces); ``mask=None`` pastes the full generated face. ``mouth_only`` also limits
    the blend in the frame to the mask's mouth (see :func:`paste_face_into`). Frames with
    ``has_face`` False (or a NaN transform) are returned unchanged."""
    if mask is not None and original_crops is None:
        raise ValueError("paste_back: mouth-only compositing (mask given) needs original_crops, the aligned input faces")
    if mouth_only and mask is None:
        raise ValueError("paste_back: mouth_only needs the mouth mask")
    if has_face is None:
        has_face = ~np.isnan(np.asarray(transforms, np.float32)).any(axis=(1, 2))
    out = np.array(frames, copy=True)
    mouth = torch.from_numpy(1 - np.asarray(mask, np.float32)) if mouth_only else None
    for t in np.flatnonzero(has_face):
        paste_face_into(out[t], face_tensor(generated[t], mask, None if mask is None else original_crops[t]),
                        transforms[t], mouth)
    return out


def face_tensor(generated: np.ndarray, mask: np.ndarray | torch.Tensor | None, original: np.ndarray | None
                ) -> torch.Tensor:
    """The face to paste as float32 CHW in [0,1]: the generated face, or with ``mask`` its mouth on ``original``."""
    if mask is None:
        return torch.from_numpy(np.ascontiguousarray(generated)).permute(2, 0, 1).float() / 255.0
    return mouth_composite(generated, original, mask)
