"""The streaming file-to-file job on real clips with the bundled demo model: exact length for 25 and
30 fps sources, faces that come and go, pixels far from the face untouched, ping-pong, errors."""

from __future__ import annotations

import wave as wavfile

import numpy as np
import pytest
import torch

from lipforcing_core.audio import load_audio
from lipforcing_core.cli import main
from lipforcing_core.face import FaceNotFoundError
from lipforcing_core.pipeline import generation_length, pingpong_indices
from lipforcing_core.stream_job import padded_length
from lipforcing_core.sync import demo_model, open_job
from lipforcing_core.video import Video, convert_fps, read_video, resample_stream, write_video

pytestmark = pytest.mark.usefixtures("single_thread")
HALF = (540, 960)  # half of the 1080x1920 media keeps the tests quick; faces stay > 100 px


def _clip(media_root, tmp_path, name, clip, seconds, blank=(), size=HALF):
    """The first ``seconds`` of a media clip (at half size unless ``size`` is None) with its audio;
    frames in ``blank`` black."""
    v = read_video(media_root / f"latentsync_demo{clip}_video.mp4", size=size, max_frames=round(seconds * 30) + 2)
    frames = v.frames[: round(seconds * v.fps)].copy()
    frames[list(blank)] = 0
    return write_video(tmp_path / name, frames, v.fps, v.audio[:, : round(seconds * v.sample_rate)], v.sample_rate)


