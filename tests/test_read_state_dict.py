import pytest
import torch
from safetensors.torch import save_file

from lipforcing_core.checkpoints import CheckpointError, read_state_dict


def test_reads_safetensors_and_pickle_identically(tmp_path):
    sd = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    save_file(sd, tmp_path / "w.safetensors")
    torch.save(sd, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(sd)
        assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_refuses_arbitrary_pickled_objects(tmp_path):
    torch.save({"cfg": object()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth"):
        read_state_dict(tmp_path / "evil.pth")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
