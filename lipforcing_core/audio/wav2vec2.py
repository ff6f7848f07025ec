"""wav2vec2 audio encoder: Hugging Face checkpoints loaded into torchaudio's ``Wav2Vec2Model``.

Lip Forcing (like OmniAvatar) conditions on ``facebook/wav2vec2-base-960h``. Users hold it as a
Hugging Face folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``) or as one
file. This module reads either, renames the HF keys to torchaudio's module names, bakes the
positional-conv weight norm (``weight_g/weight_v`` or ``parametrizations.weight.original0/1``)
into a plain kernel, and exposes the three stages the OmniAvatar recipe needs separately:
the CNN feature extractor, the feature projection, and the transformer's hidden states.
No ``transformers`` dependency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torchaudio.models import Wav2Vec2Model, wav2vec2_model

from lipforcing_core.checkpoints import CheckpointError, StateDict, materialize, read_shapes, read_state_dict

STANDARD_KERNELS = (10, 3, 3, 3, 3, 2, 2)
STANDARD_STRIDES = (5, 2, 2, 2, 2, 2, 2)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Heads and buffers a wav2vec2 file may carry that the feature encoder does not use.
IGNORED_PREFIXES = ("lm_head.", "masked_spec_embed", "quantizer.", "project_q.", "project_hid.")
POS_CONV = "encoder.transformer.pos_conv_embed.conv."


@dataclass(frozen=True)
class Wav2Vec2Config:
    """The shape of a post-LN wav2vec2 (the base-960h family); field names follow HF's config."""

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = STANDARD_KERNELS
    conv_stride: tuple[int, ...] = STANDARD_STRIDES
    conv_bias: bool = False
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16

    @property
    def feature_dim(self) -> int:
        """Width of the per-frame feature: last_hidden_state + (num_layers + 1) hidden states."""
        return (self.num_hidden_layers + 2) * self.hidden_size

    @property
    def hop(self) -> int:
        """Input samples per CNN frame (320 for the standard stack)."""
        hop = 1
        for stride in self.conv_stride:
            hop *= stride
        return hop

    @property
    def receptive_field(self) -> int:
        """Input samples seen by one CNN frame (400 for the standard stack)."""
        field, jump = 1, 1
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            field += (kernel - 1) * jump
            jump *= stride
        return field

    @classmethod
    def from_hf(cls, cfg: dict, source: str = "config.json") -> Wav2Vec2Config:
        """Read an HF ``Wav2Vec2Config`` dict, rejecting variants this encoder does not implement."""
        required = {
            "feat_extract_norm": "group",
            "do_stable_layer_norm": False,
            "hidden_act": "gelu",
            "feat_extract_activation": "gelu",
            "layer_norm_eps": 1e-5,
        }
        for key, expected in required.items():
            if key in cfg and cfg[key] != expected:
                raise CheckpointError(
                    f"{source}: unsupported wav2vec2 variant ({key}={cfg[key]!r}, expected {expected!r}); "
                    "Lip Forcing uses the post-LN base-960h family (facebook/wav2vec2-base-960h)"
                )
        fields = {f: cfg[f] for f in asdict(cls()) if f in cfg}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    @classmethod
    def infer(cls, sd: StateDict, source: str = "checkpoint") -> Wav2Vec2Config:
        """Recover the config from tensor shapes (torchaudio key names) when no config.json exists.

        Strides are not stored in the weights: only the standard wav2vec2 conv stack is accepted,
        and heads are assumed 64 wide (as in every released wav2vec2).
        """
        try:
            return cls._infer(sd, source)
        except KeyError as err:
            raise CheckpointError(f"{source}: incomplete wav2vec2 checkpoint, missing {err}") from err

    @classmethod
    def _infer(cls, sd: StateDict, source: str) -> Wav2Vec2Config:
        num_convs = _count(sd, r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight")
        convs = [sd[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in range(num_convs)]
        kernels = tuple(w.shape[2] for w in convs)
        if kernels != STANDARD_KERNELS:
            raise CheckpointError(
                f"{source}: conv kernels {kernels} are not the standard wav2vec2 stack {STANDARD_KERNELS}; "
                "the strides cannot be inferred, put the model's config.json beside the weights"
            )
        if "feature_extractor.conv_layers.1.layer_norm.weight" in sd:
            raise CheckpointError(
                f"{source}: layer-norm feature extractor (stable-LN wav2vec2) is not supported; expected base-960h"
            )
        hidden = sd["encoder.feature_projection.projection.weight"].shape[0]
        if hidden % 64:
            raise CheckpointError(
                f"{source}: cannot infer the attention head count for hidden size {hidden} (not a multiple of 64); "
                "put the model's config.json beside the weights"
            )
        pos = sd[POS_CONV + "weight"]
        return cls(
            conv_dim=tuple(w.shape[0] for w in convs),
            conv_bias="feature_extractor.conv_layers.0.conv.bias" in sd,
            hidden_size=hidden,
            num_hidden_layers=_count(sd, r"encoder\.transformer\.layers\.(\d+)\.attention\.q_proj\.weight"),
            num_attention_heads=hidden // 64,
            intermediate_size=sd["encoder.transformer.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
            num_conv_pos_embeddings=pos.shape[2],
            num_conv_pos_embedding_groups=hidden // pos.shape[1],
        )


PRESETS = {"base-960h": Wav2Vec2Config()}


def _count(sd: StateDict, pattern: str) -> int:
    indices = {int(m.group(1)) for k in sd if (m := re.fullmatch(pattern, k))}
    return max(indices) + 1 if indices else 0


def build_model(config: Wav2Vec2Config) -> Wav2Vec2Model:
    """torchaudio's Wav2Vec2Model in eval form (no dropout) with the pos-conv weight norm removed."""
    model = wav2vec2_model(
        extractor_mode="group_norm",
        extractor_conv_layer_config=list(zip(config.conv_dim, config.conv_kernel, config.conv_stride)),
        extractor_conv_bias=config.conv_bias,
        encoder_embed_dim=config.hidden_size,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=config.num_conv_pos_embeddings,
        encoder_pos_conv_groups=config.num_conv_pos_embedding_groups,
        encoder_num_layers=config.num_hidden_layers,
        encoder_num_heads=config.num_attention_heads,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=config.intermediate_size,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=False,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    )
    parametrize.remove_parametrizations(model.encoder.transformer.pos_conv_embed.conv, "weight")
    return model.eval()


def hf_to_torchaudio(sd: StateDict) -> StateDict:
    """Rename HF wav2vec2 keys (with or without ``wav2vec2.``) to torchaudio's and bake weight norm.

    HF ``feature_projection.*`` becomes ``encoder.feature_projection.*`` and HF ``encoder.*``
    becomes ``encoder.transformer.*``; keys already in torchaudio form pass through. The
    positional conv kernel is ``g · v / ‖v‖`` with the norm taken per kernel tap (dim=2).
    """
    out: StateDict = {}
    for key, value in sd.items():
        key = key.removeprefix("wav2vec2.")
        if key.startswith(IGNORED_PREFIXES):
            continue
        if key.startswith("feature_projection."):
            key = "encoder." + key
        elif key.startswith("encoder.") and not key.startswith(("encoder.transformer.", "encoder.feature_projection.")):
            key = "encoder.transformer." + key.removeprefix("encoder.")
        out[key] = value
    g = _pop_any(out, POS_CONV + "weight_g", POS_CONV + "parametrizations.weight.original0")
    v = _pop_any(out, POS_CONV + "weight_v", POS_CONV + "parametrizations.weight.original1")
    if g is not None and v is not None:
        out[POS_CONV + "weight"] = torch._weight_norm(v, g, 2)
    return out


def _pop_any(sd: StateDict, *keys: str) -> Tensor | None:
    for key in keys:
        if key in sd:
            return sd.pop(key)
    return None


class AudioEncoder(nn.Module):
    """A loaded wav2vec2 with the stage-wise forward the OmniAvatar feature recipe needs."""

    def __init__(self, model: Wav2Vec2Model, config: Wav2Vec2Config):
        super().__init__()
        self.model = model
        self.config = config

    @property
    def device(self) -> torch.device:
        return self.model.encoder.feature_projection.projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.encoder.feature_projection.projection.weight.dtype

    def cnn_features(self, input_values: Tensor, chunk_frames: int | None = None) -> Tensor:
        """Conv stack over ``[B, N]`` samples → ``[B, T_cnn, C]`` (about 50 Hz).

        With ``chunk_frames`` the stack runs on overlapping sample slices of that many output
        frames, and the layer-0 GroupNorm uses statistics gathered over the whole clip in a
        first pass, so the result equals the one-shot pass up to float rounding while peak
        memory no longer grows with the clip length.
        """
        layers = self.model.feature_extractor.conv_layers
        if chunk_frames is None or input_values.shape[-1] <= chunk_frames * self.config.hop + self.config.receptive_field:
            return self.model.feature_extractor(input_values, None)[0]
        mean, inv_std = self._layer0_stats(input_values, chunk_frames)
        norm = layers[0].layer_norm
        total = (input_values.shape[-1] - self.config.receptive_field) // self.config.hop + 1
        pieces = []
        for start in range(0, total, chunk_frames):
            stop = min(start + chunk_frames, total)
            x = input_values[:, start * self.config.hop : (stop - 1) * self.config.hop + self.config.receptive_field]
            x = layers[0].conv(x[:, None])
            x = (x - mean) * inv_std * norm.weight[:, None] + norm.bias[:, None]
            x = nn.functional.gelu(x)
            for layer in layers[1:]:
                x = nn.functional.gelu(layer.conv(x))
            pieces.append(x.transpose(1, 2))
        return torch.cat(pieces, dim=1)

    def _layer0_stats(self, input_values: Tensor, chunk_frames: int) -> tuple[Tensor, Tensor]:
        """Per-channel mean and 1/sqrt(var + eps) of the first conv's output over the whole clip."""
        conv = self.model.feature_extractor.conv_layers[0].conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        total = (input_values.shape[-1] - kernel) // stride + 1
        step = chunk_frames * self.config.hop // stride
        acc = torch.zeros(2, input_values.shape[0], conv.out_channels, 1, dtype=torch.float64, device=input_values.device)
        for start in range(0, total, step):
            stop = min(start + step, total)
            y = conv(input_values[:, None, start * stride : (stop - 1) * stride + kernel]).double()
            acc[0] += y.sum(-1, keepdim=True)
            acc[1] += y.square().sum(-1, keepdim=True)
        mean = acc[0] / total
        var = (acc[1] / total - mean.square()).clamp_min(0)
        eps = self.model.feature_extractor.conv_layers[0].layer_norm.eps
        return mean.to(input_values.dtype), (var + eps).rsqrt().to(input_values.dtype)

    def project(self, features: Tensor) -> Tensor:
        """Feature projection: LayerNorm over channels, then Linear to hidden size."""
        return self.model.encoder.feature_projection(features)

    def hidden_states(self, x: Tensor) -> Iterator[Tensor]:
        """Yield HF's ``hidden_states`` of the post-LN encoder for projected ``[B, L, H]`` input.

        State 0 is ``LayerNorm(x + pos_conv(x))``; state l is layer l's output. The last one is
        also ``last_hidden_state`` (post-LN has no final norm).
        """
        transformer = self.model.encoder.transformer
        x = transformer.layer_norm(x + transformer.pos_conv_embed(x))
        yield x
        for layer in transformer.layers:
            x = layer(x)[0]
            yield x


def load_wav2vec2(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> AudioEncoder:
    """Load a wav2vec2 (base-960h family) from an HF folder or a single weight file.

    The config comes from ``config.json`` in the folder / beside the file when it describes a
    wav2vec2, else it is inferred from the tensor shapes. Raises ``CheckpointError`` when the
    file is not a wav2vec2 checkpoint or does not match its config.
    """
    weights, hf_config = _locate(Path(path))
    sd = hf_to_torchaudio(_unwrap(read_state_dict(weights), weights))
    if "feature_extractor.conv_layers.0.conv.weight" not in sd or "encoder.feature_projection.projection.weight" not in sd:
        sample = ", ".join(list(sd)[:5]) or "no tensors"
        raise CheckpointError(
            f"{weights} is not a wav2vec2 checkpoint: expected keys like 'feature_extractor.conv_layers.0.conv.weight' "
            f"and 'feature_projection.projection.weight' (optionally prefixed 'wav2vec2.'), found {sample}"
        )
    config = (
        Wav2Vec2Config.from_hf(hf_config, str(weights.parent / "config.json"))
        if hf_config
        else Wav2Vec2Config.infer(sd, str(weights))
    )
    try:
        model = materialize(lambda: build_model(config), sd, what=f"its wav2vec2 config {config}",
                            dtype=dtype, device=device)
    except CheckpointError as err:
        raise CheckpointError(f"{weights}: {err}") from err
    return AudioEncoder(model, config).eval()


def feature_width(path: str | Path) -> int:
    """Per-frame feature width, (layers + 2) x hidden, of the wav2vec2 at ``path`` (as for
    :func:`load_wav2vec2`), from its config.json or its tensor shapes; no weights are loaded."""
    weights, hf_config = _locate(Path(path))
    if hf_config:
        return Wav2Vec2Config.from_hf(hf_config, str(weights.parent / "config.json")).feature_dim
    shapes = read_shapes(weights)
    hidden = [shape[0] for key, (shape, _) in shapes.items() if key.endswith("feature_projection.projection.weight")]
    layers = {m[1] for key in shapes if (m := re.search(r"encoder\.(?:transformer\.)?layers\.(\d+)\.", key))}
    if not hidden or not layers:
        raise CheckpointError(f"{weights} is not a wav2vec2 checkpoint: expected a feature projection and encoder "
                              "layers (keys like 'feature_projection.projection.weight')")
    return (len(layers) + 2) * hidden[0]


def _locate(path: Path) -> tuple[Path, dict | None]:
    """The weight file and, if present and a wav2vec2 one, the HF config dict beside it."""
    if path.is_dir():
        found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not found:
            raise CheckpointError(f"{path} holds no wav2vec2 weights: expected one of {', '.join(WEIGHT_FILES)}")
        path = found[0]
    elif not path.is_file():
        raise CheckpointError(f"wav2vec2 checkpoint not found: {path}")
    config_file = path.parent / "config.json"
    if not config_file.is_file():
        return path, None
    try:
        cfg = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config_file} is not a readable JSON config: {err}") from err
    return path, cfg if isinstance(cfg, dict) and cfg.get("model_type") == "wav2vec2" else None


def _unwrap(sd: dict, source: Path) -> StateDict:
    """Accept ``{"state_dict": {...}}`` / ``{"model": {...}}`` wrappers around the tensors."""
    for key in ("state_dict", "model"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{source} is not a wav2vec2 checkpoint: expected a flat mapping of tensors")
    return sd
