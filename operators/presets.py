"""Named model architectures: the official E2Style models and tiny ones for tests and the bundled sample.

A preset fixes the architecture. The number of stages, the first-stage input channels and the use of
``latent_avg`` belong to each checkpoint and are set from it when a file is loaded.
"""

from __future__ import annotations

from operators.e2style import E2StyleConfig, EncoderConfig
from operators.stylegan2 import GeneratorConfig

_PRESETS: dict[str, E2StyleConfig] = {}


def register_preset(name: str, config: E2StyleConfig) -> None:
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    _PRESETS[name] = config


def get_preset(name: str) -> E2StyleConfig:
    try:
        return _PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(_PRESETS))}") from None


def preset_names() -> list[str]:
    return sorted(_PRESETS)


# The released E2Style models: IR-SE50 encoders at 256 px, StyleGAN2 config-f FFHQ 1024 decoder.
register_preset("e2style-ffhq-1024", E2StyleConfig())

# A 64 px generator (10 W+ codes of width 32) and a narrow 1-1-2-1 encoder at 32 px. The heads still pool
# non-divisible maps (16, 8, 4 -> 7) and the reconstruction is a 2x2 box pool, as in the full model.
register_preset(
    "tiny-64",
    E2StyleConfig(
        encoder=EncoderConfig(
            block_widths=(16, 24, 32, 40),
            block_units=(1, 1, 2, 1),
            se_reduction=4,
            head_codes=(5, 3, 2),
            style_dim=32,
        ),
        generator=GeneratorConfig(
            resolution=64, style_dim=32, mapping_layers=2, channel_multiplier=1, channel_base=512, channel_max=32
        ),
        image_size=32,
    ),
)
