"""The audio memory benchmark writes a complete JSON report (numbers are not asserted as targets)."""

from __future__ import annotations

import json

from lipforcing_core.tools.audio_bench import bench_audio
from lipforcing_core.audio.features import CHUNK_DEVIATION


def test_bench_audio_writes_report(golden_root, tmp_path):
    audio_dir = golden_root / "audio"
    out = tmp_path / "audio_bench.json"
    report = bench_audio(
        out, audio_dir / "stereo_44100.wav", seconds=3.0, weights=str(audio_dir / "wav2vec2_tiny"), chunk=10, isolate=False
    )
    assert json.loads(out.read_text()) == report
    assert report["frames"] == 75
    assert report["max_abs_deviation_chunked_vs_one_shot"] < CHUNK_DEVIATION
    for mode in ("one_shot", "chunked"):
        assert report[mode]["peak_rss_mb"] > 0 and report[mode]["seconds"] > 0
