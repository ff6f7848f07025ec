"""``python -m lipforcing_core inspect``: presets (meta device) and checkpoint files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lipforcing_core.cli import main
from lipforcing_core.config import get_preset
from lipforcing_core.models.dit import LipForcingDiT


def inspect_json(capsys, target) -> dict:
    assert main(["inspect", str(target), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name,manifest", [("14b", "keys_14b.json"), ("1.3b", "keys_1_3b.json")])
def test_preset_report_matches_official_manifest(capsys, golden_root, name, manifest):
    official = json.loads((golden_root / "dit" / manifest).read_text())
    report = inspect_json(capsys, name)
    assert report["preset"] == name and report["kind"] == "preset"
    assert report["num_params"] == official["total_params"]
    assert report["keys"] == {e["key"]: e["shape"] for e in official["keys"]}


@pytest.fixture(scope="module")
def tiny_sd():
    torch.manual_seed(0)
    return LipForcingDiT(get_preset("tiny")).state_dict()


def test_checkpoint_files(capsys, tmp_path, tiny_sd):
    torch.save({"model": {"net": {k: v.to(torch.bfloat16) for k, v in tiny_sd.items()}}}, tmp_path / "lf.pth")
    report = inspect_json(capsys, tmp_path / "lf.pth")
    assert (report["kind"], report["preset"], report["dtypes"]) == ("lipforcing-dit", "tiny", {"bfloat16": 185})
    assert report["num_params"] == 3_313_440 and not report["missing"] and not report["unexpected"]

    base = {k: v for k, v in tiny_sd.items() if not k.startswith("audio")}
    save_file(base, tmp_path / "base.safetensors")
    report = inspect_json(capsys, tmp_path / "base.safetensors")
    assert report["kind"] == "wan2.1-base" and report["preset"] == "tiny"
    assert set(report["missing"]) == {k for k in tiny_sd if k.startswith("audio")}

    torch.save({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 128),
                "blocks.0.self_attn.q.lora_B.weight": torch.zeros(128, 4)}, tmp_path / "adapter.pt")
    assert inspect_json(capsys, tmp_path / "adapter.pt")["kind"] == "omniavatar-adapter"

    assert main(["inspect", str(tmp_path / "lf.pth")]) == 0
    assert "lipforcing-dit, preset tiny" in capsys.readouterr().out


def test_non_dit_file_fails_with_message(capsys, tmp_path):
    save_file({"encoder.conv.weight": torch.zeros(3)}, tmp_path / "vae.safetensors")
    with pytest.raises(SystemExit) as stop:  # like every command: one line on stderr, exit code 2
        main(["inspect", str(tmp_path / "vae.safetensors")])
    assert stop.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "not a Lip Forcing" in out.err
