"""``bench --e2e``: a whole sync run on a real clip, timed by stage (the memory probe: test_tools_memory.py)."""

from __future__ import annotations

import json

import pytest

from lipforcing_core.cli import main
from lipforcing_core.stream_job import STAGES
from lipforcing_core.video import read_video, write_video

pytestmark = pytest.mark.usefixtures("single_thread")


def test_e2e_demo_run_reports_every_stage(media_root, tmp_path, capsys):
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
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        main(["bench", "--e2e", "--demo", "--out", str(out)])
    assert err.value.code == 2 and "--video" in capsys.readouterr().err
