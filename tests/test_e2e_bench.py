"""``bench --e2e``: a whole sync run on a real clip, timed by stage, with a memory probe that degrades off Linux."""

from __future__ import annotations

import builtins
import json

import pytest

from lipforcing_core.cli import main
from lipforcing_core.stream_job import STAGES
from lipforcing_core.tools import e2e_bench
from lipforcing_core.video import read_video, write_video

pytestmark = pytest.mark.usefixtures("single_thread")


def test_e2e_demo_run_reports_every_stage(media_root, tmp_path):
    clip = read_video(media_root / "latentsync_demo2_video.mp4", size=(270, 480), max_frames=25)
    video = write_video(tmp_path / "in.mp4", clip.frames, clip.fps, clip.audio[:, : clip.sample_rate], clip.sample_rate)
    out = tmp_path / "e2e.json"
    assert main(["bench", "--e2e", "--demo", "--video", str(video), "--device", "cpu", "--threads", "1",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    track = read_video(video).audio.shape[1] / clip.sample_rate  # 1 s and the AAC encoder's last-frame padding
    assert result["frames"] == round(track * 25) and result["model"] == "demo" and result["face_size"] == 64
    assert set(result["ms_per_frame"]) == set(STAGES) and all(v > 0 for v in result["ms_per_frame"].values())
    assert 0 < result["ttff_s"] and result["fps"] > 0 and result["peak_rss_mb"] > 100
    assert result["summary"]["faces_found"] == result["frames"]
    with pytest.raises(SystemExit, match="--video"):
        main(["bench", "--e2e", "--demo", "--out", str(out)])


def test_memory_probe_without_proc(monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert e2e_bench._clear_peak() is False
    assert e2e_bench.peak_rss_mb(reset=True) is None  # a peak since the job started cannot be told
    assert e2e_bench.peak_rss_mb(reset=False) > 10  # the lifetime peak from getrusage
