"""The three trainers on the tiny preset (CPU): losses fall, stage-2 gradient paths, resume, export."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch

from lipforcing_core.checkpoints import load_dit
from lipforcing_core.config import STREAM_WINDOW, CausalSpec
from lipforcing_core.training.config import DFConfig, DMDConfig, TeacherConfig
from lipforcing_core.training.data import InMemoryClips, conditioning
from lipforcing_core.training.diffusion_forcing import DiffusionForcingTrainer
from lipforcing_core.sampling.teacher import cfg_combine, cfg_scale_at
from lipforcing_core.training.dmd import DMDTrainer, reward_weights, vsd_loss
from lipforcing_core.training.rollout import self_rollout
from lipforcing_core.training.teacher import TeacherTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_clips import random_clip  # noqa: E402  (a helper module beside the tests)

FRAMES, HW = 6, (2, 2)  # two chunks of 3 latent frames, one token per frame


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread is fastest


def clips(n: int = 2) -> InMemoryClips:
    return InMemoryClips([random_clip(frames=FRAMES, hw=HW, seed=s) for s in range(n)])


@contextlib.contextmanager
def at_step(trainer, step: int = 0):
    """Evaluate with the randomness of ``step`` (same noise, times, windows every call), no grad."""
    saved, trainer.step = trainer.step, step
    try:
        with torch.no_grad():
            yield
    finally:
        trainer.step = saved


def dmd_trainer(tmp_path=None, **kw) -> DMDTrainer:
    cfg = dict(batch_size=2, grad_accum=1, lr=1e-3, critic_lr=1e-3, student_update_every=1, ema_decay=0.9,
               save_every=10**6,
               out_dir=str(tmp_path or "unused"))
    cfg.update(kw)
    return DMDTrainer(DMDConfig(**cfg), clips())


# ------------------------------------------------------------------------------------ losses fall
@pytest.mark.parametrize("trainer_cls, cfg_cls", [(TeacherTrainer, TeacherConfig),
                                                  (DiffusionForcingTrainer, DFConfig)])
def test_flow_trainers_reduce_loss_on_fixed_batch(trainer_cls, cfg_cls, tmp_path):
    trainer = trainer_cls(cfg_cls(batch_size=2, lr=1e-3, save_every=10**6), clips(2))
    with at_step(trainer):
        before = float(trainer.loss(trainer.batch()))
    history = trainer.fit(steps=6, out_dir=tmp_path, log=None)
    with at_step(trainer):
        after = float(trainer.loss(trainer.batch()))
    assert len(history) == 6 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert after < 0.9 * before, (before, after)


def test_wall_clock_budget_stops_training_and_saves(tmp_path):
    trainer = TeacherTrainer(TeacherConfig(batch_size=2, lr=1e-3, save_every=10**6, max_minutes=0.0), clips(2))
    history = trainer.fit(steps=5, out_dir=tmp_path, log=None)
    assert len(history) == 1 and trainer.step == 1  # the budget was gone after the first step
    assert (tmp_path / "checkpoint_000001.safetensors").is_file()


def test_gradient_accumulation_changes_memory_not_math(tmp_path):
    runs = []
    for accum in (1, 2):
        trainer = TeacherTrainer(TeacherConfig(batch_size=2, grad_accum=accum, lr=1e-3, save_every=10**6), clips(2))
        runs.append((trainer.fit(steps=2, out_dir=tmp_path, log=None), trainer.nets["teacher"].state_dict()))
    (h1, w1), (h2, w2) = runs
    assert [h["loss"] for h in h1] == pytest.approx([h["loss"] for h in h2], rel=1e-5)
    for key in w1:  # Adam's first steps are ~sign(g)*lr: allow a few near-zero gradients to flip (lr 1e-3)
        assert (w2[key] - w1[key]).abs().max() < 2e-4, key
    with pytest.raises(ValueError, match="grad_accum=3"):
        TeacherTrainer(TeacherConfig(batch_size=2, grad_accum=3), clips(2))


def test_dmd_critic_and_student_losses_fall():
    trainer = dmd_trainer(batch_size=1)
    with at_step(trainer):
        batch = trainer.batch()
        y = conditioning(batch)
        critic_before = float(trainer.critic_loss(batch, y))
    for _ in range(3):
        trainer.run_step()
    with at_step(trainer):
        assert float(trainer.critic_loss(batch, y)) < critic_before

    # student: one update lowers its own surrogate 0.5*MSE(x_gen, x_gen - g) with g held fixed
    student = trainer.nets["student"]
    trainer.nets["critic"].requires_grad_(False)  # keep the critic (hence g) fixed during this check
    for group in trainer.optims["student"].param_groups:
        group["lr"] = 1e-6  # a small step: Adam with beta1=0 moves every weight by ~lr, coherently
    with at_step(trainer, 1):
        gen0 = trainer.generate(batch, y, "student")
        t = trainer.dmd_time("student.t")
        x_t = torch.randn_like(gen0)
        fake = trainer.x0("critic", x_t, t, y, batch["text"], batch["audio"])
        teacher = trainer.x0("teacher", x_t, t, y, batch["text"], batch["audio"])
        w = 1 / ((gen0 - teacher).abs().mean() + 1e-6)
        target = gen0 - (fake - teacher) * w
    saved = trainer.step
    trainer.step = 1
    with torch.enable_grad():
        loss = 0.5 * torch.nn.functional.mse_loss(trainer.generate(batch, y, "student"), target)
        loss.backward()
    trainer.update("student")
    trainer.step = saved
    with at_step(trainer, 1):
        gen1 = trainer.generate(batch, y, "student")
    assert torch.nn.functional.mse_loss(gen1, target) < torch.nn.functional.mse_loss(gen0, target)
    assert student.training


# ------------------------------------------------------------------------------------ Sync-Window CFG
def test_sync_window_applies_cfg_exactly_inside_band():
    t = torch.tensor([0.0, 0.3, 0.5559, 0.556, 0.7, 0.882, 0.8821, 0.999], dtype=torch.float64)
    scale = cfg_scale_at(t, 4.5, (0.556, 0.882))
    assert scale.tolist() == [1.0, 1.0, 1.0, 4.5, 4.5, 4.5, 1.0, 1.0]
    cond, neg = torch.randn(8, 2, 3), torch.randn(8, 2, 3)
    out = cfg_combine(cond, neg, scale)
    inside = scale == 4.5
    torch.testing.assert_close(out[~inside], cond[~inside], rtol=0, atol=0)
    torch.testing.assert_close(out[inside], cond[inside] + 3.5 * (cond[inside] - neg[inside]))


def test_student_loss_uses_teacher_cfg_only_inside_band(monkeypatch):
    """The DMD target equals the guided teacher for in-band t and the plain teacher otherwise."""
    trainer = dmd_trainer(batch_size=2)
    calls = []
    real_guided = cfg_combine

    def spy(cond, neg, scale):
        calls.append(scale.clone())
        return real_guided(cond, neg, scale)

    monkeypatch.setattr("lipforcing_core.training.dmd.cfg_combine", spy)
    with at_step(trainer, 3):
        batch = trainer.batch()
        t = trainer.dmd_time("student.t")
        trainer.student_loss(batch, conditioning(batch))
    expected = torch.where((t >= 0.556) & (t <= 0.882), 4.5, 1.0)
    assert torch.equal(calls[0].to(expected.dtype), expected)


# ------------------------------------------------------------------------------------ VSD and reward
def test_vsd_loss_gradient_is_normalised_dmd_direction():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 2, 2, requires_grad=True)
    teacher, fake = torch.randn_like(x), torch.randn_like(x)
    per_sample = vsd_loss(x, teacher, fake)
    per_sample.sum().backward()
    n = x[0].numel()
    w = 1 / ((x.detach() - teacher).abs().mean((1, 2, 3, 4), keepdim=True) + 1e-6)
    torch.testing.assert_close(x.grad, (fake - teacher) * w / n)
    torch.testing.assert_close(per_sample, 0.5 * (((fake - teacher) * w) ** 2).mean((1, 2, 3, 4)))


def test_reward_weights_scale_each_sample_and_carry_no_gradient():
    trainer = dmd_trainer(batch_size=2, reward_beta=2.0)
    with torch.no_grad():  # a critic that differs from the teacher, so the VSD loss is not zero
        for p in trainer.nets["critic"].parameters():
            p.add_(0.05 * torch.randn_like(p))

    def loss_with(score):
        trainer.reward = None if score is None else (lambda gen, batch: torch.tensor(score))
        with at_step(trainer, 2):
            batch = trainer.batch()
            return trainer.student_loss(batch, conditioning(batch))

    plain, only_first, only_second = loss_with(None), loss_with([0.0, -50.0]), loss_with([-50.0, 0.0])
    assert float(plain["student_loss"]) > 0 and "sync_c" not in plain and "sync_c" in only_first
    # exp(2*-50) ~ 0 removes one sample; the two halves add up to the unweighted batch mean
    torch.testing.assert_close(only_first["student_loss"] + only_second["student_loss"], plain["student_loss"])
    assert not torch.isclose(only_first["student_loss"], only_second["student_loss"])
    doubled = plain["student_loss"] * torch.exp(torch.tensor(1.0))  # exp(2 * 0.5) for every sample
    torch.testing.assert_close(loss_with([0.5, 0.5])["student_loss"], doubled)
    score = torch.tensor([0.5, -1.0], requires_grad=True)
    w = reward_weights(score, 2.0)
    assert not w.requires_grad
    torch.testing.assert_close(w, torch.exp(2.0 * score.detach()))


# ------------------------------------------------------------------------------------ rollout gradients
def test_rollout_gradient_flows_only_through_exit_steps():
    trainer = dmd_trainer(batch_size=1)
    student = trainer.nets["student"]
    batch = trainer.batch()
    y = conditioning(batch)
    calls = []
    hook = student.patch_embedding.register_forward_pre_hook(
        lambda m, args: calls.append((torch.is_grad_enabled(), args[0].requires_grad)))
    noise = torch.randn(2, 1, 16, FRAMES, *HW)
    try:
        gen, state = self_rollout(student, noise, y, batch["text"], batch["audio"], t_list=(0.999, 0.769, 0.0),
                                  exit_step=1, spec=STREAM_WINDOW, return_state=True)
    finally:
        hook.remove()
    # per chunk: step 0 (no grad), exit step 1 (grad), cache write (no grad); inputs never carry grad
    assert [g for g, _ in calls] == [False, True, False] * 2
    assert not any(r for _, r in calls)
    # past K/V: plain buffers outside the graph
    assert all(not c.k.requires_grad and c.k.grad_fn is None and not c.v.requires_grad for c in state.caches)
    gen.square().mean().backward()
    grads = {n: p.grad for n, p in student.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert grads["text_embedding.0.weight"].abs().sum() > 0 and grads["audio_proj.proj.weight"].abs().sum() > 0
    for name in ("teacher", "critic"):
        assert all(p.grad is None for p in trainer.nets[name].parameters())


def test_chunk_output_has_no_gradient_path_to_earlier_chunks():
    """d(chunk 1 output)/d(student params) equals the gradient with chunk 0 frozen into the cache."""
    trainer = dmd_trainer(batch_size=1)
    student = trainer.nets["student"]
    batch = trainer.batch()
    y, noise = conditioning(batch), torch.randn(2, 1, 16, FRAMES, *HW)
    args = dict(t_list=(0.999, 0.769, 0.0), exit_step=0, spec=STREAM_WINDOW)
    gen = self_rollout(student, noise, y, batch["text"], batch["audio"], **args)
    w = student.blocks[0].self_attn.q.weight
    (g_full,) = torch.autograd.grad(gen[:, :, 3:].sum(), w)
    # reference: chunk 0 computed without any graph, chunk 1 alone with grad
    with torch.no_grad():
        state = student.new_stream(batch["text"], batch["audio"], latent_hw=HW, spec=STREAM_WINDOW)
        x = noise[0][:, :, :3] * 0.999
        from lipforcing_core.sampling.schedule import x0_from_flow
        x0 = x0_from_flow(x, student.forward_chunk(x, 0.999, y[:, :, :3], state, start_frame=0), 0.999)
        student.forward_chunk(x0, 0.0, y[:, :, :3], state, start_frame=0, write_cache=True)
    state.cross_kv, state.audio = student.text_kv(batch["text"]), student.encode_audio(batch["audio"])
    x = noise[0][:, :, 3:] * 0.999
    out = x0_from_flow(x, student.forward_chunk(x, 0.999, y[:, :, 3:], state, start_frame=3), 0.999)
    (g_ref,) = torch.autograd.grad(out.sum(), w)
    torch.testing.assert_close(g_full, g_ref)


def test_rollout_without_grad_is_the_streaming_sampler():
    """Exit at the last step and no grad: the inference loop of SPEC §4 (fresh re-noise, t=0 commit)."""
    trainer = dmd_trainer(batch_size=1)
    student, batch = trainer.nets["student"], trainer.batch()
    y, noise = conditioning(batch), torch.randn(2, 1, 16, FRAMES, *HW)
    from lipforcing_core.sampling.schedule import renoise, x0_from_flow
    with torch.no_grad():
        gen = self_rollout(student, noise, y, batch["text"], batch["audio"], t_list=(0.999, 0.769, 0.0),
                           exit_step=1, spec=STREAM_WINDOW)
        state = student.new_stream(batch["text"], batch["audio"], latent_hw=HW, spec=STREAM_WINDOW)
        outs = []
        for c0 in (0, 3):
            sl = slice(c0, c0 + 3)
            x = noise[0][:, :, sl] * 0.999
            x0 = x0_from_flow(x, student.forward_chunk(x, 0.999, y[:, :, sl], state), 0.999)
            x = renoise(x0, noise[1][:, :, sl], 0.769)
            x0 = x0_from_flow(x, student.forward_chunk(x, 0.769, y[:, :, sl], state), 0.769)
            student.forward_chunk(x0, 0.0, y[:, :, sl], state, write_cache=True)
            outs.append(x0)
    torch.testing.assert_close(gen, torch.cat(outs, 2), rtol=0, atol=0)
    with pytest.raises(ValueError, match="exit_step"):
        self_rollout(student, noise, y, batch["text"], batch["audio"], t_list=(0.999, 0.769, 0.0),
                     exit_step=2, spec=CausalSpec())


# ------------------------------------------------------------------------------------ resume and export
def test_resume_continues_bit_identically(tmp_path):
    kw = dict(student_update_every=2, lora_rank=4, lora_alpha=8.0)
    straight = dmd_trainer(tmp_path / "a", **kw)
    history = straight.fit(steps=3, out_dir=tmp_path / "a", log=None)
    first = dmd_trainer(tmp_path / "b", **kw)
    first.fit(steps=2, out_dir=tmp_path / "b", log=None)
    ckpt = first.save(tmp_path / "b" / "mid.safetensors")
    resumed = dmd_trainer(tmp_path / "c", resume=str(ckpt), **kw)
    assert resumed.step == 2
    tail = resumed.fit(steps=3, out_dir=tmp_path / "c", log=None)
    assert tail == history[2:]
    for name in ("student", "critic"):
        for (n, a), (_, b) in zip(straight.nets[name].state_dict().items(), resumed.nets[name].state_dict().items()):
            assert torch.equal(a, b), f"{name}.{n}"
        sa, sb = straight.optims[name].state_dict()["state"], resumed.optims[name].state_dict()["state"]
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert all(torch.equal(straight.emas["student"].shadow[n], resumed.emas["student"].shadow[n])
               for n in straight.emas["student"].shadow)


def test_resume_rejects_other_trainer_checkpoint(tmp_path):
    from lipforcing_core.checkpoints import CheckpointError

    teacher = TeacherTrainer(TeacherConfig(batch_size=1, save_every=10**6), clips(1))
    path = teacher.save(tmp_path / "teacher.safetensors")
    with pytest.raises(CheckpointError, match="'teacher' checkpoint"):
        DiffusionForcingTrainer(DFConfig(batch_size=1, resume=str(path)), clips(1))


def test_exported_lora_student_loads_and_matches_trainer(tmp_path):
    trainer = DiffusionForcingTrainer(DFConfig(batch_size=2, lr=1e-2, lora_rank=4, lora_alpha=8.0,
                                               ema_decay=0.5, save_every=10**6), clips(2))
    trainer.fit(steps=2, out_dir=tmp_path, log=None)
    student = trainer.nets["student"]
    lora = [p for n, p in student.named_parameters() if n.endswith("lora_B")]
    assert lora and all(p.abs().sum() > 0 for p in lora)  # adapters trained (B starts at zero)
    assert not student.blocks[0].self_attn.q.weight.requires_grad and student.audio_proj.proj.weight.requires_grad
    path = trainer.export(tmp_path / "student.safetensors", "student", use_ema=False)
    loaded = load_dit(path, preset="tiny")
    from lipforcing_core.models.dit import LipForcingDiT
    from lipforcing_core.config import get_preset
    assert set(loaded.state_dict()) == set(LipForcingDiT(get_preset("tiny")).state_dict())
    batch = trainer.batch()
    args = (torch.randn_like(batch["latents"]), torch.rand(2, FRAMES), conditioning(batch), batch["text"],
            batch["audio"])
    spec = CausalSpec(3, 7, 1, True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args, causal=spec), student.eval()(*args, causal=spec), rtol=1e-4, atol=1e-5)
    ema_path = trainer.export(tmp_path / "student_ema.safetensors", "student")
    ema = load_dit(ema_path, preset="tiny")
    assert not torch.equal(ema.audio_proj.proj.weight, loaded.audio_proj.proj.weight)


def test_syncnet_reward_scores_taehv_decoded_student_latents(monkeypatch):
    from lipforcing_core.syncnet import metrics
    from lipforcing_core.training.dmd import SyncNetReward
    from lipforcing_core.vae.taehv import TAEHV

    torch.manual_seed(0)
    taehv = TAEHV().eval()
    gen = torch.randn(2, 16, FRAMES, *HW)  # 6 latents -> 21 frames at 25 fps
    wave = 0.1 * torch.randn(2, 21 * 640)
    seen = {}

    def fake_reward(model, frames, audio):  # the real scorer's input checks, then a per-sample value
        seen.update(model=model, frames=metrics._frames_channels_first(frames, batched=True), audio=audio)
        return frames.mean((1, 2, 3, 4))

    monkeypatch.setattr(metrics, "sync_c_reward", fake_reward)
    syncnet = object()
    score = SyncNetReward(syncnet, taehv)(gen, {"waveform": wave})
    expected = taehv.decode_video(gen.transpose(1, 2))  # [B, F, 3, 16, 16] RGB 0..1
    assert seen["model"] is syncnet and expected.shape[:3] == (2, 21, 3)
    torch.testing.assert_close(seen["frames"], expected)
    torch.testing.assert_close(score, expected.mean((1, 2, 3, 4)))
    assert torch.equal(seen["audio"], wave)
    with pytest.raises(ValueError, match="waveform"):
        SyncNetReward(syncnet, taehv)(gen, {})


def test_dmd_teacher_and_critic_from_wan_base_plus_adapter(tmp_path):
    from safetensors.torch import save_file

    from lipforcing_core.config import get_preset
    from lipforcing_core.models.dit import LipForcingDiT

    torch.manual_seed(1)
    full = LipForcingDiT(get_preset("tiny")).state_dict()
    save_file({k: v for k, v in full.items() if not k.startswith("audio")}, str(tmp_path / "base.safetensors"))
    adapter = {k: v for k, v in full.items() if k.startswith("audio")}
    adapter["blocks.0.self_attn.q.lora_A.weight"] = torch.randn(8, 128)
    adapter["blocks.0.self_attn.q.lora_B.weight"] = torch.randn(128, 8)
    save_file(adapter, str(tmp_path / "adapter.safetensors"))
    trainer = dmd_trainer(teacher=str(tmp_path / "base.safetensors"),
                          teacher_adapter=str(tmp_path / "adapter.safetensors"))
    want = load_dit(tmp_path / "base.safetensors", lora=tmp_path / "adapter.safetensors").state_dict()
    for name in ("teacher", "critic"):
        got = trainer.nets[name].state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), name
    assert not torch.equal(want["blocks.0.self_attn.q.weight"], full["blocks.0.self_attn.q.weight"])
