"""The U-Net family: ``UNet``, and ``UNetConfig`` with its presets and stride / receptive-field
arithmetic (defined in ``gigaseg.options``, which does not import torch; re-exported here).

Every layer is local (convolutions, pointwise activations, nearest upsampling, concatenation),
so the network can be evaluated tile by tile with halos and give exactly the whole-image
result (see ``gigaseg.engine``). There are no normalization layers.

Architecture, for a config of depth D with channels ``c_1..c_D`` and strides ``s_1..s_D``:

    e_0 = x                                   (3 channels, full resolution)
    e_i = act(conv_{k_enc[i]}, stride s_i)(e_{i-1})     i = 1..D   (c_i channels)
    d_D = e_D
    d_i = act(conv_{k_dec[i]}(cat(up_{s_{i+1}}(d_{i+1}), e_i)))    i = D-1..1
    logits = conv_{k_dec[0]}(cat(up_{s_1}(d_1), x))     (out_channels, full resolution)

so there is a skip connection at every level, full resolution included. The input is
zero-padded at the bottom and right to a multiple of the total stride, and the logits are
cropped back to the input's height and width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .options import PRESETS, UNetConfig, preset

__all__ = ["UNetConfig", "UNet", "PRESETS", "preset", "count_parameters", "layer_table"]

#: The layer of each name in ``gigaseg.options.ACTIVATIONS`` (a test keeps the two equal).
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(),
    "gelu": lambda: nn.GELU(),
    "silu": lambda: nn.SiLU(),
    "tanh": lambda: nn.Tanh(),
}


class StridedConv2d(nn.Conv2d):
    """A centred ("same"-padded) convolution with faster gradients on CPU.

    Same parameters and forward values as ``nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2)``
    (odd ``k``). See NOTE [Convolution gradients].
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv(x, self.weight, self.bias, self.stride[0])


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """Centred convolution of odd kernel size, with the custom backward when it is needed."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        out: torch.Tensor = _ConvFunction.apply(x, weight, bias, stride)
        return out
    return F.conv2d(x, weight, bias, stride=stride, padding=weight.shape[-1] // 2)


# NOTE [Convolution gradients]
# PyTorch's CPU kernel for the weight gradient of a large-kernel, high-stride convolution with
# very few channels (the paper model's 15 x 15, stride-4, 3 -> 2 first layer) is ~15x slower
# than the forward pass, and its kernels take slow paths when a 1-channel gradient arrives with
# NCHW strides (the head's). The backward below hands the kernels channels-last gradients and
# computes strided weight gradients through an exact rewrite: a stride-s convolution equals a
# stride-1 convolution of the space-to-depth (pixel-unshuffled) input with a rearranged kernel,
#   out[j] = sum_t W[t + r] x[s j + t] = sum_A sum_d W'[s A + d] xs[d, j + A],
# where x is padded by P = ceil(r / s) * s on the top/left, W' is W shifted by P - r and
# zero-padded to Kp = ceil((P + r + 1) / s) * s taps, and xs = pixel_unshuffle(x_padded, s).
# Its weight gradient is a well-shaped stride-1 problem. The forward pass is the plain
# convolution, so forward values are identical and gradients equal up to summation order
# (tests/test_model.py checks both against plain autograd).


def _s2d_geometry(k: int, s: int) -> tuple[int, int, int]:
    r = k // 2
    pad = -(-r // s) * s
    taps = -(-(pad + r + 1) // s) * s
    return r, pad, taps


def _space_to_depth(x: torch.Tensor, s: int, pad: int, a: int) -> torch.Tensor:
    """``pixel_unshuffle`` of ``x`` zero-padded by ``pad`` on the top/left and enough on the
    bottom/right for ``ceil(h / s) + a - 1`` rows and columns of blocks, in channels-last
    memory order (the weight-gradient kernel and the copy are both faster that way)."""
    n, c, h, w = x.shape
    ho, wo = -(-h // s), -(-w // s)
    rows, cols = ho + a - 1, wo + a - 1
    if h % s or w % s or pad % s:
        xs = F.pixel_unshuffle(F.pad(x, (pad, s * cols - pad - w, pad, s * rows - pad - h)), s)
        return xs.contiguous(memory_format=torch.channels_last)
    # one copy instead of pad + unshuffle: write x's blocks straight into place (NHWC, channel
    # index c * s * s + dy * s + dx as in pixel_unshuffle)
    pb = pad // s
    xs = x.new_empty((n, rows, cols, c * s * s))
    xs[:, :pb].zero_()
    xs[:, pb + ho:].zero_()
    xs[:, pb:pb + ho, :pb].zero_()
    xs[:, pb:pb + ho, pb + wo:].zero_()
    blocks = x.permute(0, 2, 3, 1).reshape(n, ho, s, wo, s, c).permute(0, 1, 3, 5, 2, 4)
    xs.view(n, rows, cols, c, s, s)[:, pb:pb + ho, pb:pb + wo].copy_(blocks)
    return xs.permute(0, 3, 1, 2)


class _ConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                s: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.s = s
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride=s, padding=weight.shape[-1] // 2)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                          torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        s = ctx.s
        c_out, c_in, k, _ = weight.shape
        if x.is_contiguous(memory_format=torch.channels_last):
            grad_out = channels_last(grad_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0] or (ctx.needs_input_grad[1] and s == 1):
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [s, s], [k // 2, k // 2], [1, 1], False, [0, 0], 1,
                [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and s == 1, False],
            )
        if ctx.needs_input_grad[1] and s > 1:
            r, pad, taps = _s2d_geometry(k, s)
            a = taps // s
            xs = _space_to_depth(x, s, pad, a)
            w2 = weight.new_empty((c_out, c_in * s * s, a, a))
            g2 = torch.ops.aten.convolution_backward(
                channels_last(grad_out), xs, w2, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [False, True, False],
            )[1]
            g_full = g2.reshape(c_out, c_in, s, s, a, a).permute(0, 1, 4, 2, 5, 3).reshape(c_out, c_in, taps, taps)
            lo = pad - r
            grad_w = g_full[:, :, lo:lo + k, lo:lo + k].contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None


class _ConvAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, activation: str | None) -> None:
        super().__init__()
        self.conv = StridedConv2d(c_in, c_out, k, stride=stride, padding=k // 2)
        if activation is not None:
            self.act = _ACTIVATIONS[activation]()


class UNet(nn.Module):
    """Fully convolutional U-Net; see the module docstring for the architecture.

    Args:
        config: the hyperparameters; ``UNet()`` builds the ``paper`` preset.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        c = (config.in_channels, *config.channels)
        self.encoder = nn.ModuleList(
            _ConvAct(c[i], c[i + 1], config.encoder_kernels[i], config.strides[i], config.activation)
            for i in range(config.depth)
        )
        # decoder[i] produces d_{i+1} for i >= 1 ... kept in level order: decoder[0] is the head.
        self.decoder = nn.ModuleList(
            _ConvAct(
                c[i + 2] + c[i + 1],
                c[i + 1],
                config.decoder_kernels[i + 1],
                1,
                config.activation,
            )
            for i in range(config.depth - 1)
        )
        self.head = _ConvAct(c[1] + c[0], config.out_channels, config.decoder_kernels[0], 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x``.

        Args:
            x: (N, C, H, W) floats, RGB in [0, 1] (uint8 / 255); any H and W.

        Returns:
            (N, out_channels, H, W) logits at the input's full resolution (one channel: a
            sigmoid's; several: the classes', for a softmax).
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"UNet expects an (N, {cfg.in_channels}, H, W) tensor, got shape {tuple(x.shape)}"
            )
        if cfg.normalizes:  # before the padding: zeros are the normalized image's
            x = (x - cfg.input_shift) * cfg.input_scale
        h, w = x.shape[-2:]
        s = cfg.total_stride
        pad_h, pad_w = (-h) % s, (-w) % s
        if pad_h or pad_w:
            # A normalizing model repeats the last row and column instead of adding zeros: its zero
            # is not glass, and a band of it at the bottom or right reads as tissue (NOTE [Stride padding])
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate" if cfg.normalizes else "constant")
        # NOTE [Channels last]: with few channels, PyTorch's CPU convolutions are several times
        # faster on NHWC ("channels last") tensors; an (H, W, 3) uint8 image permuted to NCHW
        # already is one. Keep every activation in that layout.
        x = channels_last(x)
        d = self._decode(self.encoder[0](x).contiguous(memory_format=torch.channels_last))
        logits = _conv_of_cat(self.head.conv, d, cfg.strides[0], x)
        if pad_h or pad_w:
            logits = logits[..., :h, :w]
        return logits

    def _decode(self, e1: torch.Tensor) -> torch.Tensor:
        """The level-1 decoder output ``d_1`` from the first encoder output ``e_1`` (channels-last):
        every layer between the two full-resolution ones."""
        cfg = self.config
        skips = [e1, e1]  # skips[level] is e_level (skips[0] is never read)
        for block in self.encoder[1:]:
            skips.append(block(skips[-1]).contiguous(memory_format=torch.channels_last))
        d = skips[-1]
        for level in range(cfg.depth - 1, 0, -1):
            block = cast(_ConvAct, self.decoder[level - 1])
            d = block.act(_conv_of_cat(block.conv, d, cfg.strides[level], skips[level]))
            d = d.contiguous(memory_format=torch.channels_last)
        return d