def _wav(media_root, tmp_path, seconds):
    """The first ``seconds`` of demo1's speech as a 16-bit wav."""
    wave, rate = load_audio(media_root / "latentsync_demo1_audio.wav")
    path = tmp_path / f"speech_{seconds}.wav"
    with wavfile.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((wave[0, : round(seconds * rate)].numpy() * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def model():
    return demo_model()


def _capture():
    frames = []

    def writer(path, it, fps, audio, rate, overwrite=False):
        frames.extend(f.copy() for f in it)
        return path

    return frames, writer


def test_resample_stream_is_convert_fps():
    rng = np.random.default_rng(0)
    for times, fps in [(np.arange(47) / 30.0, 30.0), (np.cumsum(rng.uniform(0.02, 0.06, 40)), 25.0)]:
        clip = Video(np.zeros((len(times), 1, 1, 3), np.uint8), fps, None, None, times - times[0])
        expected = convert_fps(clip, 25.0)[1]
        assert list(resample_stream(zip(times, range(len(times))), 25.0, fps)) == list(expected)


def test_padded_length_is_the_fewest_whole_chunks():
    for n in range(1, 120):
        p = padded_length(n)
        assert p >= n and generation_length(p) == ((p - 1) // 4 + 1, p) and p - 12 < max(n, 9)


@pytest.mark.parametrize("clip, seconds", [(2, 1.5), (3, 1.5)])  # demo2: 25 fps, demo3: 30 fps
def test_output_covers_the_whole_audio(media_root, tmp_path, model, clip, seconds):
    video = _clip(media_root, tmp_path, "in.mp4", clip, seconds)
    audio = _wav(media_root, tmp_path, 1.3)  # 32.5 frames: not a whole number of chunks
    info = open_job(video, audio, face_size=64).run(model, tmp_path / "out.mp4")
    out = read_video(tmp_path / "out.mp4")
    assert abs(len(out.frames) - round(1.3 * 25)) <= 1 and info["frames"] == len(out.frames)
    assert out.audio.shape[1] / out.sample_rate == pytest.approx(1.3, abs=0.05)
    assert info["video_adjust"] == "cut" and info["faces_found"] == len(out.frames)


def test_blank_frames_and_far_pixels_stay_untouched(media_root, tmp_path, model):
    """On the real 1080x1920 clip: only a mouth-sized region changes, blank frames pass through."""
    blank = range(8, 12)
    video = _clip(media_root, tmp_path, "blank.mp4", 2, 1.0, blank, size=None)
    frames, writer = _capture()
    info = open_job(video, None, face_size=64).run(model, tmp_path / "o.mp4", writer=writer)
    source = read_video(video).frames
    source = source[pingpong_indices(len(source), len(frames))]  # the AAC track runs a little past the frames
    assert info["frames_without_face"] == len(blank) and info["faces_found"] == len(frames) - len(blank)
    assert info["video_adjust"] == "ping-pong extended" and len(frames) == 26
    assert all(not frames[t].any() for t in blank)  # blank frames pass through exactly
    height = source.shape[1]
    assert height == 1920
    np.testing.assert_array_equal(np.stack(frames)[:, 3 * height // 4:], source[:, 3 * height // 4:])  # exact
    changed = np.abs(np.stack(frames).astype(int) - source).max(axis=3) > 0
    ys, xs = np.nonzero(changed.any(0))
    assert changed.any() and ys.max() - ys.min() < height // 5  # only a mouth-sized region changed
    written = read_video(open_job(video, None, face_size=64).run(model, tmp_path / "o.mp4")["output"]).frames
    lower = np.abs(written[:, 3 * height // 4:].astype(int) - source[: len(written), 3 * height // 4:])
    assert lower.mean() < 2  # in the file: H.264 noise only


def test_face_appearing_mid_clip_and_ping_pong(media_root, tmp_path, model):
    video = _clip(media_root, tmp_path, "late.mp4", 2, 0.8, range(8))  # 20 frames, face from frame 8
    frames, writer = _capture()
    info = open_job(video, _wav(media_root, tmp_path, 1.4), face_size=64).run(model, tmp_path / "o.mp4",
                                                                              writer=writer)
    source = read_video(video).frames
    assert info["first_face_frame"] == 8 and info["video_adjust"] == "ping-pong extended"
    served = pingpong_indices(20, 35)  # 0..19, then 18, 17, ...
    assert len(frames) == 35 and info["frames_without_face"] == (served < 8).sum()
    assert all(np.array_equal(frames[t], source[served[t]]) for t in np.flatnonzero(served < 8))
    assert np.array_equal(frames[22][720:], source[16][720:])
    assert any(not np.array_equal(frames[t], source[t]) for t in range(8, 20))


def _cli_error(capsys, argv) -> str:
    """The one stderr line of a ``python -m lipforcing_core`` run that exits with code 2."""
    with pytest.raises(SystemExit) as err:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1
    return lines[0]


def test_no_face_is_one_line_before_any_model(media_root, tmp_path, capsys):
    video = _clip(media_root, tmp_path, "none.mp4", 2, 0.5, range(12))
    with pytest.raises(FaceNotFoundError, match="no frame of 12 contains a face") as err:
        open_job(video, None, face_size=64)
    assert "\n" not in str(err.value)
    assert "no frame of 12" in _cli_error(capsys, ["sync", "--video", str(video), "-o", str(tmp_path / "o.mp4"),
                                                   "--demo"])


def test_sync_names_the_model_files_or_demo(tmp_path, capsys):
    message = _cli_error(capsys, ["sync", "--video", "in.mp4", "-o", str(tmp_path / "o.mp4")])
    assert all(flag in message for flag in ("--dit", "--vae", "--wav2vec", "--demo", "README"))


def test_pipeline_takes_a_lazy_source_as_given(model):
    from lipforcing_core.pipeline import SourceFrames

    faces = np.zeros((9, 64, 64, 3), np.uint8)
    features = model.encoder(torch.zeros(16000))[0][:9]
    pipe = model.pipeline
    video, audio, _ = pipe.prepare(SourceFrames(faces), features, model.model_mask)
    assert len(video) == 9 and audio.shape[1] == 9
    with pytest.raises(ValueError, match="serves 5 frames but the audio gives 9"):
        pipe.prepare(SourceFrames(faces[:5]), features, model.model_mask)
