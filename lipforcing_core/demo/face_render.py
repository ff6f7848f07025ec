"""Vectorised cartoon talking-face renderer for the demo domain.

A face is a stack of soft-edged shapes (ellipses, bands, boxes) described by signed distances in
*face coordinates*: the unit square of an aligned face crop, x to the right, y down. The framing
follows the LatentSync 512² aligned crop (eyebrows at y≈0.2, eyes ≈0.3, nose tip ≈0.45 inside
the mask's notch, mouth ≈0.67, chin ≈0.88), so the LatentSync mouth mask covers the mouth and jaw.
Every shape is rasterised for all frames at once over a ``[T,H,W]`` grid with anti-aliased edges
(coverage = clamp(½ − distance/pixel, 0, 1)).

Only the mouth and the jaw line below y = 0.6 (face coordinates) depend on the mouth parameters;
eyes, blinks, hair, background and head motion depend on the identity and the motion seed. Any
identity can therefore speak any utterance, and two renderings with the same identity and motion
differ only in the mouth region — the exact ground truth for dubbing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import FPS
from .constants import DEMO_SIZE

RGB = tuple[float, float, float]

_SKIN_ANCHORS = np.array([(0.97, 0.82, 0.71), (0.85, 0.64, 0.49), (0.62, 0.42, 0.29), (0.36, 0.23, 0.16)])
_HAIR = np.array([(0.07, 0.05, 0.05), (0.28, 0.17, 0.09), (0.52, 0.35, 0.18), (0.86, 0.72, 0.42),
                  (0.62, 0.26, 0.10), (0.72, 0.72, 0.72)])
_IRIS = np.array([(0.25, 0.45, 0.75), (0.35, 0.2, 0.1), (0.3, 0.55, 0.3), (0.45, 0.5, 0.55)])
_CAVITY: RGB = (0.16, 0.03, 0.05)
_TEETH: RGB = (0.95, 0.93, 0.86)
_PIVOT = (0.5, 0.55)  # head rotation/scale centre in face coordinates
_FACE_CY = 0.5  # the face ellipse's centre
_JAW_TOP = 0.6  # the face outline moves with the mouth below this line only
_PIXELS_PER_CHUNK = 1 << 17
# image-space windows (rows, cols) that hold a feature under any head pose HeadMotion makes; features
# are rasterised only there
_WINDOWS = {
    "shirt": ((0.84, 1.0), (0.0, 1.0)),
    "ears": ((0.22, 0.54), (0.0, 1.0)),
    "eyes": ((0.10, 0.42), (0.0, 1.0)),
    "nose": ((0.36, 0.52), (0.38, 0.62)),
    "mouth": ((0.48, 0.88), (0.24, 0.76)),
}


@dataclass(frozen=True)
class Identity:
    """Appearance of one cartoon person (all lengths in face coordinates, colours RGB 0..1)."""

    skin: RGB
    hair: RGB
    iris: RGB
    lips: RGB
    background: tuple[RGB, RGB]
    shirt: RGB
    face_width: float  # half-width of the face ellipse
    jaw_length: float  # half-height of the lower face (centre to chin)
    chin_taper: float  # how much the jaw narrows towards the chin
    hairline: float  # y of the hairline at the centre
    hair_length: float  # how far the hair falls behind the head
    eye_dx: float  # eye centre offset from the midline
    eye_size: float
    brow_tilt: float
    mouth_y: float
    mouth_width: float  # half-width of the neutral mouth
    lip_thickness: float
    stripes: tuple[float, float, float]  # background pattern: frequency, angle, contrast
    seed: int

    @classmethod
    def sample(cls, seed: int) -> Identity:
        """A random identity; the same seed always gives the same person."""
        rng = np.random.default_rng([seed, 1])
        skin = _lerp_palette(_SKIN_ANCHORS, rng.uniform()) + rng.normal(0, 0.02, 3)
        hair = _HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 0.04, 3)
        if rng.random() < 0.1:  # the occasional dyed hair
            hair = rng.uniform(0.1, 0.9, 3)
        lips = 0.35 * skin + 0.65 * np.array([0.75, 0.25, 0.30]) + rng.normal(0, 0.03, 3)
        bg_a, bg_b = rng.uniform(0.15, 0.9, 3), rng.uniform(0.15, 0.9, 3)
        return cls(
            skin=_rgb(skin), hair=_rgb(hair), iris=_rgb(_IRIS[rng.integers(len(_IRIS))] + rng.normal(0, 0.04, 3)),
            lips=_rgb(lips), background=(_rgb(bg_a), _rgb(bg_b)), shirt=_rgb(rng.uniform(0.05, 0.95, 3)),
            face_width=rng.uniform(0.40, 0.45), jaw_length=rng.uniform(0.32, 0.36), chin_taper=rng.uniform(0.1, 0.45),
            hairline=rng.uniform(0.04, 0.13), hair_length=rng.uniform(0.0, 1.0), eye_dx=rng.uniform(0.175, 0.205),
            eye_size=rng.uniform(0.85, 1.15), brow_tilt=rng.uniform(-0.02, 0.02), mouth_y=rng.uniform(0.655, 0.685),
            mouth_width=rng.uniform(0.11, 0.14), lip_thickness=rng.uniform(0.012, 0.02),
            stripes=(rng.uniform(2, 9), rng.uniform(0, np.pi), rng.uniform(0.0, 0.08)), seed=seed,
        )


def _lerp_palette(anchors: np.ndarray, u: float) -> np.ndarray:
    x = u * (len(anchors) - 1)
    i = min(int(x), len(anchors) - 2)
    return anchors[i] + (x - i) * (anchors[i + 1] - anchors[i])


def _rgb(c: np.ndarray) -> RGB:
    return tuple(float(v) for v in np.clip(c, 0.0, 1.0))


@dataclass(frozen=True)
class HeadMotion:
    """Per-frame head pose ``[T,4]`` (dx, dy, roll in rad, scale), eyelid closure ``[T]`` and gaze ``[T,2]``."""

    pose: Tensor
    blink: Tensor
    gaze: Tensor

    @classmethod
    def sample(cls, seed: int, num_frames: int, fps: float = FPS) -> HeadMotion:
        """Smooth small head sway, blinks every 1.5–5 s and a drifting gaze, independent of speech."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        rng = np.random.default_rng([seed, 2])
        t = (np.arange(num_frames) + 0.5) / fps
        amps = np.array([0.012, 0.010, 0.035, 0.012])  # dx, dy, roll, scale

        def sway(amp: float) -> np.ndarray:
            f, ph, w = rng.uniform(0.1, 0.7, 2), rng.uniform(0, 2 * np.pi, 2), rng.dirichlet([1, 1])
            return amp * sum(w[k] * np.sin(2 * np.pi * f[k] * t + ph[k]) for k in range(2))

        pose = np.stack([sway(a) for a in amps], -1)
        pose[:, 3] += 1.0
        blink = np.zeros(num_frames)
        start = rng.uniform(0.2, 2.5)
        while start < t[-1] + 0.5:
            length = rng.uniform(0.15, 0.25)
            u = (t - start) / length
            blink = np.maximum(blink, np.where((u > 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 0.7, 0.0))
            start += rng.uniform(1.5, 5.0)
        gaze = np.stack([sway(0.012), sway(0.006)], -1)
        return cls(*(torch.from_numpy(a).to(torch.float32) for a in (pose, blink, gaze)))

    def __getitem__(self, frames: slice | list[int] | Tensor) -> HeadMotion:
        """The motion of a subset of frames."""
        return HeadMotion(self.pose[frames], self.blink[frames], self.gaze[frames])


def _ellipse(x: Tensor, y: Tensor, cx, cy, ax, ay, ay_bottom=None) -> Tensor:
    """Approximate signed distance to an ellipse (negative inside); ``ay_bottom`` gives an egg shape."""
    dx, dy = x - cx, y - cy
    if ay_bottom is not None:
        ay = torch.where(dy > 0, torch.as_tensor(ay_bottom, dtype=x.dtype), torch.as_tensor(ay, dtype=x.dtype))
    ax, ay = torch.as_tensor(ax, dtype=x.dtype).clamp_min(1e-4), torch.as_tensor(ay, dtype=x.dtype).clamp_min(1e-4)
    f = (dx / ax) ** 2 + (dy / ay) ** 2 - 1.0
    grad = 2.0 * torch.sqrt((dx / ax**2) ** 2 + (dy / ay**2) ** 2 + 1e-12)
    # f/|∇f| underestimates far from flat ellipses; the bounding box's distance is a valid lower bound
    return torch.maximum(f / grad, torch.maximum(dx.abs() - ax, dy.abs() - ay))


class _Canvas:
    """Back-to-front compositing of soft shapes onto ``[T,H,W,3]`` frames.

    ``x``/``y`` are the face coordinates of every pixel and ``pixel`` the pixel size in face units.
    :meth:`crop` gives a canvas over a window of the same frames, so small features are rasterised
    only where they can appear.
    """

    def __init__(self, img: Tensor, x: Tensor, y: Tensor, pixel: Tensor):
        self.img, self.x, self.y, self.pixel = img, x, y, pixel

    def crop(self, rows: tuple[float, float], cols: tuple[float, float] = (0.0, 1.0)) -> _Canvas:
        """A view onto the image-space window ``rows × cols`` (fractions of the frame); paints land in ``self``."""
        h, w = self.img.shape[1:3]
        r = slice(int(rows[0] * h), math.ceil(rows[1] * h))
        c = slice(int(cols[0] * w), math.ceil(cols[1] * w))
        return _Canvas(self.img[:, r, c], self.x[:, r, c], self.y[:, r, c], self.pixel)

    def paint(self, sd: Tensor, colour, opacity: float = 1.0) -> None:
        alpha = ((0.5 - sd / self.pixel).clamp(0.0, 1.0) * opacity)[..., None]
        colour = torch.as_tensor(colour, dtype=self.img.dtype)
        self.img.add_(alpha * (colour - self.img))


def render_frames(identity: Identity, mouth: Tensor, motion: HeadMotion, size: int = DEMO_SIZE) -> Tensor:
    """Frames ``[T,size,size,3]`` float32 in [0,1] for mouth parameters ``[T,4]`` and head motion.

    ``mouth`` columns are :data:`~.phonemes.MOUTH_PARAMS` (open, width, round, teeth).
    """
    if mouth.ndim != 2 or mouth.shape[1] != 4:
        raise ValueError(f"mouth must be [T,4] (open, width, round, teeth), got {tuple(mouth.shape)}")
    if motion.pose.shape[0] != mouth.shape[0]:
        raise ValueError(f"motion has {motion.pose.shape[0]} frames but mouth has {mouth.shape[0]}")
    step = max(1, _PIXELS_PER_CHUNK // (size * size))  # chunks of frames keep the working set in cache
    return torch.cat([
        _render_chunk(identity, mouth[i:i + step], motion[i:i + step], size)
        for i in range(0, mouth.shape[0], step)
    ])


def _render_chunk(idn: Identity, mouth: Tensor, motion: HeadMotion, size: int) -> Tensor:
    T = mouth.shape[0]
    v = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    iy, ix = v.view(1, size, 1), v.view(1, 1, size)
    dx, dy, roll, scale = (motion.pose[:, k].view(T, 1, 1) for k in range(4))
    cos, sin = torch.cos(roll), torch.sin(roll)
    px, py = ix - _PIVOT[0] - dx, iy - _PIVOT[1] - dy
    x = (cos * px + sin * py) / scale + _PIVOT[0]
    y = (-sin * px + cos * py) / scale + _PIVOT[1]
    img = _background(idn, iy, ix).expand(T, size, size, 3).contiguous()
    canvas = _Canvas(img, x, y, 1.0 / (size * scale))

    m = mouth.view(T, 4, 1, 1)
    m_open, m_width, m_round, m_teeth = m[:, 0], m[:, 1], m[:, 2], m[:, 3]
    hair, skin = idn.hair, torch.tensor(idn.skin)
    # hair behind the head, shoulders, neck, ears
    canvas.paint(_ellipse(x, y, 0.5, 0.32, idn.face_width + 0.07, 0.42, 0.42 + 0.4 * idn.hair_length), hair)
    shirt = canvas.crop(*_WINDOWS["shirt"])
    shirt.paint(_ellipse(shirt.x, shirt.y, 0.5, 1.2, 0.62, 0.3), idn.shirt)
    canvas.paint(torch.maximum((x - 0.5).abs() - 0.16, 0.62 - y), skin * 0.72)
    ears = canvas.crop(*_WINDOWS["ears"])
    for side in (-1, 1):
        ears.paint(_ellipse(ears.x, ears.y, 0.5 + side * (idn.face_width - 0.01), 0.38, 0.045, 0.07), skin * 0.85)
    # face: an egg narrowing towards the chin; below y = 0.6 the jaw drops as the mouth opens
    yf = y - 0.03 * m_open * ((y - _JAW_TOP) / 0.25).clamp(0.0, 1.0)
    below = ((yf - _FACE_CY) / idn.jaw_length).clamp(0.0, 1.0)
    xf = 0.5 + (x - 0.5) / (1.0 - idn.chin_taper * below**2)
    face = _ellipse(xf, yf, 0.5, _FACE_CY, idn.face_width, 0.62, idn.jaw_length)
    shade = 0.84 + 0.16 * (-face / 0.06).clamp(0.0, 1.0)
    canvas.paint(face, skin * shade[..., None])
    # hair on the forehead: inside the hair mass and above a curved hairline
    line = idn.hairline + 0.5 * (x - 0.5) ** 2 + 0.03 * torch.sin(9 * x + idn.seed)
    canvas.paint(torch.maximum(_ellipse(x, y, 0.5, 0.32, idn.face_width + 0.07, 0.42), y - line), hair)
    _paint_eyes(canvas.crop(*_WINDOWS["eyes"]), idn, motion)
    # nose: soft tip shading and nostrils (inside the LatentSync mask's notch, never animated)
    nose = canvas.crop(*_WINDOWS["nose"])
    nose.paint(_ellipse(nose.x, nose.y, 0.5, 0.43, 0.045, 0.035), skin * 0.8, opacity=0.4)
    for side in (-1, 1):
        nose.paint(_ellipse(nose.x, nose.y, 0.5 + side * 0.027, 0.458, 0.013, 0.007), skin * 0.35)
    _paint_mouth(canvas.crop(*_WINDOWS["mouth"]), idn, m_open, m_width, m_round, m_teeth)
    return img.clamp_(0.0, 1.0)


def _background(idn: Identity, iy: Tensor, ix: Tensor) -> Tensor:
    """Static backdrop in image coordinates: a vertical gradient with faint stripes."""
    a, b = torch.tensor(idn.background[0]), torch.tensor(idn.background[1])
    freq, angle, contrast = idn.stripes
    stripes = contrast * torch.sin(2 * math.pi * freq * (ix * math.cos(angle) + iy * math.sin(angle)))
    return (a + iy[..., None] * (b - a)) * (1.0 + stripes[..., None])


def _paint_eyes(canvas: _Canvas, idn: Identity, motion: HeadMotion) -> None:
    x, y = canvas.x, canvas.y
    T = x.shape[0]
    blink = motion.blink.view(T, 1, 1)
    gx, gy = motion.gaze[:, 0].view(T, 1, 1), motion.gaze[:, 1].view(T, 1, 1)
    brow = tuple(0.15 * c for c in idn.hair) if sum(idn.hair) > 1.2 else idn.hair
    ax, ay = 0.062 * idn.eye_size, 0.03 * idn.eye_size
    for side in (-1, 1):
        cx, cy = 0.5 + side * idn.eye_dx, 0.3
        # eyebrow: the upper half of an elliptic ring
        ring = _ellipse(x, y, cx, 0.215 + side * idn.brow_tilt * (x - cx) / 0.08, 0.085, 0.028).abs() - 0.011
        canvas.paint(torch.maximum(ring, y - 0.215), brow)
        eye = _ellipse(x, y, cx, cy, ax, ay)
        canvas.paint(eye, (0.96, 0.96, 0.94))
        canvas.paint(torch.maximum(eye, _ellipse(x, y, cx + gx, cy + gy, 0.025, 0.025)), idn.iris)
        canvas.paint(torch.maximum(eye, _ellipse(x, y, cx + gx, cy + gy, 0.011, 0.011)), (0.02, 0.02, 0.03))
        lid = cy - ay + 2.0 * ay * blink  # the upper lid's edge slides down while blinking
        canvas.paint(torch.maximum(eye - 0.004, y - lid), torch.tensor(idn.skin) * 0.9)
        canvas.paint(torch.maximum(eye.abs() - 0.0035, y - torch.maximum(lid, torch.full_like(lid, cy))),
                     (0.1, 0.06, 0.05))  # lash line along the upper lid


def _paint_mouth(canvas: _Canvas, idn: Identity, m_open, m_width, m_round, m_teeth) -> None:
    """Lips, the dark mouth opening and the teeth, all driven by the per-frame mouth parameters."""
    x, y = canvas.x, canvas.y
    cx, cy = 0.5, idn.mouth_y + 0.012 * m_open  # the lower lip follows the jaw a little
    half_w = idn.mouth_width * (0.82 + 0.35 * m_width - 0.3 * m_round)
    half_h = 0.07 * m_open  # half-height of the opening
    lip = idn.lip_thickness * (1.0 + 0.6 * m_round)  # rounded lips protrude and look fuller
    lips = torch.tensor(idn.lips)
    canvas.paint(_ellipse(x, y, cx, cy, half_w + 0.25 * lip, half_h + 0.9 * lip, half_h + 1.2 * lip), lips)
    canvas.paint(torch.maximum((y - cy).abs() - 0.0035, (x - cx).abs() - 0.92 * half_w), lips * 0.45)
    cavity = _ellipse(x, y, cx, cy, 0.93 * half_w, half_h)
    canvas.paint(cavity, _CAVITY)
    upper = cy - half_h + 0.028 * m_teeth
    lower = cy + half_h - 0.014 * m_teeth
    canvas.paint(torch.maximum(cavity, y - upper), _TEETH)
    canvas.paint(torch.maximum(cavity, lower - y), tuple(0.9 * c for c in _TEETH))
