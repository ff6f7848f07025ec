"""Bad inputs replayed through the command line and the nodes: one clear line, early, nothing written.

Every row is a mistake a new user makes (a text or PNG file named .wav, a cut-off download, a pickle
with code in it, a model with the wrong audio encoder, an existing output ...). Through the real
entry point (``python -m lipforcing_core``) each must exit with code 2 and print exactly one line on
stderr that names the option and what was expected, with no traceback and no file written. The
checks run before any model is loaded, so every row is quick. Rows a node can receive are replayed
through that node too: it raises the same message, naming the node input.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import warnings
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # first: puts the ComfyUI test double on sys.path

# isort: split
from lipforcing_pack.nodes._types import LipForcingInputError
from lipforcing_pack.nodes.audio import DEMO_LOGMEL, AudioEncode, AudioEncoderLoader
from lipforcing_pack.nodes.face import MEDIAPIPE, FaceAlign
from lipforcing_pack.nodes.loaders import ModelLoader, VAELoader
from lipforcing_pack.nodes.sampler import WINDOWS, Sampler
from lipforcing_pack.nodes.video import LoadVideo
from test_sync import TINY_W2V

from lipforcing_core.atomic import atomic_output
from lipforcing_core.audio.io import load_audio
from lipforcing_core.audio.wav2vec2 import build_model
from lipforcing_core.checkpoints import CheckpointError
from lipforcing_core.cli import main
from lipforcing_core.config import get_preset
from lipforcing_core.demo.recipe import STUDENT_FILE, VAE_FILE
from lipforcing_core.models.dit import LipForcingDiT
from lipforcing_core.vae.wan_vae import WanVAE, WanVAEConfig
from lipforcing_core.video import read_video, write_video

REPO = Path(__file__).resolve().parents[1]


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def write_float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """A mono IEEE-float WAV (format 3), which can hold NaN and values beyond +-1."""
    data = np.asarray(samples, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
    return path


def write_faststart(path: Path, frames: np.ndarray) -> Path:
    """An mp4 with its index first (as web videos are), so a cut-off copy still opens."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    return path


