"""Lip Forcing core library: models, sampling, audio, faces, metrics and training.

Never imports ComfyUI. Submodules are imported on demand so that ``import lipforcing_core``
stays cheap for the ComfyUI front end and the CLI.
"""

__version__ = "0.1.0"
