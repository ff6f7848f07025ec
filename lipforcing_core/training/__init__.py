"""Training of the Lip Forcing models: teacher, stage 1 Diffusion-Forcing init, stage 2 Self-Forcing DMD.

``python -m lipforcing_core train <teacher|df|dmd> --config cfg.json [--set key=value ...]``;
the same code runs in one process or under ``torchrun`` with FSDP2 (see ``distributed``).
"""
