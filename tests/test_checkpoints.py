"""load_dit: every supported checkpoint layout gives the same network; bad files give clear errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from lipforcing_core.checkpoints import CheckpointError, detect_preset, load_dit
from lipforcing_core.config import get_preset
from lipforcing_core.models.dit import LipForcingDiT

RANK, ALPHA = 16, 8.0  # LoRA scale alpha/r = 0.5 as in the released adapter (r128, alpha 64)
LORA_TARGETS = re.compile(r"blocks\.\d+\.(self_attn|cross_attn)\.[qkvo]\.weight|blocks\.\d+\.ffn\.[02]\.weight")


pytestmark = pytest.mark.usefixtures("two_threads_no_grad")


@pytest.fixture(scope="module")
def reference(random_tiny_dit):
    return {k: v.clone() for k, v in random_tiny_dit.state_dict().items()}


@pytest.fixture(scope="module")
def probe():
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, 16, 3, 4, 4, generator=g), 0.6, torch.randn(1, 49, 3, 4, 4, generator=g),
            torch.randn(1, 5, 4096, generator=g), torch.randn(1, 9, 10752, generator=g))


def run(sd_or_model, probe):
    if isinstance(sd_or_model, dict):
        net = LipForcingDiT(get_preset("tiny")).eval()
        net.load_state_dict(sd_or_model, strict=True)
        sd_or_model = net
    return sd_or_model(*probe)


@pytest.mark.parametrize("layout", ["flat.pth", "model_net.pth", "net_prefixed.pth", "flat.safetensors"])
def test_merged_layouts_load_identically(tmp_path, reference, probe, layout):
    path = tmp_path / layout
    if layout == "flat.safetensors":
        save_file(reference, path)
    elif layout == "model_net.pth":
        torch.save({"model": {"net": {f"_core.{k}": v for k, v in reference.items()}}, "step": 3}, path)
    elif layout == "net_prefixed.pth":
        torch.save({"net": {f"model.{k}": v.to(torch.bfloat16) for k, v in reference.items()}}, path)
    else:
        torch.save(reference, path)
    model = load_dit(path, dtype=torch.float32)
    assert model.config == get_preset("tiny") and not any(p.is_meta for p in model.parameters())
    expected = {k: v.to(torch.bfloat16).float() for k, v in reference.items()} if "prefixed" in layout else reference
    torch.testing.assert_close(run(model, probe), run(expected, probe), atol=0, rtol=0)


def to_diffusers(key: str) -> str:
    """The diffusers WanTransformer3DModel name of an original Wan key (for the base-shard test)."""
    for new, old in (("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
                     ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
                     ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
                     ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
                     ("time_projection.1", "condition_embedder.time_proj"), ("head.head", "proj_out"),
                     ("head.modulation", "scale_shift_table"), (".modulation", ".scale_shift_table"),
                     ("self_attn.o", "attn1.to_out.0"), ("cross_attn.o", "attn2.to_out.0"),
                     ("self_attn.norm_", "attn1.norm_"), ("cross_attn.norm_", "attn2.norm_"),
                     ("self_attn.", "attn1.to_"), ("cross_attn.", "attn2.to_"),
                     (".norm3.", ".norm2."), ("ffn.0", "ffn.net.0.proj"), ("ffn.2", "ffn.net.2")):
        key = key.replace(new, old)
    return key


@pytest.mark.parametrize("naming", ["wan", "diffusers"])
def test_base_shards_plus_lora_adapter(tmp_path, reference, probe, naming):
    """Wan2.1 base shards (16-ch patch embedding, no audio) + adapter (LoRA, audio, 49-ch patch embedding)."""
    g = torch.Generator().manual_seed(7)
    base = {k: v for k, v in reference.items() if not k.startswith("audio")}
    base["patch_embedding.weight"] = reference["patch_embedding.weight"][:, :16].clone()
    adapter = {k: v for k, v in reference.items() if k.startswith("audio")}
    adapter["patch_embedding.weight"] = reference["patch_embedding.weight"][:, :49].clone()
    adapter["patch_embedding.bias"] = reference["patch_embedding.bias"] + 1
    expected = dict(reference)
    expected["patch_embedding.weight"] = torch.cat([adapter["patch_embedding.weight"],
                                                    torch.zeros_like(reference["patch_embedding.weight"][:, 49:])], 1)
    expected["patch_embedding.bias"] = adapter["patch_embedding.bias"]
    for i, key in enumerate(k for k in reference if LORA_TARGETS.fullmatch(k)):
        out_f, in_f = reference[key].shape
        a, b = torch.randn(RANK, in_f, generator=g) * 0.1, torch.randn(out_f, RANK, generator=g) * 0.1
        module = key.removesuffix(".weight")
        tag = ".default" if i % 2 else ""  # both OmniAvatar and PEFT spellings occur
        adapter[f"{module}.lora_A{tag}.weight"], adapter[f"{module}.lora_B{tag}.weight"] = a, b
        expected[key] = reference[key] + (ALPHA / RANK) * b @ a
    names = list(base)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": names[: len(names) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": names[len(names) // 2:]}
    rename = to_diffusers if naming == "diffusers" else (lambda k: k)
    for fname, keys in shards.items():
        save_file({rename(k): base[k] for k in keys}, tmp_path / fname)
    index = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {rename(k): f for f, ks in shards.items() for k in ks}}))
    torch.save(adapter, tmp_path / "omniavatar_ls.pt")

    want = run(expected, probe)
    for source in (index, tmp_path, sorted(tmp_path.glob("*.safetensors"))):
        model = load_dit(source, lora=tmp_path / "omniavatar_ls.pt", lora_alpha=ALPHA)
        torch.testing.assert_close(run(model, probe), want, atol=1e-6, rtol=1e-5)

    with pytest.raises(CheckpointError, match="Wan2.1 base model"):
        load_dit(index)
    with pytest.raises(CheckpointError, match="OmniAvatar adapter"):
        load_dit(tmp_path / "omniavatar_ls.pt")


def test_bad_files_raise_clear_errors(tmp_path, reference):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a Lip Forcing"):
        load_dit(tmp_path / "other.pth")

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_dit(tmp_path / "junk.pth")

    missing = {k: v for k, v in reference.items() if k != "blocks.3.ffn.2.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing \[blocks\.3\.ffn\.2\.bias\]"):
        load_dit(tmp_path / "missing.pth")

    torch.save({**reference, "blocks.0.extra": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected \[blocks\.0\.extra\]"):
        load_dit(tmp_path / "extra.pth")

    torch.save(reference, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="fits preset 'tiny'"):
        load_dit(tmp_path / "tiny.pth", preset="1.3b")

    odd = dict(reference)
    odd["blocks.0.ffn.0.weight"] = torch.zeros(300, 128)
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="matches no preset"):
        load_dit(tmp_path / "odd.pth")


@pytest.mark.parametrize("name,manifest", [("14b", "keys_14b.json"), ("1.3b", "keys_1_3b.json")])
def test_detect_preset_from_official_manifest(golden_root, name, manifest):
    keys = json.loads((golden_root / "dit" / manifest).read_text())["keys"]
    assert detect_preset({e["key"]: e["shape"] for e in keys}) == name
