"""The procedural talking-face domain: determinism, variety, phoneme-driven mouth, dubbing ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipforcing_core.demo import (
    MOUTH_PARAMS,
    HeadMotion,
    Identity,
    Utterance,
    face_render,
    make_clip,
    mouth_trace,
    render_face,
    render_frames,
)
from lipforcing_core.demo.face_render import _CAVITY
from lipforcing_core.demo.phonemes import BILABIALS


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def clip():
    return make_clip(identity_seed=3, utterance_seed=11, duration_s=2.0, size=48)


def test_clip_shapes_dtypes_and_ranges(clip):
    t = 50
    assert clip.frames.shape == (t, 48, 48, 3) and clip.frames.dtype == torch.float32
    assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0
    assert clip.audio.shape == (t * 640,) and clip.audio.dtype == torch.float32
    assert clip.audio.abs().max() <= 0.5 + 1e-6 and clip.audio.abs().max() > 0.1
    assert clip.mouth_params.shape == (t, len(MOUTH_PARAMS))
    assert 0.0 <= clip.mouth_params.min() and clip.mouth_params.max() <= 1.0
    assert (clip.sample_rate, clip.fps) == (16000, 25.0)


@pytest.mark.parametrize("duration", [1.0, 1.37, 2.03])
def test_audio_duration_matches_frames(duration):
    c = make_clip(0, 1, duration_s=duration, size=16)
    assert c.frames.shape[0] == int(np.floor(duration * 25))
    assert abs(c.audio.shape[0] / c.sample_rate - c.frames.shape[0] / c.fps) < 1 / c.sample_rate


def test_deterministic_in_seeds(clip):
    again = make_clip(identity_seed=3, utterance_seed=11, duration_s=2.0, size=48)
    assert torch.equal(again.frames, clip.frames)
    assert torch.equal(again.audio, clip.audio)
    assert Identity.sample(5) == Identity.sample(5)
    assert Utterance.sample(5, 2.0) == Utterance.sample(5, 2.0)
    other = make_clip(identity_seed=4, utterance_seed=12, duration_s=2.0, size=48)
    assert not torch.equal(other.frames, clip.frames) and not torch.equal(other.audio, clip.audio)


def test_identities_vary():
    ids = [Identity.sample(s) for s in range(12)]
    for field in ("skin", "hair", "background", "shirt", "face_width", "jaw_length", "eye_dx", "mouth_width"):
        assert len({getattr(i, field) for i in ids}) == len(ids), field
    skins = np.array([i.skin for i in ids])
    assert np.ptp(skins.mean(1)) > 0.25  # light and dark skin both occur
    utt = Utterance.sample(0, 1.0)
    first = [render_face(i, utt, size=32)[0] for i in ids[:4]]
    for a in range(4):
        for b in range(a):
            assert (first[a] - first[b]).abs().mean() > 0.05


def test_utterances_vary_in_phonemes_speed_and_pitch():
    utts = [Utterance.sample(s, 3.0) for s in range(8)]
    assert len({tuple(s.symbol for s in u.segments) for u in utts}) == 8
    assert np.ptp([u.f0_hz for u in utts]) > 40
    rates = [np.mean([s.end - s.start for s in u.segments if s.symbol != "_"]) for u in utts]
    assert max(rates) / min(rates) > 1.15
    for u in utts:  # the timeline tiles [0, duration) without gaps
        assert u.segments[0].start == 0.0 and u.segments[-1].end == pytest.approx(u.duration_s)
        assert all(abs(a.end - b.start) < 1e-12 for a, b in zip(u.segments, u.segments[1:]))


def _at_centres(utt: Utterance, symbols) -> torch.Tensor:
    centres = torch.tensor([(s.start + s.end) / 2 for s in utt.segments if s.symbol in symbols])
    return mouth_trace(utt, centres)


def test_mouth_trace_follows_phonemes():
    utts = [Utterance.sample(s, 4.0) for s in range(10)]
    col = {name: k for k, name in enumerate(MOUTH_PARAMS)}
    vowels = torch.cat([_at_centres(u, "ae") for u in utts])
    bilabial = torch.cat([_at_centres(u, BILABIALS) for u in utts])
    rounded = torch.cat([_at_centres(u, "uo") for u in utts])
    spread = torch.cat([_at_centres(u, "i") for u in utts])
    assert len(bilabial) >= 5 and len(rounded) >= 5 and len(spread) >= 5
    assert vowels[:, col["open"]].mean() > 0.5 and bilabial[:, col["open"]].max() < 0.1
    assert rounded[:, col["round"]].mean() > 0.6 and spread[:, col["round"]].mean() < 0.2
    assert spread[:, col["width"]].mean() > rounded[:, col["width"]].mean() + 0.5


def test_lips_close_for_bilabials_between_loud_vowels():
    utt = Utterance.from_phonemes("ama", [0.15, 0.08, 0.15])
    a1, m, a2 = _at_centres(utt, "am")[:, 0]
    assert m < 0.08 and a1 > 0.8 and a2 > 0.8
    # co-articulation: the rounding of /u/ carries through /m/, the spreading of /i/ too
    m_in_umu = _at_centres(Utterance.from_phonemes("umu", 0.1), "m")[0]
    m_in_imi = _at_centres(Utterance.from_phonemes("imi", 0.1), "m")[0]
    assert m_in_umu[2] > m_in_imi[2] + 0.3 and m_in_imi[1] > m_in_umu[1] + 0.3


@pytest.mark.parametrize("identity_seed,utterance_seed", [(0, 50), (1, 51), (2, 52)])
def test_dark_mouth_pixels_track_opening(identity_seed, utterance_seed):
    c = make_clip(identity_seed, utterance_seed, duration_s=3.0, size=64)
    box = c.frames[:, 35:54, 19:45]  # y 0.55..0.85, x 0.3..0.7 of the aligned crop
    dark = ((box - torch.tensor(_CAVITY)).norm(dim=-1) < 0.12).sum((1, 2)).float()
    assert np.corrcoef(dark.numpy(), c.mouth_params[:, 0].numpy())[0, 1] > 0.8


def test_rendered_mouth_width_follows_spreading_and_rounding():
    idn = Identity.sample(7)
    mouths = torch.tensor([[0.3, 1.0, 0.0, 0.0], [0.3, 0.5, 0.2, 0.0], [0.3, 0.0, 1.0, 0.0]])
    still = HeadMotion(torch.tensor([[0.0, 0.0, 0.0, 1.0]]).repeat(3, 1), torch.zeros(3), torch.zeros(3, 2))
    frames = render_frames(idn, mouths, still, size=128)
    row = round(idn.mouth_y * 128 + 0.012 * 0.3 * 128)
    skin_dist = (frames[:, row, :] - torch.tensor(idn.skin)).norm(dim=-1)  # [3, W]
    widths = (skin_dist > 0.15)[:, 20:108].sum(1)
    assert widths[0] > widths[1] > widths[2]


def test_dubbing_changes_only_the_mouth_region():
    idn = Identity.sample(9)
    a = render_face(idn, Utterance.sample(1, 2.0), size=64)
    b = render_face(idn, Utterance.sample(2, 2.0), size=64)
    changed = (a - b).abs().amax(dim=(0, 3)) > 0
    assert changed.any()
    assert not changed[: int(0.5 * 64)].any()  # eyes, nose, hair, forehead, cheeks are the same pixels
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert rows.max() < 0.95 * 64 and cols.min() > 0.03 * 64 and cols.max() < 0.97 * 64
    # a different motion seed moves the whole head, so it is not a valid dubbing pair
    c = render_face(idn, Utterance.sample(1, 2.0), size=64, motion_seed=123)
    assert ((a - c).abs().amax(dim=(0, 3)) > 0)[: int(0.45 * 64)].any()


def test_mouth_changes_stay_inside_latentsync_mask(media_root):
    from PIL import Image

    size = 96
    mask = Image.open(media_root / "latentsync_mask.png").convert("L").resize((size, size), Image.BILINEAR)
    generate = torch.from_numpy(np.array(mask) < 128)
    for seed in range(3):
        idn = Identity.sample(seed)
        a = render_face(idn, Utterance.sample(10 + seed, 1.6), size=size)
        b = render_face(idn, Utterance.sample(20 + seed, 1.6), size=size)
        changed = (a - b).abs().amax(dim=(0, 3)) > 1e-6
        assert changed.sum() > 50 and not (changed & ~generate).any()


def test_blinks_close_the_eyes():
    motion = HeadMotion.sample(4, num_frames=250)
    assert motion.blink.max() > 0.9 and (motion.blink > 0.5).float().mean() < 0.2
    idn = Identity.sample(4)
    open_k, shut_k = int(motion.blink.argmin()), int(motion.blink.argmax())
    mouth = torch.zeros(2, 4)
    frames = render_frames(idn, mouth, motion[[open_k, shut_k]], size=96)
    eye_whites = ((frames[:, 22:36, 10:86] - 0.95).abs().amax(-1) < 0.04).sum((1, 2))
    assert eye_whites[0] > 30 and eye_whites[1] < eye_whites[0] // 4


def test_cropped_feature_windows_lose_nothing(monkeypatch):
    """Small features are rasterised in windows; rendering them over the full frame must agree."""
    for seed in range(4):
        idn, utt = Identity.sample(seed), Utterance.sample(seed, 4.0)
        windowed = render_face(idn, utt, size=48)
        with monkeypatch.context() as patch:
            patch.setattr(face_render, "_WINDOWS", dict.fromkeys(face_render._WINDOWS, ((0.0, 1.0), (0.0, 1.0))))
            assert torch.equal(render_face(idn, utt, size=48), windowed)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="mouth must be"):
        render_frames(Identity.sample(0), torch.zeros(3, 2), HeadMotion.sample(0, 3), size=16)
    with pytest.raises(ValueError, match="unknown phonemes"):
        Utterance.from_phonemes("ax!")
    with pytest.raises(ValueError, match="duration_s"):
        Utterance.sample(0, 0.1)