# NOTE [Stride padding]
# The model pads its input at the bottom and right to a multiple of its total stride, and crops
# the logits back. The padded pixels reach the real ones' logits within the halo. With zeros in
# raw RGB / 255 (the paper preset's behaviour, kept for its published results) the band is black;
# with zeros after an input normalization centred on glass it is a flat grey that the model never
# saw in training and calls tissue along the whole edge (the built-in model did, on kidney-48-5).
# Repeating the edge continues whatever lies there. Exactness is unaffected: the tiled engine
# leaves a normalizing model's padding to the model (engine.tiles.input_multiple), the crops at
# the image's bottom and right end where the image does, and elsewhere the padded rows lie
# beyond the halo.


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` with the canonical NHWC strides (a copy only when its memory order differs).

    ``Tensor.contiguous(memory_format=...)`` accepts any stride for a size-1 dimension (N == 1
    or C == 1), but PyTorch's CPU kernels then pick slow NCHW paths (a 1-channel gradient
    made the head's backward ~5x slower).
    """
    n, c, h, w = x.shape
    strides = (h * w * c, 1, w * c, c)
    if x.stride() == strides:
        return x
    if x.is_contiguous(memory_format=torch.channels_last) or (c == 1 and x.is_contiguous()):
        # same memory order, only the strides of size-1 dimensions differ: relabel them
        return x.as_strided(x.shape, strides)
    return x.contiguous(memory_format=torch.channels_last)


def _conv_of_cat(conv: nn.Conv2d, low: torch.Tensor, factor: int, skip: torch.Tensor) -> torch.Tensor:
    """``conv(torch.cat([upsample(low, factor), skip], dim=1))`` without building either.

    See NOTE [Decoder convolutions].
    """
    c_low = low.shape[1]
    w = conv.weight
    out = _conv(skip, w[:, c_low:], conv.bias, 1)
    if factor == 1:
        return out + _conv(low, w[:, :c_low], None, 1)
    phases = _conv(low, subpixel_kernel(w[:, :c_low], factor), None, 1)
    return _add_pixel_shuffled(channels_last(out), channels_last(phases), factor)


# NOTE [Decoder convolutions]
# A decoder level convolves the concatenation of the nearest-upsampled deeper features and the
# skip. That is the sum of a convolution over each group of channels, which skips the
# concatenation copy. A "same" convolution of odd size k = 2r + 1 of a tensor upsampled by s is
# a sub-pixel convolution of the low-resolution tensor: output row i = s j + u (u the sub-pixel
# phase) reads up(d)[i + t] = d[j + m] with m = floor((u + t) / s), |m| <= R = ceil(r / s), so
#   out[s j + u] = sum_m K[u, m] d[j + m],   K[u, m] = sum over {t : floor((u + t) / s) = m} W[t],
# i.e. K = B W B^T with a fixed 0/1 tensor B per axis. K has c_out * s * s output channels (one
# per phase) and 2R + 1 taps; a stride-1 convolution at low resolution followed by
# pixel_shuffle(s) gives the full-resolution result; the decoder adds it to the skip's
# convolution in place, through a strided view, so the shuffled tensor is never materialized
# either. This is 3.5x faster than the upsample-then-convolve and 1.7x faster forward and
# backward than the equivalent strided transposed convolution for the paper model's head, and
# W's gradient flows through B W B^T. Exact up to summation order (tests/test_model.py compares the model
# with a plain interpolate + cat + conv2d implementation).


def _subpixel_matrix(k: int, s: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An (s, 2R + 1, k) 0/1 tensor: B[u, m + R, t + r] = 1 when phase u at offset m takes W[t + r]."""
    r = k // 2
    reach = -(-r // s)  # ceil(r / s): how many low-resolution neighbours a tap can reach
    u = torch.arange(s)[:, None, None]
    m = torch.arange(-reach, reach + 1)[None, :, None]
    t = torch.arange(-r, r + 1)[None, None, :]
    return (torch.div(u + t, s, rounding_mode="floor") == m).to(dtype=dtype, device=device)


def subpixel_kernel(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """The (c_out * s * s, c_in, 2R + 1, 2R + 1) kernel ``B W B^T`` of the sub-pixel convolution."""
    b = _subpixel_matrix(weight.shape[-1], factor, weight.dtype, weight.device)
    c_out, c_in = weight.shape[:2]
    taps = b.shape[1]
    return torch.einsum("umk,vnl,oikl->ouvimn", b, b, weight).reshape(c_out * factor * factor, c_in, taps, taps)


class _AddPixelShuffled(torch.autograd.Function):
    """``out + pixel_shuffle(phases, s)``, computed in place in ``out`` (both channels-last) in
    one pass, without materializing the shuffled tensor; its backward is a pixel_unshuffle."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, phases: torch.Tensor, s: int) -> torch.Tensor:
        ctx.s = s
        ctx.mark_dirty(out)
        n, c, h, w = out.shape
        src = phases.permute(0, 2, 3, 1).view(n, h // s, w // s, c, s, s).permute(0, 1, 4, 2, 5, 3)
        out.permute(0, 2, 3, 1).view(n, h // s, s, w // s, s, c).add_(src)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return grad, channels_last(F.pixel_unshuffle(grad, ctx.s)), None


def _add_pixel_shuffled(out: torch.Tensor, phases: torch.Tensor, s: int) -> torch.Tensor:
    result: torch.Tensor = _AddPixelShuffled.apply(out, phases, s)
    return result


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_table(config: UNetConfig) -> list[dict[str, Any]]:
    """One row per convolution: name, in/out channels, kernel, stride, resolution, parameters."""
    c = (config.in_channels, *config.channels)
    rows = []
    jump = 1
    for i in range(config.depth):
        k, s = config.encoder_kernels[i], config.strides[i]
        jump *= s
        rows.append(dict(layer=f"encoder.{i}", c_in=c[i], c_out=c[i + 1], kernel=k, stride=s,
                         resolution=f"1/{jump}", params=k * k * c[i] * c[i + 1] + c[i + 1]))
    for i in range(config.depth - 1, 0, -1):
        k = config.decoder_kernels[i]
        c_in = c[i + 1] + c[i]
        jump //= config.strides[i]
        rows.append(dict(layer=f"decoder.{i - 1}", c_in=c_in, c_out=c[i], kernel=k, stride=1,
                         resolution=f"1/{jump}", params=k * k * c_in * c[i] + c[i]))
    k = config.decoder_kernels[0]
    c_out = config.out_channels
    rows.append(dict(layer="head", c_in=c[1] + c[0], c_out=c_out, kernel=k, stride=1,
                     resolution="1/1", params=k * k * (c[1] + c[0]) * c_out + c_out))
    return rows
