"""SyncNet offset search on constructed embeddings, input checks, loading, report and chart."""

import json
import math

import numpy as np
import pytest
from PIL import Image
import torch
from safetensors.torch import load_file, save_file

from lipforcing_core.checkpoints import CheckpointError
from lipforcing_core.syncnet import (
    SyncNetV2,
    SyncResult,
    evaluate_sync,
    load_syncnet,
    mean_distances,
    offset_search,
    plot_offsets,
    save_report,
    sync_c_reward,
    sync_confidence,
)
from lipforcing_core.syncnet.metrics import _audio_16k
from lipforcing_core.syncnet.plot import MARK

N, D, VSHIFT = 40, 64, 15
EPS_DIST = math.sqrt(D) * 1e-6  # ‖0 + 1e-6‖ over D dims: pairwise_distance's eps at a perfect match


def shifted_streams(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embedding streams with aud[w] = lip[w + k], i.e. AV offset k."""
    base = torch.randn(N + 2 * VSHIFT, D, generator=torch.Generator().manual_seed(seed)) * 3
    return base[VSHIFT : VSHIFT + N], base[VSHIFT + k : VSHIFT + k + N]


@pytest.mark.parametrize("k", [-15, -7, -3, -1, 0, 1, 4, 9, 15])
def test_offset_search_finds_constructed_shift(k):
    lip, aud = shifted_streams(k)
    result = offset_search(lip, aud)
    assert result.offset == k
    assert result.offsets[int(result.dists.argmin())] == k
    # Zero padding: the |k| lip windows whose partner lies outside the clip are compared with zeros.
    unmatched = lip[:k] if k > 0 else lip[N + k :]
    expected = (unmatched + 1e-6).norm(dim=-1).sum() / N
    assert result.lse_d == pytest.approx(expected.item(), abs=1e-4)
    assert result.lse_c > 10
    # Without padding (the reward) the best shift is an exact match: distance 0 (up to the 1e-6 eps).
    overlap = mean_distances(lip, aud, zero_pad=False)
    assert int(overlap.argmin()) == VSHIFT - k
    assert overlap.min().item() == pytest.approx(EPS_DIST, abs=1e-5)
    assert sync_confidence(overlap).item() == pytest.approx(overlap.median().item() - EPS_DIST, abs=1e-5)


def test_offset_search_is_batched():
    streams = [shifted_streams(k, seed=k + 20) for k in (-5, 0, 6)]
    lip = torch.stack([s[0] for s in streams])
    aud = torch.stack([s[1] for s in streams])
    batched = mean_distances(lip, aud, zero_pad=False)
    assert batched.argmin(-1).tolist() == [VSHIFT + 5, VSHIFT, VSHIFT - 6]
    for i, (l, a) in enumerate(streams):
        torch.testing.assert_close(batched[i], mean_distances(l, a, zero_pad=False))
        torch.testing.assert_close(mean_distances(lip, aud)[i], offset_search(l, a).dists)


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def random_model():
    return SyncNetV2().eval().requires_grad_(False)


def speech(n: int, batch: int | None = None) -> torch.Tensor:
    shape = (n,) if batch is None else (batch, n)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 0.1


@pytest.mark.parametrize(
    "frames,audio,kwargs,error,match",
    [
        (torch.zeros(5, 64, 64, 3, dtype=torch.uint8), speech(16000), {}, ValueError, "too short"),
        (torch.zeros(40, 64, 64, 3, dtype=torch.uint8), speech(3000), {}, ValueError, "too short"),
        (torch.zeros(40, 64, 64, 3, dtype=torch.uint8), speech(25600), {"fps": 30.0}, ValueError, "25 fps"),
        (torch.zeros(40, 64, 64, 3, dtype=torch.uint8), torch.zeros(25600), {}, ValueError, "silent"),
        (torch.full((40, 64, 64, 3), 128.0), speech(25600), {}, ValueError, "0..1"),
        (torch.zeros(40, 64, 64, dtype=torch.uint8), speech(25600), {}, ValueError, "RGB"),
        (torch.zeros(40, 64, 64, 4, dtype=torch.uint8), speech(25600), {}, ValueError, "3 channels"),
        (torch.zeros(40, 64, 64, 3, dtype=torch.uint8), speech(25600, batch=2), {}, ValueError, "mono"),
    ],
)
def test_evaluate_rejects_bad_input(random_model, frames, audio, kwargs, error, match):
    with pytest.raises(error, match=match):
        evaluate_sync(random_model, frames, audio, **kwargs)


def test_reward_rejects_bad_input(random_model):
    frames = torch.zeros(2, 20, 64, 64, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="too short"):
        sync_c_reward(random_model, frames[:, :19], speech(16000, batch=2))
    with pytest.raises(ValueError, match=r"audio sample\(s\) \[1\] is silent"):
        sync_c_reward(random_model, frames, torch.stack([speech(16000), torch.zeros(16000)]))
    with pytest.raises(ValueError, match="one waveform per clip"):
        sync_c_reward(random_model, frames, speech(16000, batch=3))
    with pytest.raises(ValueError, match="25 fps"):
        sync_c_reward(random_model, frames, speech(16000, batch=2), fps=24.0)


def test_reward_resamples_audio(random_model):
    """48 kHz audio is resampled to 16 kHz (torchaudio), not misread as 16 kHz."""
    frames = torch.randint(0, 255, (1, 20, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))

    def tone(rate: int) -> torch.Tensor:
        t = torch.arange(rate, dtype=torch.float64) / rate
        envelope = 0.2 + 0.15 * torch.sin(2 * math.pi * 3 * t)
        return (envelope * (torch.sin(2 * math.pi * 220 * t) + 0.5 * torch.sin(2 * math.pi * 710 * t)))[None].float()

    r16 = sync_c_reward(random_model, frames, tone(16000))
    r48 = sync_c_reward(random_model, frames, tone(48000), sample_rate=48000)
    assert r48.item() == pytest.approx(r16.item(), rel=1e-2)
    resampled = _audio_16k(tone(48000), 48000, torch.float32)
    assert resampled.shape == (1, 16000)
    torch.testing.assert_close(resampled[:, 100:-100], tone(16000)[:, 100:-100], rtol=0, atol=1e-3)


# ----------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def golden_state(golden_root):
    return load_file(golden_root / "syncnet" / "syncnet_v2_random.safetensors")


def test_loads_torch_pickle_without_num_batches_tracked(tmp_path, golden_state):
    state = {k: v for k, v in golden_state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "syncnet_v2.model")
    model = load_syncnet(tmp_path / "syncnet_v2.model")
    assert not model.training and all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, golden_state[key].float()), key


def test_rejects_wrong_checkpoints(tmp_path, golden_state):
    save_file({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a SyncNet v2 checkpoint"):
        load_syncnet(tmp_path / "other.safetensors")
    resized = dict(golden_state, **{"netfcaud.3.weight": torch.zeros(512, 512)})
    save_file(resized, tmp_path / "resized.safetensors")
    with pytest.raises(CheckpointError, match="netfcaud.3.weight"):
        load_syncnet(tmp_path / "resized.safetensors")
    (tmp_path / "notes.model").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.model"):
        load_syncnet(tmp_path / "notes.model")


def test_dispatches_on_the_files_own_config(tmp_path):
    """The bundled demo SyncNet (its config in the file's metadata) loads through the same function;
    a demo file of another kind is refused by name."""
    from lipforcing_core.demo.constants import SYNCNET_FILE, VAE_FILE
    from lipforcing_core.demo.recipe import load_demo_syncnet
    from lipforcing_core.demo.sync_model import SmallSyncNet

    model = load_syncnet(SYNCNET_FILE)
    assert isinstance(model, SmallSyncNet) and not model.training
    reference = load_demo_syncnet(SYNCNET_FILE).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="describes no syncnet model"):
        load_syncnet(VAE_FILE)


# ----------------------------------------------------------------------------- report and chart


def constructed_result(k: int) -> SyncResult:
    lip, aud = shifted_streams(k, seed=3)
    return offset_search(lip, aud)


def test_report_is_json_by_increasing_offset(tmp_path):
    result = constructed_result(-4)
    json_path, png_path = save_report(result, tmp_path / "out")
    report = json.loads(json_path.read_text())
    assert report == result.to_dict()
    assert Image.open(png_path).size == (800, 480)
    assert (report["offset"], report["vshift"], report["windows"]) == (-4, VSHIFT, N)
    assert [p["offset"] for p in report["per_offset"]] == list(range(-VSHIFT, VSHIFT + 1))
    assert [p["mean_dist"] for p in report["per_offset"]] == pytest.approx(result.dists.flip(0).tolist())
    best = min(report["per_offset"], key=lambda p: p["mean_dist"])
    assert best["offset"] == -4 and best["mean_dist"] == pytest.approx(report["lse_d"])


def test_chart_marks_the_minimum():
    """The red minimum marker sits left of centre for a negative offset and right for a positive one."""
    centres = []
    for k in (-9, 9):
        img = plot_offsets(constructed_result(k))
        assert img.mode == "RGB" and img.size == (800, 480)
        pixels = torch.from_numpy(np.asarray(img).astype(np.int32))
        xs = (pixels == torch.tensor(MARK)).all(-1).nonzero()[:, 1]
        assert len(xs) > 50
        centres.append(xs.float().median().item())
    assert centres[0] < 400 < centres[1]
