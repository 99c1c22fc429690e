"""A test oracle: the official E2Style inference, restated as plain functions over the official state_dict.

It shares no code with ``operators/``. It follows the research code's computation literally where that
matters for parity: per-sample weights with a batch-grouped convolution, channel-folded FIR filtering,
``AdaptiveAvgPool2d`` for the heads and the 1024 -> 256 ``face_pool``, 1x1 max-pool shortcuts,
``latent_avg`` added once, refinement on the unclamped pooled reconstruction, stored noise maps.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

SQRT2 = 2**0.5


def fused_lrelu(x, bias):
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * SQRT2


def upfirdn(x, kernel, up, pad0, pad1):
    """Zero insertion, padding, convolution with the flipped kernel; channels folded into the batch."""
    b, c, h, w = x.shape
    out = x.reshape(b * c, 1, h, w)
    if up > 1:
        z = torch.zeros(b * c, 1, h * up, w * up, dtype=x.dtype)
        z[:, :, ::up, ::up] = out
        out = z
    out = F.pad(out, [pad0, pad1, pad0, pad1])
    out = F.conv2d(out, torch.flip(kernel, [0, 1])[None, None])
    return out.reshape(b, c, out.shape[-2], out.shape[-1])


def modulated_conv(sd, p, x, w, demodulate=True, upsample=False):
    weight = sd[p + "weight"]  # [1, out, in, k, k]
    _, out_ch, in_ch, k, _ = weight.shape
    b, _, h, wd = x.shape
    mod_w, mod_b = sd[p + "modulation.weight"], sd[p + "modulation.bias"]
    style = F.linear(w, mod_w * (1 / math.sqrt(mod_w.shape[1])), mod_b * 1.0).view(b, 1, in_ch, 1, 1)
    weight = (1 / math.sqrt(in_ch * k * k)) * weight * style
    if demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, out_ch, 1, 1, 1)
    if upsample:
        weight = weight.transpose(1, 2).reshape(b * in_ch, out_ch, k, k)
        out = F.conv_transpose2d(x.reshape(1, b * in_ch, h, wd), weight, padding=0, stride=2, groups=b)
        out = out.view(b, out_ch, out.shape[-2], out.shape[-1])
        return upfirdn(out, sd[p + "blur.kernel"], 1, 1, 1)
    out = F.conv2d(x.reshape(1, b * in_ch, h, wd), weight.reshape(b * out_ch, in_ch, k, k), padding=k // 2, groups=b)
    return out.view(b, out_ch, out.shape[-2], out.shape[-1])


def styled_conv(sd, p, x, w, noise, upsample=False):
    out = modulated_conv(sd, p + "conv.", x, w, upsample=upsample)
    out = out + sd[p + "noise.weight"] * noise
    return fused_lrelu(out, sd[p + "activate.bias"])


def to_rgb(sd, p, x, w, skip):
    out = modulated_conv(sd, p + "conv.", x, w, demodulate=False) + sd[p + "bias"]
    if skip is not None:
        out = out + upfirdn(skip, sd[p + "upsample.kernel"], 2, 2, 1)
    return out


def generator(sd, ws, noise=None):
    """Rosinality synthesis with input_is_latent=True; ``noise`` defaults to the stored noise buffers."""
    n_blocks = len({m.group(1) for k in sd if (m := re.match(r"to_rgbs\.(\d+)\.", k))})
    if noise is None:
        noise = [sd[f"noises.noise_{i}"] for i in range(2 * n_blocks + 1)]
    x = sd["input.input"].repeat(ws.shape[0], 1, 1, 1)
    x = styled_conv(sd, "conv1.", x, ws[:, 0], noise[0])
    skip = to_rgb(sd, "to_rgb1.", x, ws[:, 1], None)
    for k in range(n_blocks):
        i = 1 + 2 * k
        x = styled_conv(sd, f"convs.{2 * k}.", x, ws[:, i], noise[i], upsample=True)
        x = styled_conv(sd, f"convs.{2 * k + 1}.", x, ws[:, i + 1], noise[i + 1])
        skip = to_rgb(sd, f"to_rgbs.{k}.", x, ws[:, i + 2], skip)
    return skip


def batch_norm(sd, p, x):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"], False, 0.0, 1e-5)


def prelu(sd, p, x):
    return F.prelu(x, sd[p + "weight"])


def ir_se_unit(sd, p, x, stride):
    if p + "shortcut_layer.0.weight" in sd:
        shortcut = batch_norm(sd, p + "shortcut_layer.1.", F.conv2d(x, sd[p + "shortcut_layer.0.weight"], stride=stride))
    else:
        shortcut = F.max_pool2d(x, 1, stride)
    r = batch_norm(sd, p + "res_layer.0.", x)
    r = prelu(sd, p + "res_layer.2.", F.conv2d(r, sd[p + "res_layer.1.weight"], padding=1))
    r = batch_norm(sd, p + "res_layer.4.", F.conv2d(r, sd[p + "res_layer.3.weight"], stride=stride, padding=1))
    se = F.adaptive_avg_pool2d(r, 1)
    se = torch.sigmoid(F.conv2d(F.relu(F.conv2d(se, sd[p + "res_layer.5.fc1.weight"])), sd[p + "res_layer.5.fc2.weight"]))
    return r * se + shortcut


def head(sd, p, x, style_dim):
    x = F.adaptive_avg_pool2d(batch_norm(sd, p + "0.", x), (7, 7)).flatten(1)
    return F.linear(x, sd[p + "3.weight"], sd[p + "3.bias"]).view(x.shape[0], -1, style_dim)


def encoder(sd, p, x, block_starts, style_dim):
    """First/refine stage encoder. ``block_starts``: indices of the first unit of blocks 1-4 (stride 2)."""
    x = prelu(sd, p + "input_layer.2.", batch_norm(sd, p + "input_layer.1.", F.conv2d(x, sd[p + "input_layer.0.weight"], padding=1)))
    parts = []
    for block, head_name in enumerate(("output_layer_5", "output_layer_4", "output_layer_3")):
        for i in range(block_starts[block], block_starts[block + 1]):
            x = ir_se_unit(sd, f"{p}body.{i}.", x, 2 if i == block_starts[block] else 1)
        parts.append(head(sd, f"{p}{head_name}.", x, style_dim))
    return torch.cat(parts[::-1], dim=1)


def e2style_forward(ckpt, x, stage, block_starts, image_size):
    """Official ``E2Style.forward(x, randomize_noise=False, resize=True, return_latents=True)``.

    Returns (images [B, 3, image_size, image_size], codes of every stage).
    """
    sd = ckpt["state_dict"]
    dec = {k[len("decoder.") :]: v for k, v in sd.items() if k.startswith("decoder.")}
    style_dim = dec["conv1.conv.modulation.weight"].shape[1]

    def face_pool(img):
        return F.adaptive_avg_pool2d(img, (image_size, image_size))

    codes = encoder(sd, "encoder_firststage.", x, block_starts, style_dim)
    if ckpt["opts"]["start_from_latent_avg"]:
        codes = codes + ckpt["latent_avg"].repeat(codes.shape[0], 1, 1)
    all_codes = [codes]
    image = generator(dec, codes)
    for i in range(stage - 1):
        delta = encoder(sd, f"encoder_refinestage_list.{i}.", torch.cat((x, face_pool(image)), 1), block_starts, style_dim)
        codes = codes + delta
        all_codes.append(codes)
        image = generator(dec, codes)
    return face_pool(image), all_codes
