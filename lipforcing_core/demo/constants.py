"""The demo's fixed sizes, seed split and shipped weight files, with no imports beyond ``pathlib``, so
that a front end (ComfyUI at start-up) can list them without loading the demo's code."""

from pathlib import Path

DEMO_SIZE = 64  # side of the demo's aligned face frames (the whole frame is the face)
HELDOUT_BASE = 1_000_000  # first identity/utterance seed of the held-out split; lower seeds are training data

WEIGHTS_DIR = Path(__file__).parent / "weights"  # one subfolder per ComfyUI model folder
VAE_FILE = WEIGHTS_DIR / "vae" / "demo_vae.safetensors"
SYNCNET_FILE = WEIGHTS_DIR / "syncnet" / "demo_syncnet.safetensors"
TEACHER_FILE = WEIGHTS_DIR / "diffusion_models" / "demo_teacher.safetensors"
STUDENT_FILE = WEIGHTS_DIR / "diffusion_models" / "demo_student.safetensors"

# importing this module registers the demo's architectures (its SyncNet) with lipforcing_core.registry,
# so the library's loaders open the files above; front ends name it with registry.add_plugin
LOADERS_MODULE = f"{__package__}.recipe"
