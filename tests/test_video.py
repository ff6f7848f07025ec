"""Video I/O: fps conversion with audio kept in sync, mp4 round trips, atomic writes, bad input."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from lipforcing_core.video import (
    VideoError,
    convert_fps,
    frame_times,
    frames_at,
    nearest_indices,
    read_audio,
    read_video,
    write_video,
)


def _clip(n: int = 12, h: int = 48, w: int = 64) -> np.ndarray:
    """Smooth moving gradients: compress well, so the H.264 round trip stays close."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(xs * 3 + t * 5) % 256, (ys * 4 + t * 3) % 256, np.full_like(xs, 128)], -1)
                     for t in range(n)]).astype(np.uint8)


def _tone(seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[None], channels, 0).astype(np.float32)


def test_nearest_indices_30_to_25_and_back():
    src, dst = frame_times(30, 30.0), frame_times(25, 25.0)
    to25 = nearest_indices(src, dst)
    assert to25[:6].tolist() == [0, 1, 2, 4, 5, 6]  # 0.12 s -> frame 3.6 -> 4
    back = nearest_indices(dst, src)
    assert len(back) == 30 and back[0] == 0 and back[-1] == 24
    assert np.all(np.abs(dst[back] - src) <= 0.5 / 25 + 1e-9)
    frames25 = np.arange(25)[:, None]
    np.testing.assert_array_equal(frames_at(frames25, 25.0, src)[:, 0], back)


def test_demo3_to_25fps_keeps_audio_in_sync(media_root, tmp_path):
    video = read_video(media_root / "latentsync_demo3_video.mp4", size=(144, 256))
    assert video.fps == 30 and len(video.frames) == 600 and not video.variable_frame_rate
    clip, idx = convert_fps(video, 25)
    assert len(clip.frames) == 500 and clip.fps == 25 and idx[-1] == 599
    out = write_video(tmp_path / "demo3_25.mp4", clip.frames, clip.fps, clip.audio, clip.sample_rate)
    again = read_video(out)
    assert len(again.frames) == 500 and again.fps == 25 and again.frames.shape[1:] == (256, 144, 3)
    audio_seconds = again.audio.shape[1] / again.sample_rate
    assert abs(audio_seconds - video.audio.shape[1] / video.sample_rate) < 1 / 25
    assert abs(audio_seconds - again.duration) < 1 / 25  # both streams cover the same 20 s


def test_write_round_trip(tmp_path):
    frames, audio = _clip(), _tone(12 / 25, channels=2)
    out = write_video(tmp_path / "a.mp4", frames, 25, audio, 16000)
    video = read_video(out)
    assert video.frames.shape == frames.shape and video.fps == 25
    assert video.sample_rate == 16000 and video.audio.shape[0] == 2
    assert abs(video.audio.shape[1] - audio.shape[1]) < 16000 / 25
    mse = np.mean((video.frames.astype(float) - frames) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].format.name == "yuv420p"


def test_no_overwrite_and_atomic(tmp_path):
    out = write_video(tmp_path / "a.mp4", _clip(3), 25)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        write_video(out, _clip(5), 25)
    assert out.read_bytes() == before
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "b.mp4", [], 25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # no temp file left behind
    write_video(out, _clip(5), 25, overwrite=True)
    assert len(read_video(out).frames) == 5


def test_odd_size_is_padded(tmp_path):
    video = read_video(write_video(tmp_path / "odd.mp4", _clip(4, 47, 63), 25))
    assert video.frames.shape == (4, 48, 64, 3)


def test_silent_clip(tmp_path):
    out = write_video(tmp_path / "silent.mp4", _clip(4), 25)
    video = read_video(out)
    assert video.audio is None and video.sample_rate is None
    with pytest.raises(VideoError, match="no audio stream"):
        read_video(out, require_audio=True)


def test_audio_only_file(media_root):
    audio, rate = read_audio(media_root / "latentsync_demo1_audio.wav")
    assert rate == 16000 and audio.shape[0] == 1 and abs(audio.shape[1] / rate - 9.6) < 0.1


def test_corrupt_and_missing(tmp_path, media_root):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VideoError, match="junk.mp4"):
        read_video(junk)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((media_root / "latentsync_demo1_video.mp4").read_bytes()[:200_000])
    with pytest.raises(VideoError, match="truncated.mp4"):
        read_video(truncated)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")


def test_variable_frame_rate_is_resampled(tmp_path):
    path = tmp_path / "vfr.mp4"
    times_ms = [0, 40, 80, 200, 240, 400, 440, 480]  # gaps: frames held longer
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for k, (t, frame) in enumerate(zip(times_ms, _clip(len(times_ms)))):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    video = read_video(path)
    assert video.variable_frame_rate
    np.testing.assert_allclose(video.timestamps, np.array(times_ms) / 1000, atol=1e-3)
    clip, idx = convert_fps(video, 25)
    assert not clip.variable_frame_rate
    # 0.12 s and 0.16 s show the frame at 0.08 s (held), 0.36 s the one at 0.4 s
    assert idx[3] == 2 and idx[9] == 5