class Evil:
    """Unpickling this would run code (create a marker file): a weights-only load must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def base(tmp_path_factory, media_root) -> Path:
    """A ComfyUI base folder holding every bad file (input/ and models/), shared by CLI and nodes."""
    root = comfy_env.use_base(tmp_path_factory.mktemp("comfy"))
    inp, dits, vaes = root / "input", root / "models" / "diffusion_models", root / "models" / "vae"
    for folder in (dits, vaes, root / "models" / "audio_encoders" / "w2v"):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    clip = read_video(media_root / "latentsync_demo2_video.mp4", size=(270, 480), max_frames=25)
    speech = clip.audio[:, : clip.sample_rate]  # 1 s
    write_video(inp / "clip.mp4", clip.frames, clip.fps, speech, clip.sample_rate)
    write_video(inp / "silent.mp4", clip.frames[:10], clip.fps)
    grey = np.full((25, 240, 320, 3), 128, np.uint8)
    write_video(inp / "grey.mp4", grey, 25.0, speech, clip.sample_rate)
    data = (media_root / "latentsync_demo1_video.mp4").read_bytes()
    (inp / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])
    fast = write_faststart(inp / "fast.mp4", clip.frames).read_bytes()
    (inp / "cut_fast.mp4").write_bytes(fast[: len(fast) // 2])
    (inp / "notes.mp4").write_text("meeting notes, not a video\n")
    (inp / "empty.mp4").write_bytes(b"")
    write_wav(inp / "speech.wav", rng.normal(0, 0.1, 16000))
    (inp / "text.wav").write_text("this is not audio\n")
    (inp / "image.wav").write_bytes((media_root / "latentsync_mask.png").read_bytes())
    (inp / "empty.wav").write_bytes(b"")
    write_wav(inp / "nosamples.wav", np.zeros(0))
    write_wav(inp / "short.wav", rng.normal(0, 0.1, 3200))  # 0.2 s
    write_float_wav(inp / "nan.wav", np.r_[rng.normal(0, 0.1, 8000), np.nan, rng.normal(0, 0.1, 8000)])

    torch.manual_seed(0)
    tiny = LipForcingDiT(get_preset("tiny")).state_dict()
    save_file(tiny, str(dits / "tiny.safetensors"))
    whole = (dits / "tiny.safetensors").read_bytes()
    (dits / "cut.safetensors").write_bytes(whole[: len(whole) // 2])
    (dits / "empty.safetensors").write_bytes(b"")
    save_file({k: v for k, v in tiny.items() if not k.startswith("audio")}, str(dits / "base.safetensors"))
    torch.save({"weight": Evil(root / "PWNED")}, dits / "evil.pth")
    (dits / "junk.pth").write_bytes(pickle.dumps({"weight": Evil(root / "PWNED")}))  # a raw protocol-5 pickle
    torch.save({"epoch": 3, "note": "no tensors here"}, dits / "plain.pth")
    (dits / "demo_student.safetensors").symlink_to(STUDENT_FILE)
    save_file(WanVAE(WanVAEConfig(dim=4)).state_dict(), str(vaes / "vae.safetensors"))
    save_file(WanVAE(WanVAEConfig(dim=4, z_dim=48)).state_dict(), str(vaes / "vae48.safetensors"))
    (vaes / "demo_vae.safetensors").symlink_to(VAE_FILE)
    (vaes / "text.safetensors").write_text("not weights\n")
    w2v = root / "models" / "audio_encoders" / "w2v"
    save_file(build_model(TINY_W2V).state_dict(), str(w2v / "model.safetensors"))
    (w2v / "config.json").write_text(json.dumps(asdict(TINY_W2V) | {"model_type": "wav2vec2"}))
    (root / "bad.json").write_text("{not json")
    (root / "a_file").write_text("x")
    (root / "taken.mp4").write_bytes(b"keep me")
    return root


@dataclass
class Case:
    """One bad input: the command line (``{base}`` = the ComfyUI base folder), the text the one error
    line must hold, and optionally the node that gets the same input (``node(base)`` raises) and the
    node input it must name."""

    name: str
    argv: str
    expect: str
    node: object = None
    node_input: str = ""
    flag: str = ""


def _sync(video="input/clip.mp4", audio="input/speech.wav", out="out.mp4", extra=""):
    audio_arg = f" --audio {{base}}/{audio}" if audio else ""
    return f"sync --video {{base}}/{video}{audio_arg} -o {{base}}/{out} {extra}".strip()


TINY = "--dit {base}/models/diffusion_models/tiny.safetensors --vae {base}/models/vae/vae.safetensors " \
       "--wav2vec {base}/models/audio_encoders/w2v"
DEMO_WITH_W2V = "--dit {base}/models/diffusion_models/demo_student.safetensors " \
                "--vae {base}/models/vae/demo_vae.safetensors --wav2vec {base}/models/audio_encoders/w2v"


def load_video(name):
    return lambda base: LoadVideo.execute(name, 25.0, 0)


def load_model(name):
    return lambda base: ModelLoader.execute(name, "default", "auto")


def encode(samples):
    def run(base):
        encoder = AudioEncoderLoader.execute(DEMO_LOGMEL, "fp32").args[0]
        return AudioEncode.execute(encoder, {"waveform": torch.tensor(samples, dtype=torch.float32).reshape(1, 1, -1),
                                             "sample_rate": 16000}, 25.0, 0)
    return run


def demo_student_with_wav2vec_features(base):
    model = ModelLoader.execute("demo_student.safetensors", "default", "auto").args[0]
    vae = VAELoader.execute("demo_vae.safetensors", "fp32").args[0]
    features = torch.zeros(33, 10752)  # what wav2vec2-base-960h gives for 33 frames
    return Sampler.execute(model, vae, features, torch.zeros(33, 64, 64, 3), torch.zeros(1, 64, 64), 0,
                           "0.999, 0.769, 0", next(iter(WINDOWS)))


def face_align_grey(base):
    return FaceAlign.execute(torch.full((25, 240, 320, 3), 0.5), MEDIAPIPE, 0, 64)


NAN = np.r_[np.zeros(8000), np.nan, np.zeros(8000)]
CASES = [
    Case("text named .wav", _sync(audio="input/text.wav"), "is a text file; expected an audio file", flag="--audio"),
    Case("PNG named .wav", _sync(audio="input/image.wav"), "is a PNG image; expected an audio file", flag="--audio"),
    Case("empty .wav", _sync(audio="input/empty.wav"), "is an empty file; expected an audio file", flag="--audio"),
    Case("WAV without samples", _sync(audio="input/nosamples.wav"), "audio stream is empty", flag="--audio"),
    Case("0.2-s WAV", _sync(audio="input/short.wav"), "at least 9 frames (0.36 s, one generation chunk) expected",
         encode(np.zeros(3200)), "audio", flag="--audio"),
    Case("float WAV with NaN", _sync(audio="input/nan.wav"), "holds NaN or infinite samples; expected finite audio",
         encode(NAN), "audio", flag="--audio"),
    Case("missing audio file", _sync(audio="input/nowhere.wav"), "no such file; expected an audio file",
         flag="--audio"),
    Case("truncated mp4", _sync(video="input/cut.mp4"), "is not a readable video file",
         load_video("cut.mp4"), "video", flag="--video"),
    Case("truncated faststart mp4", _sync(video="input/cut_fast.mp4"), "is truncated:",
         load_video("cut_fast.mp4"), "video", flag="--video"),
    Case("text named .mp4", _sync(video="input/notes.mp4"), "is a text file; expected a video file",
         load_video("notes.mp4"), "video", flag="--video"),
    Case("empty .mp4", _sync(video="input/empty.mp4"), "is an empty file; expected a video file",
         load_video("empty.mp4"), "video", flag="--video"),
    Case("WAV given as --video", _sync(video="input/speech.wav"), "has no video stream (it holds only sound)",
         load_video("speech.wav"), "video", flag="--video"),
    Case("video without audio, no --audio", _sync(video="input/silent.mp4", audio=None),
         "has no sound; give the speech to sync to with --audio", flag="--video"),
    Case("video without a face", _sync(video="input/grey.mp4", extra=TINY), "a visible, roughly frontal face",
         face_align_grey, "images", flag="--video"),
    Case("existing -o", _sync(out="taken.mp4"), "exists; choose another name or pass --overwrite", flag="-o"),
    Case("-o is a folder", _sync(out="input"), "is a folder; expected the name of a file to write", flag="-o"),
    Case("-o under a file", _sync(out="a_file/out.mp4"), "is not a writable folder", flag="-o"),
    Case("truncated .safetensors as --dit", _sync(extra="--dit {base}/models/diffusion_models/cut.safetensors"),
         "is not a readable safetensors file", load_model("cut.safetensors"), "model_name", flag="--dit"),
    Case("empty .safetensors as --dit", _sync(extra="--dit {base}/models/diffusion_models/empty.safetensors"),
         "is not a readable safetensors file", load_model("empty.safetensors"), "model_name", flag="--dit"),
    Case("pickle with code as --dit", _sync(extra="--dit {base}/models/diffusion_models/evil.pth"),
         "is not a plain weights file: it holds Python objects (", load_model("evil.pth"), "model_name",
         flag="--dit"),
    Case("raw pickle with code as --dit", _sync(extra="--dit {base}/models/diffusion_models/junk.pth"),
         "is not a readable torch checkpoint", load_model("junk.pth"), "model_name", flag="--dit"),
    Case("pickle without tensors as --dit", _sync(extra="--dit {base}/models/diffusion_models/plain.pth"),
         "holds no tensors", load_model("plain.pth"), "model_name", flag="--dit"),
    Case("Wan base model as --dit", _sync(extra="--dit {base}/models/diffusion_models/base.safetensors"),
         "has no audio modules", flag="--dit"),
    Case("demo student with the wav2vec2 encoder", _sync(extra=DEMO_WITH_W2V),
         "the model takes 160 audio features per frame but the audio encoder gives 10752",
         demo_student_with_wav2vec_features, "audio_embeds", flag="--dit"),
    Case("48-channel VAE with a Wan2.1 student",
         _sync(extra=TINY.replace("vae/vae.safetensors", "vae/vae48.safetensors")),
         "works on 16-channel latents but the VAE makes 48", flag="--dit"),
    Case("text file as --vae", _sync(extra=TINY.replace("vae/vae.safetensors", "vae/text.safetensors")),
         "is not a readable safetensors file", lambda base: VAELoader.execute("text.safetensors", "fp32"),
         "vae_name", flag="--vae"),
    Case("inspect a truncated .safetensors", "inspect {base}/models/diffusion_models/cut.safetensors",
         "is not a readable safetensors file"),
    Case("inspect a pickle with code", "inspect {base}/models/diffusion_models/evil.pth", "is not a plain weights file"),
    Case("demo --seconds too short", "demo --out {base}/demo --seconds 0.1", "at least 0.4 s", flag="--seconds"),
    Case("bench with an unknown preset", "bench --preset huge --out {base}/b.json --device cpu",
         "unknown DiT preset 'huge'"),
    Case("train with a broken config", "train df --config {base}/bad.json", "not a valid JSON config"),
    Case("analyze a missing teacher", "analyze --teacher {base}/nowhere.pth --clip {base}/nowhere.safetensors",
         "checkpoint file not found"),
]


@dataclass
class Outcome:
    returncode: int
    stderr: str


def _argv(case: Case, base: Path) -> list[str]:
    return case.argv.replace("{base}", str(base)).split()


def _in_process(case: Case, base: Path, capfd) -> Outcome:
    """``main(argv)`` with stderr captured at the file-descriptor level (C libraries' logs included)."""
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # a warning seen in an earlier row must show again
        try:
            code = main(_argv(case, base))
        except SystemExit as stop:
            code = stop.code
    return Outcome(code, capfd.readouterr().err)


def _subprocess(case: Case, base: Path) -> Outcome:
    done = subprocess.run([sys.executable, "-m", "lipforcing_core", *_argv(case, base)], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    return Outcome(done.returncode, done.stderr)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# Rows also run through ``python -m lipforcing_core`` in a fresh process (each start costs seconds, so
# the whole table runs in-process and these few prove the real entry point behaves the same).
ENTRY_POINT_ROWS = ("text named .wav", "pickle with code as --dit", "existing -o", "bench with an unknown preset")


@pytest.fixture(scope="module")
def entry_point(base) -> dict[str, Outcome]:
    cases = [c for c in CASES if c.name in ENTRY_POINT_ROWS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip([c.name for c in cases], pool.map(lambda c: _subprocess(c, base), cases)))


@pytest.fixture(scope="module")
def files_before(base) -> list[str]:
    return _files(base)


def check_one_line(case: Case, done: Outcome) -> str:
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: {case.flag}") and case.expect in lines[0], lines[0]
    assert "weights_only" not in lines[0]  # never torch's hint to disable the safe loader
    return lines[0]


def test_the_table_is_large_enough():
    assert len(CASES) >= 20 and len({c.name for c in CASES}) == len(CASES)
    assert sum(c.node is not None for c in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_prints_one_line_naming_the_input(case, base, files_before, capfd):
    check_one_line(case, _in_process(case, base, capfd))
    assert _files(base) == files_before  # no output, no temporary file, nothing created
    assert (base / "taken.mp4").read_bytes() == b"keep me"
    assert not (base / "PWNED").exists()  # the pickled command never ran


@pytest.mark.parametrize("name", ENTRY_POINT_ROWS)
def test_entry_point_prints_the_same_line(name, base, entry_point, capfd):
    case = next(c for c in CASES if c.name == name)
    assert check_one_line(case, entry_point[name]) == check_one_line(case, _in_process(case, base, capfd))


@pytest.mark.parametrize("case", [c for c in CASES if c.node], ids=[c.name for c in CASES if c.node])
def test_node_raises_the_same_message_naming_its_input(case, base, capfd):
    with pytest.raises(LipForcingInputError) as raised:
        case.node(base)
    message = str(raised.value)
    assert message.startswith(f"Lip Forcing input '{case.node_input}'") and case.expect in message, message
    assert "\n" not in message and "weights_only" not in message
    if case.node_input in ("video", "model_name", "vae_name"):  # the same file through both front ends
        cli_line = check_one_line(case, _in_process(case, base, capfd))
        assert cli_line.removeprefix(f"error: {case.flag} ") in message, (cli_line, message)
    assert not (base / "PWNED").exists()


def test_debug_lets_the_error_through(base):
    """``--debug``: the expected error propagates (Python prints its traceback) instead of one line."""
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        main(["--debug", "inspect", str(base / "models" / "diffusion_models" / "cut.safetensors")])


def test_loud_float_audio_is_scaled_with_a_warning(tmp_path):
    loud = write_float_wav(tmp_path / "loud.wav", 50 * np.sin(np.linspace(0, 200, 16000)))
    with pytest.warns(UserWarning, match="peak at 50"):
        waveform, rate = load_audio(loud)
    assert rate == 16000 and waveform.abs().max().item() == pytest.approx(1.0)
    quiet = write_float_wav(tmp_path / "quiet.wav", 0.5 * np.sin(np.linspace(0, 200, 16000)))
    assert load_audio(quiet)[0].abs().max().item() == pytest.approx(0.5, abs=1e-4)  # in range: untouched


def test_outputs_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_video(tmp_path / "a.mp4", np.zeros((2, 16, 16, 3), np.uint8), 25.0)
        os.umask(0o077)
        write_video(tmp_path / "b.mp4", np.zeros((2, 16, 16, 3), np.uint8), 25.0)
    finally:
        os.umask(old)
    assert (tmp_path / "a.mp4").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.mp4").stat().st_mode & 0o777 == 0o600


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(SystemExit) as stopped, atomic_output(target) as tmp:
        tmp.write_bytes(b"half a video")
        os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the default handler is back


def test_sigterm_to_a_writing_process_cleans_up(tmp_path):
    """The real thing: a separate process killed with SIGTERM in the middle of an atomic write."""
    script = ("import sys, time; from lipforcing_core.atomic import atomic_output\n"
              "with atomic_output(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(b'partial'); print('writing', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.bin")], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary file exists while writing
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_shipped_face_models_load_and_are_checked(tmp_path, monkeypatch):
    from lipforcing_core.face import MediaPipeDetector, ModelNotFoundError, detect

    assert MediaPipeDetector().detect(np.full((120, 160, 3), 128, np.uint8)) == []  # loads offline, no face
    damaged = tmp_path / "models"
    damaged.mkdir()
    for f in detect.MODEL_DIR.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    with (damaged / "face_landmark.tflite").open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    monkeypatch.setattr(detect, "MODEL_DIR", damaged)
    with pytest.raises(ModelNotFoundError, match="face_landmark.tflite is damaged"):
        MediaPipeDetector()
