"""Sampling: noise schedules and loops built on the DiT's forward passes."""
