"""Video autoencoders for Wan2.1 latents: the causal 3D VAE and the TAEHV tiny decoder/encoder.

Both expose streams as objects (``new_encode_stream`` / ``new_decode_stream``), so several
streams can share one model without sharing cache state.
"""

from lipforcing_core.vae.taehv import (
    TAEHV,
    TAEHVConfig,
    TAEHVStream,
    load_taehv,
    taehv_from_state_dict,
)
from lipforcing_core.vae.wan_vae import (
    DecodeStream,
    EncodeStream,
    WanVAE,
    WanVAEConfig,
    denormalize_latent,
    latent_scale,
    load_wan_vae,
    normalize_latent,
    wan_vae_from_state_dict,
)

__all__ = [
    "TAEHV",
    "DecodeStream",
    "EncodeStream",
    "TAEHVConfig",
    "TAEHVStream",
    "WanVAE",
    "WanVAEConfig",
    "denormalize_latent",
    "latent_scale",
    "load_taehv",
    "load_wan_vae",
    "normalize_latent",
    "taehv_from_state_dict",
    "wan_vae_from_state_dict",
]
