"""Face nodes: mouth mask and paste-back, on the golden clip's frames and alignment points."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
import folder_paths
from comfy_api.latest import io
from comfy_executor import Executor, WorkflowError
from lipforcing_pack.nodes import face
from lipforcing_pack.nodes._types import LipForcingInputError, image_from_frames

from lipforcing_core.face import FaceAligner, MediaPipeDetector, ModelNotFoundError
from lipforcing_core.face.align import align_points
from lipforcing_core.face.mask import load_mouth_mask
from lipforcing_core.face.paste import paste_back
from lipforcing_core.pipeline import pixel_mask


@pytest.fixture(scope="module")
def clip(golden_root):
    from safetensors.torch import load_file

    inputs = load_file(str(golden_root / "face" / "inputs.safetensors"))
    frames = inputs["frames"][:3].numpy()
    alignment = align_points(frames, list(inputs["points3"][:3].numpy()))
    return frames, alignment


@pytest.fixture(scope="module")
def mediapipe():
    try:
        return MediaPipeDetector()
    except ModelNotFoundError as err:
        pytest.skip(f"MediaPipe face models not installed: {err}")


@pytest.fixture()
def comfy_base(tmp_path):
    folder_paths.set_base_path(str(tmp_path))
    (tmp_path / "input").mkdir()
    yield tmp_path
    folder_paths.set_base_path(str(tmp_path / "unused"))


def test_face_align_at_another_size(clip, mediapipe):
    frames, _ = clip
    faces, _ = face.FaceAlign.execute(image_from_frames(frames[:1]), face.MEDIAPIPE, 0, 64).args
    expected = FaceAligner(mediapipe, size=64).align(frames[:1])
    assert faces.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal((faces * 255).round().byte().numpy(), expected.crops)


def test_face_align_is_the_core_aligner(clip, mediapipe):
    frames, _ = clip
    faces, alignment = face.FaceAlign.execute(image_from_frames(frames), face.MEDIAPIPE, 0).args
    expected = FaceAligner(mediapipe).align(frames)
    assert faces.shape == (3, 512, 512, 3) and alignment.has_face.all()
    np.testing.assert_array_equal((faces * 255).round().byte().numpy(), expected.crops)
    np.testing.assert_array_equal(alignment.transforms, expected.transforms)


def test_face_align_explains_a_clip_without_face(mediapipe):
    with pytest.raises(LipForcingInputError, match="'images': images: no frame of 2 contains a face"):
        face.FaceAlign.execute(torch.zeros(2, 64, 64, 3), face.MEDIAPIPE, 0)


def test_face_align_explains_missing_detector_models(tmp_path):
    blank = torch.zeros(2, 64, 64, 3)
    comfy_env.use_base(tmp_path)
    with pytest.raises(LipForcingInputError, match="'detector': InsightFace models not found"):
        face.FaceAlign.execute(blank, face.INSIGHTFACE, 0)


def test_built_in_mouth_mask_is_the_core_mask_in_comfyui_convention():
    (mask,) = face.MouthMask.execute(face.BUILT_IN_MASK, 512).args
    assert mask.shape == (1, 512, 512) and mask.dtype == torch.float32
    torch.testing.assert_close(mask[0], torch.from_numpy(1.0 - load_mouth_mask(None, 512)).float())
    assert mask[0, 400, 256] == 1 and mask[0, 10, 256] == 0  # mouth regenerated, forehead kept


def test_mask_file_comes_from_the_input_folder_only(comfy_base):
    keep = np.full((256, 256, 3), 255, np.uint8)
    keep[128:, :, :] = 0
    Image.fromarray(keep).save(comfy_base / "input" / "my_mask.png")
    (comfy_base / "secret.png").write_bytes((comfy_base / "input" / "my_mask.png").read_bytes())
    options = face.MouthMask.define_schema().inputs[0].options
    assert options == [face.BUILT_IN_MASK, "my_mask.png"]
    (mask,) = face.MouthMask.execute("my_mask.png", 64).args
    assert mask[0, 0, 0] == 0 and mask[0, -1, 0] == 1
    with pytest.raises(LipForcingInputError, match="'mask_image'.*input folder"):
        face.MouthMask.execute("../secret.png", 64)
    workflow = {"1": {"class_type": "LipForcingMouthMask", "inputs": {"mask_image": "../secret.png", "size": 64}}}
    with pytest.raises(WorkflowError, match="is not one of"):
        Executor(face.NODES).run(workflow)


def test_paste_back_node_is_the_core_paste_back(clip):
    frames, alignment = clip
    generated = 255 - alignment.crops
    mouth = face.MouthMask.execute(face.BUILT_IN_MASK, 512).args[0]
    (out,) = face.PasteBack.execute(image_from_frames(frames), image_from_frames(generated), alignment, mouth).args
    expected = paste_back(frames, generated, alignment.transforms, 1.0 - mouth[0].double().numpy(),
                          alignment.crops, alignment.has_face)
    np.testing.assert_array_equal((out * 255).round().byte().numpy(), expected)
    assert not np.array_equal(expected, frames)
    (whole,) = face.PasteBack.execute(image_from_frames(frames), image_from_frames(generated), alignment).args
    np.testing.assert_array_equal((whole * 255).round().byte().numpy(),
                                  paste_back(frames, generated, alignment.transforms, None))


def test_paste_back_reports_progress_and_stops_on_cancel(clip, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    frames, alignment = clip
    images, faces = image_from_frames(frames), image_from_frames(alignment.crops)
    monkeypatch.setattr(face, "PASTE_CHUNK", 1)
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total, preview is not None))
        if value == 2:
            mm.interrupt_current_processing()

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            face.PasteBack.execute(images, faces, alignment)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert seen == [(1, 3, True), (2, 3, True)]


def test_paste_back_follows_the_sampler_length_rule(clip):
    frames, alignment = clip
    generated = 255 - alignment.crops
    (short,) = face.PasteBack.execute(image_from_frames(frames), image_from_frames(generated[:2]), alignment).args
    np.testing.assert_array_equal((short * 255).round().byte().numpy(),
                                  paste_back(frames[:2], generated[:2], alignment.transforms[:2], None))
    order = [0, 1, 2, 1, 0]  # ping-pong extension of 3 frames to 5
    (long,) = face.PasteBack.execute(image_from_frames(frames), image_from_frames(generated[order]), alignment).args
    np.testing.assert_array_equal((long * 255).round().byte().numpy(),
                                  paste_back(frames[order], generated[order], alignment.transforms[order], None))


def test_paste_back_explains_mismatched_inputs(clip):
    frames, alignment = clip
    images, faces = image_from_frames(frames), image_from_frames(alignment.crops)
    with pytest.raises(LipForcingInputError, match="'images': has 2 frames but the alignment has 3"):
        face.PasteBack.execute(images[:2], faces[:2], alignment)
    with pytest.raises(LipForcingInputError, match="'mouth_mask': expected a 512x512 MASK"):
        face.PasteBack.execute(images, faces, alignment, torch.zeros(1, 64, 64))


def test_paste_back_in_a_workflow(clip):
    frames, alignment = clip

    class AlignedClip(io.ComfyNode):  # test-only source: the golden frames and their alignment
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="TestAlignedClip", inputs=[], outputs=[
                io.Image.Output("frames"), io.Image.Output("faces"), face.FaceAlignment.Output("alignment")])

        @classmethod
        def execute(cls):
            return io.NodeOutput(image_from_frames(frames), image_from_frames(alignment.crops), alignment)

    workflow = {
        "1": {"class_type": "TestAlignedClip", "inputs": {}},
        "2": {"class_type": "LipForcingMouthMask", "inputs": {"mask_image": face.BUILT_IN_MASK, "size": 512}},
        "3": {"class_type": "LipForcingPasteBack",
              "inputs": {"images": ["1", 0], "faces": ["1", 1], "alignment": ["1", 2], "mouth_mask": ["2", 0]}},
    }
    result = Executor([AlignedClip, *face.NODES]).run(workflow)
    assert result.outputs["3"][0].shape == (3, *frames.shape[1:])
    assert result.progress == [("3", 3, 3, True)]  # one update per chunk of frames, with a preview
    # pasting the aligned originals back over themselves barely changes the frames
    diff = np.abs((result.outputs["3"][0] * 255).round().numpy() - frames.astype(np.float64))
    assert diff.mean() < 1.0


def test_paste_back_without_alignment_composites_the_mouth():
    """The demo path: images are the aligned faces; the generated mouth replaces theirs, nothing is warped."""
    rng = np.random.default_rng(0)
    source, generated = (rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8) for _ in range(2))
    for size in (64, 256):  # a mask at another size is resized to the faces, as the sampler does
        mouth = face.MouthMask.execute(face.BUILT_IN_MASK, size).args[0]
        keep = pixel_mask(1.0 - mouth[0].numpy(), (64, 64)).numpy() > 0.5
        if size == 64:
            np.testing.assert_array_equal(keep, load_mouth_mask(None, 64) > 0.5)
        (out,) = face.PasteBack.execute(image_from_frames(source), image_from_frames(generated[:3]),
                                        mouth_mask=mouth).args
        out = (out * 255).round().byte().numpy()
        assert out.shape == (3, 64, 64, 3)  # the sampler's length rule: 5 source frames cut to 3
        np.testing.assert_array_equal(out[:, keep], source[:3][:, keep])
        np.testing.assert_array_equal(out[:, ~keep], generated[:3][:, ~keep])
        assert (~keep).sum() > 100


def test_paste_back_without_alignment_explains_bad_inputs():
    faces = image_from_frames(np.zeros((2, 64, 64, 3), np.uint8))
    mouth = face.MouthMask.execute(face.BUILT_IN_MASK, 64).args[0]
    with pytest.raises(LipForcingInputError, match="'mouth_mask': is required when no alignment is wired"):
        face.PasteBack.execute(faces, faces)
    with pytest.raises(LipForcingInputError, match="'images': are 128x128 but the generated faces are 64x64"):
        face.PasteBack.execute(image_from_frames(np.zeros((2, 128, 128, 3), np.uint8)), faces, mouth_mask=mouth)
    with pytest.raises(LipForcingInputError, match="'mouth_mask': mask is 64x32 but the frames are 64x64"):
        face.PasteBack.execute(faces, faces, mouth_mask=torch.zeros(1, 64, 32))
