"""StyleGAN2 generator in plain PyTorch, with the rosinality checkpoint layout."""

from operators.stylegan2.fir import make_fir_kernel, upfirdn2d
from operators.stylegan2.generator import NOISE_MODES, Generator, GeneratorConfig, NoiseMode
from operators.stylegan2.layers import MODULATION_FORMS, ModulatedConv2d, ModulationForm, bias_leaky_relu

__all__ = [
    "Generator",
    "GeneratorConfig",
    "MODULATION_FORMS",
    "ModulatedConv2d",
    "ModulationForm",
    "NOISE_MODES",
    "NoiseMode",
    "bias_leaky_relu",
    "make_fir_kernel",
    "upfirdn2d",
]
