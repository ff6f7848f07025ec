"""``python -m lipforcing_core convert``: round trips, what reads the result, and bad inputs (nothing written)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lipforcing_core.checkpoints import CheckpointError, load_dit, read_metadata
from lipforcing_core.cli import main
from lipforcing_core.models.fp8 import FP8, Fp8Linear, dequantize_rows
from lipforcing_core.tools import convert as convert_module
from lipforcing_core.tools.convert import convert

pytestmark = pytest.mark.usefixtures("two_threads_no_grad")


@pytest.fixture(scope="module")
def bf16_sd(random_tiny_dit):
    return {k: v.to(torch.bfloat16) for k, v in random_tiny_dit.state_dict().items()}


@pytest.fixture()
def release_like(tmp_path, bf16_sd):
    """A bf16 pickle nested and prefixed like the released lipforcing_14b.pth."""
    path = tmp_path / "release.pth"
    torch.save({"model": {"net": {f"_core.{k}": v for k, v in bf16_sd.items()}}, "step": 7}, path)
    return path


def inspect_json(capsys, target) -> dict:
    assert main(["inspect", str(target), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def convert_cli(capsys, *args) -> dict:
    assert main(["convert", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def test_bf16_round_trip_is_bit_identical_and_loads_everywhere(tmp_path, capsys, release_like, bf16_sd):
    out = tmp_path / "student_bf16.safetensors"
    report = convert_cli(capsys, release_like, "-o", out)
    assert report["preset"] == "tiny" and report["tensors"] == len(bf16_sd) and out.stat().st_size == report["bytes"]
    back = load_file(out)
    assert back.keys() == bf16_sd.keys()
    assert all(back[k].dtype == torch.bfloat16 and torch.equal(back[k].view(torch.int16), bf16_sd[k].view(torch.int16))
               for k in bf16_sd)
    assert read_metadata(out)["dtype"] == "bf16"
    assert out.stat().st_mode & 0o644 == 0o644  # readable like any new file, not mkstemp's private mode
    model = load_dit(out)
    assert all(torch.equal(model.state_dict()[k], bf16_sd[k]) for k in bf16_sd)
    info = inspect_json(capsys, out)
    assert (info["kind"], info["preset"], info["dtypes"]) == ("lipforcing-dit", "tiny", {"bfloat16": len(bf16_sd)})
    assert not (info["missing"] or info["unexpected"] or info["wrong_shape"])
    # a converted file converts again to the same tensors (shard folder input: the file's folder)
    again = tmp_path / "again" / "copy.safetensors"
    convert(out.parent / "student_bf16.safetensors", again)
    assert all(torch.equal(load_file(again)[k], back[k]) for k in back)


def test_fp8_file_loads_with_strict_keys_and_back(tmp_path, capsys, release_like, bf16_sd):
    out = tmp_path / "student_fp8.safetensors"
    convert_cli(capsys, release_like, "-o", out, "--dtype", "fp8_e4m3fn")
    sd = load_file(out)
    fp8_layers = [k.removesuffix(".weight_scale") for k in sd if k.endswith(".weight_scale")]
    assert len(fp8_layers) == 60 and all(sd[f"{n}.weight"].dtype == FP8 for n in fp8_layers)
    w = bf16_sd["blocks.1.ffn.0.weight"].float()
    back = dequantize_rows(sd["blocks.1.ffn.0.weight"], sd["blocks.1.ffn.0.weight_scale"])
    assert (back - w).abs().max() <= w.abs().max() * 2**-4

    model = load_dit(out)
    assert isinstance(model.blocks[1].ffn[0], Fp8Linear) and model.text_embedding[0].weight.dtype == torch.bfloat16
    assert model.state_dict().keys() == sd.keys()
    info = inspect_json(capsys, out)
    assert info["dtypes"] == {"float8_e4m3fn": 60, "float32": 60, "bfloat16": len(bf16_sd) - 60}
    assert not (info["missing"] or info["unexpected"] or info["wrong_shape"])

    broken = dict(sd)
    del broken["blocks.2.self_attn.k.weight_scale"]
    save_file(broken, tmp_path / "no_scale.safetensors")  # an fp8 weight without its scale: strict loading refuses
    with pytest.raises(CheckpointError, match=r"without a weight_scale beside them: blocks\.2\.self_attn\.k\.weight"):
        load_dit(tmp_path / "no_scale.safetensors")
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        main(["inspect", str(tmp_path / "no_scale.safetensors")])
    assert err.value.code == 2 and "without a weight_scale" in capsys.readouterr().err

    fp8_again, widened = tmp_path / "fp8_again.safetensors", tmp_path / "widened.safetensors"
    convert(out, fp8_again, "fp8_e4m3fn")
    convert(out, widened, "bf16")
    again = load_file(fp8_again)
    assert all(torch.equal(again[k].view(torch.uint8) if again[k].dtype == FP8 else again[k],
                           sd[k].view(torch.uint8) if sd[k].dtype == FP8 else sd[k]) for k in sd)
    wide = load_file(widened)
    assert wide.keys() == bf16_sd.keys() and wide["blocks.1.ffn.0.weight"].dtype == torch.bfloat16
    torch.testing.assert_close(wide["blocks.1.ffn.0.weight"].float(), back, atol=0, rtol=2**-8)


def _fails_cleanly(capsys, tmp_path, source, match: str) -> None:
    out = tmp_path / "out" / "converted.safetensors"
    out.parent.mkdir(exist_ok=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), "-o", str(out), "--dtype", "fp8_e4m3fn"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert match in err, err
    assert list(out.parent.iterdir()) == []  # nothing written, no temporary left


def test_truncated_and_malformed_inputs(tmp_path, capsys, release_like):
    good = tmp_path / "good.safetensors"
    convert(release_like, good)
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    _fails_cleanly(capsys, tmp_path, tmp_path / "cut.safetensors", "cut.safetensors")
    raw = release_like.read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[: len(raw) - 100])
    _fails_cleanly(capsys, tmp_path, tmp_path / "cut.pth", "cut.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    _fails_cleanly(capsys, tmp_path, tmp_path / "junk.safetensors", "junk.safetensors")
    save_file({"encoder.conv.weight": torch.zeros(3)}, tmp_path / "vae.safetensors")
    _fails_cleanly(capsys, tmp_path, tmp_path / "vae.safetensors", "not a Lip Forcing")
    sd = load_file(good)
    del sd["blocks.3.ffn.2.bias"]
    save_file(sd, tmp_path / "incomplete.safetensors")
    _fails_cleanly(capsys, tmp_path, tmp_path / "incomplete.safetensors", "blocks.3.ffn.2.bias")
    _fails_cleanly(capsys, tmp_path, tmp_path / "missing.pth", "missing.pth")


def test_outputs_are_atomic_and_never_replace_inputs(tmp_path, capsys, release_like, monkeypatch):
    out = tmp_path / "out" / "converted.safetensors"
    out.parent.mkdir()
    calls = []

    def failing(weight):  # a failure after the header and some tensors are written
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return real(weight)

    real = convert_module.quantize_rows
    monkeypatch.setattr(convert_module, "quantize_rows", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        convert(release_like, out, "fp8_e4m3fn")
    assert list(out.parent.iterdir()) == []
    monkeypatch.undo()

    out.write_bytes(b"keep me")
    with pytest.raises(SystemExit):
        main(["convert", str(release_like), "-o", str(out)])
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    convert_cli(capsys, release_like, "-o", out, "--overwrite")
    assert load_dit(out).config.dim == 128
    with pytest.raises(SystemExit):
        main(["convert", str(out), "-o", str(out), "--overwrite"])
    assert "is the input" in capsys.readouterr().err
