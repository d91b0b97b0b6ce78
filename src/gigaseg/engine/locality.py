"""What makes a model tileable: its total stride and halo, derived from the module itself.

``analyze`` traces any ``nn.Module`` with ``torch.fx``, follows every operation from the input
to the output and computes, for each tensor, its sampling grid (the jump) and how far its
elements read into the input on each side (NOTE [Receptive field of a graph]). A model whose
every operation is local gives a ``Geometry``; one with an operation whose locality cannot be
proven (global pooling, whole-image normalization, attention, a reshape, an unknown layer) is
refused with the module's path named. The result is then checked twice on the model itself:
the shapes of every tensor on a probe input follow the derived grid, and the outputs over a
small core computed from a crop with the derived halo equal those of a larger image
(NOTE [Probing the halo]). ``gigaseg.UNet`` keeps its config's closed-form geometry
(``planner.check_local``).
"""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import UnsupportedModelError

if TYPE_CHECKING:
    from ..options import UNetConfig

__all__ = ["Geometry", "analyze", "geometry_of"]


@dataclass(frozen=True)
class Geometry:
    """The tiling geometry of a model that is not a ``gigaseg.UNet``, as ``analyze`` derived it.

    It offers what the engine reads from a ``UNetConfig`` (``total_stride``, ``halo``,
    ``in_channels``, ``out_channels``, ``normalizes``), so the two are used alike.

    Attributes:
        total_stride: S, the least common multiple of every tensor's jump (both axes): tile
            origins sit on multiples of it and the input is zero-padded to a multiple of it.
        lead, trail: how far (input pixels) an output pixel's inputs reach before (top/left)
            and after (bottom/right) it, the larger of the two axes.
        in_channels: input channels the model takes (the first convolution's).
        out_channels: output channels C.
        out_jump: the output's jump (1: full resolution, what the engine's per-pixel losses need).
        floats_per_pixel: floats of every intermediate tensor of one forward pass per input
            pixel (the planner's estimate of a tile's activations).
    """

    total_stride: int
    lead: int
    trail: int
    in_channels: int
    out_channels: int
    out_jump: int
    floats_per_pixel: float
    normalizes: bool = False  # a generic model's normalization is its own first layers

    @property
    def halo(self) -> int:
        """Receptive-field radius in input pixels (the larger side)."""
        return max(self.lead, self.trail, 0)

    @property
    def receptive_field(self) -> int:
        return self.lead + self.trail + 1


# NOTE [Receptive field of a graph]
# Every tensor T of the traced graph gets, per axis, (J, L, R): element j of T is computed from
# input pixels [J j - L, J j + J - 1 + R] only (J is T's jump: T is the input sampled every J
# pixels). The input is (1, 0, 0). An operation whose output element i = s_up q + u (u its phase,
# 0 <= u < s_up) reads elements [s_down q + a_u, s_down q + b_u] of its input has jump
# J' = J s_down / s_up (an integer, or the model is refused) and
#   L' = max_u (J' u - J a_u) + L,   R' = max_u (J b_u + J - J' (u + 1)) + R
# over the phases that read anything. A convolution of kernel k, stride s, padding p and
# dilation d has s_down = s, a = -p, b = d (k - 1) - p (pooling likewise); a transposed one has
# s_up = s, a_u = ceil((u + p - d (k - 1)) / s), b_u = floor((u + p) / s); nearest upsampling
# by s reads element q (a = b = 0), bilinear the two around (u + 1/2) / s - 1/2 + q. Pointwise
# operations keep (J, L, R); a sum, product or channel concatenation of several tensors needs
# them on one grid (equal J) and takes the larger L and R. A tensor that does not depend on the
# input (a parameter, a constant) has no field; one of more than 1 x 1 pixels combined with the
# image would depend on absolute positions, and is refused. The halo is the largest L and R of
# the output; the total stride the least common multiple of every jump, so every tensor's grid
# is the whole image's in every crop (NOTE [Exact tiling]). L and R never fall short of what an
# output pixel reads (tests/test_locality_fuzz.py checks them against the input gradient's reach
# on random stacks of layers), and on the test models of tests/test_any_model.py they equal it.
# They can be loose: one (L, R) per tensor for all its phases counts a pixel on each side where
# an upsampling by 2 followed by a pooling by 2 reads one block, and a core that starts on the
# stride grid may need up to S - 1 pixels less on a side. The crop then reads those for nothing.

_Axis = tuple[int, int, int]  # (jump, left, right)


@dataclass(frozen=True)
class _Field:
    h: _Axis
    w: _Axis


def _step(axis: _Axis, s_down: int, s_up: int, phases: Sequence[tuple[int, int] | None], where: str) -> _Axis:
    jump, left, right = axis
    if (jump * s_down) % s_up:
        raise UnsupportedModelError(
            f"{where} upsamples a tensor of jump {jump} by {s_up}, above the input's resolution; the tiled "
            "engine needs every tensor on a grid of whole input pixels")
    new = jump * s_down // s_up
    lefts, rights = [], []
    for u, ab in enumerate(phases):
        if ab is None:
            continue
        a, b = ab
        lefts.append(new * u - jump * a)
        rights.append(jump * b + jump - new * (u + 1))
    if not lefts:  # reads nothing of its input (bias only): no further than before
        return new, left, right
    return new, max(lefts) + left, max(rights) + right


def _conv_axis(axis: _Axis, k: int, s: int, p: int, d: int, where: str) -> _Axis:
    return _step(axis, s, 1, [(-p, d * (k - 1) - p)], where)


def _transposed_axis(axis: _Axis, k: int, s: int, p: int, d: int, where: str) -> _Axis:
    phases: list[tuple[int, int] | None] = []
    for u in range(s):
        a, b = -((-(u + p - d * (k - 1))) // s), (u + p) // s
        phases.append((a, b) if a <= b else None)
    return _step(axis, 1, s, phases, where)


def _upsample_axis(axis: _Axis, s: int, mode: str, where: str) -> _Axis:
    if mode in ("nearest", "nearest-exact"):
        return _step(axis, 1, s, [(0, 0)] * s, where)
    reach = {"bilinear": (0, 1), "bicubic": (-1, 2)}.get(mode)
    if reach is None:
        raise UnsupportedModelError(f"{where} upsamples with mode {mode!r}; the tiled engine supports nearest, "
                                    "nearest-exact, bilinear and bicubic (align_corners=False)")
    phases: list[tuple[int, int] | None] = []
    for u in range(s):
        base = math.floor((u + 0.5) / s - 0.5)
        phases.append((base + reach[0], base + reach[1]))
    return _step(axis, 1, s, phases, where)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return int(v), int(v)


def _merge(fields: Iterable[_Field | None], where: str) -> _Field | None:
    known = [f for f in fields if f is not None]
    if not known:
        return None
    axes = []
    for name in ("h", "w"):
        vals = [getattr(f, name) for f in known]
        jumps = {v[0] for v in vals}
        if len(jumps) > 1:
            raise UnsupportedModelError(
                f"{where} combines tensors on different grids (jumps {sorted(jumps)}); the tiled engine needs "
                "the tensors it adds, multiplies or concatenates at one resolution")
        axes.append((vals[0][0], max(v[1] for v in vals), max(v[2] for v in vals)))
    return _Field(axes[0], axes[1])


# --- what each operation does ----------------------------------------------------------------

_POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Softplus, nn.Mish,
    nn.PReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SELU, nn.CELU, nn.LogSigmoid,
    nn.Tanhshrink, nn.Softsign, nn.Threshold, nn.GLU, nn.ChannelShuffle,
)
_CHANNEL_MODULES: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax, nn.Softmin)

_POINTWISE_FUNCTIONS: set[Any] = {
    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.log, torch.abs, torch.neg, torch.sqrt, torch.rsqrt,
    torch.clamp, torch.clip, torch.square, torch.log1p, torch.expm1, torch.erf, torch.sin, torch.cos,
    torch.where, torch.maximum, torch.minimum, torch.pow,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardtanh, F.hardswish, F.hardsigmoid,
    F.softplus, F.selu, F.celu, F.logsigmoid, F.sigmoid, F.tanh, F.prelu, F.glu, F.threshold,
    torch.add, torch.sub, torch.mul, torch.div, torch.true_divide,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow, operator.iadd,
    operator.imul, operator.isub, operator.itruediv,
}
_POINTWISE_METHODS = {
    "relu", "sigmoid", "tanh", "exp", "log", "abs", "neg", "sqrt", "rsqrt", "clamp", "clip", "square",
    "contiguous", "clone", "float", "double", "half", "bfloat16", "to", "type_as", "add", "sub", "mul", "div",
    "add_", "sub_", "mul_", "div_", "relu_", "sigmoid_", "tanh_", "clamp_", "pow", "detach", "requires_grad_",
    "maximum", "minimum", "where", "log1p", "expm1", "erf",
}
NON_LOCAL = (  # the planner's check of a UNet's modules uses it too
    (nn.modules.batchnorm._BatchNorm,
     "normalizes with statistics of the whole batch/image in training mode (or without running statistics)"),
    (nn.GroupNorm, "normalizes with statistics over the whole image"),
    (nn.modules.instancenorm._InstanceNorm, "normalizes with statistics over the whole image"),
    (nn.LayerNorm, "normalizes over whole feature maps"),
    (nn.modules.pooling._AdaptiveAvgPoolNd, "pools over the whole image"),
    (nn.modules.pooling._AdaptiveMaxPoolNd, "pools over the whole image"),
    (nn.MultiheadAttention, "attends over all positions"),
    (nn.Linear, "mixes positions along the width axis of an NCHW tensor"),
    (nn.modules.dropout._DropoutNd, "draws random masks that differ between tiles in training mode"),
    (nn.Flatten, "rearranges positions"),
    (nn.Unflatten, "rearranges positions"),
)
_NON_LOCAL_FUNCTIONS: dict[Any, str] = {
    F.adaptive_avg_pool2d: "pools over the whole image", F.adaptive_max_pool2d: "pools over the whole image",
    F.group_norm: "normalizes with statistics over the whole image",
    F.instance_norm: "normalizes with statistics over the whole image",
    F.layer_norm: "normalizes over whole feature maps", F.linear: "mixes positions along the width axis",
    torch.flatten: "rearranges positions", torch.reshape: "rearranges positions",
    torch.permute: "rearranges positions", torch.transpose: "rearranges positions",
    torch.mean: "reduces over the image", torch.sum: "reduces over the image", torch.amax: "reduces over the image",
    F.scaled_dot_product_attention: "attends over all positions", F.pad: "pads inside the model (shifts the grid)",
    torch.roll: "moves pixels across the whole image", torch.flip: "mirrors the whole image",
}


class _Analysis:
    """One pass over a traced graph: the field of each node (NOTE [Receptive field of a graph])."""

    def __init__(self, gm: fx.GraphModule, root: nn.Module) -> None:
        self.gm, self.root = gm, root
        self.fields: dict[fx.Node, Any] = {}
        self.jumps: set[int] = {1}
        self.in_channels: int | None = None

    def where(self, node: fx.Node) -> str:
        """The module path of ``node`` for an error: its module, or the innermost one it runs in."""
        if node.op == "call_module":
            mod = self.gm.get_submodule(str(node.target))
            return f"module {node.target!r} ({type(mod).__name__})"
        stack = node.meta.get("nn_module_stack") or {}
        op = getattr(node.target, "__name__", str(node.target))
        if stack:
            path, kind = list(stack.values())[-1]
            name = getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1].strip("'>"))
            return f"module {path!r} ({name}), operation {op!r}"
        return f"module '' ({type(self.root).__name__}), operation {op!r}"

    def run(self) -> tuple[_Field, fx.Node]:
        out: tuple[_Field, fx.Node] | None = None
        inputs = 0
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if node.args:  # an argument with a default, which model(x) leaves as it is
                    self.fields[node] = None
                    continue
                inputs += 1
                if inputs > 1:
                    raise UnsupportedModelError(
                        f"module '' ({type(self.root).__name__}) takes more than one input ({node.target!r}); the "
                        "tiled engine calls model(x) with the image alone")
                self.fields[node] = _Field((1, 0, 0), (1, 0, 0))
            elif node.op == "get_attr":
                self.fields[node] = None
            elif node.op == "output":
                res = node.args[0]
                if not isinstance(res, fx.Node) or not isinstance(self.fields.get(res), _Field):
                    raise UnsupportedModelError(
                        f"module '' ({type(self.root).__name__}) returns {type(res).__name__}, not one tensor that "
                        "depends on the image; the tiled engine needs model(x) to return an (N, C, H, W) tensor")
                out = (self.fields[res], res)
            else:
                self.fields[node] = self.visit(node)
        assert out is not None
        return out

    def arg_fields(self, node: fx.Node) -> list[Any]:
        return [self.fields.get(n) for n in node.all_input_nodes]

    def only(self, node: fx.Node) -> _Field | None:
        """The field of the single image-dependent argument of ``node`` (None if none)."""
        return _merge([f for f in self.arg_fields(node) if isinstance(f, _Field)], self.where(node))

    def note_input(self, node: fx.Node, channels: int) -> None:
        src = node.args[0] if node.args else None
        if self.in_channels is None and isinstance(src, fx.Node) and self._from_input(src):
            self.in_channels = channels

    def _from_input(self, node: fx.Node) -> bool:
        """Whether ``node`` is the input, or the input through pointwise steps only."""
        while node.op != "placeholder":
            f = self.fields.get(node)
            if not isinstance(f, _Field) or f.h != (1, 0, 0) or f.w != (1, 0, 0):
                return False
            nexts = [a for a in node.all_input_nodes if isinstance(self.fields.get(a), _Field)]
            if len(nexts) != 1:
                return False
            node = nexts[0]
        return True

    def spatial(self, node: fx.Node, fn: Callable[[_Axis, int], _Axis]) -> _Field:
        f = self.only(node)
        if f is None:
            raise UnsupportedModelError(f"{self.where(node)} does not depend on the image")
        h, w = fn(f.h, 0), fn(f.w, 1)
        self.jumps.update((h[0], w[0]))
        return _Field(h, w)

    def visit(self, node: fx.Node) -> Any:
        args = self.arg_fields(node)
        if not any(isinstance(a, (_Field, tuple)) for a in args):
            return None  # a constant, a shape, a parameter's function: no field
        where = self.where(node)
        if node.op == "call_module":
            return self.module(node, self.gm.get_submodule(str(node.target)), where)
        if node.op == "call_function":
            return self.function(node, node.target, where)
        if node.op == "call_method":
            return self.method(node, str(node.target), where)
        raise UnsupportedModelError(f"{where} is not known to be local")

    # --- modules ---
    def module(self, node: fx.Node, mod: nn.Module, where: str) -> Any:
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            if mod.padding_mode == "circular":
                raise UnsupportedModelError(f"{where} pads circularly (it reads the opposite edge of the image); "
                                            "use zero, reflect or replicate padding")
            self.note_input(node, mod.in_channels)
            if isinstance(mod, nn.ConvTranspose2d):
                return self.spatial(node, lambda a, i: _transposed_axis(
                    a, mod.kernel_size[i], mod.stride[i], _pair(mod.padding)[i], mod.dilation[i], where))
            pads = _conv_padding(mod.padding, mod.kernel_size, mod.dilation, mod.stride, where)
            return self.spatial(node, lambda a, i: _conv_axis(
                a, mod.kernel_size[i], mod.stride[i], pads[i], mod.dilation[i], where))
        if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)):
            k = _pair(mod.kernel_size)
            s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
            p = _pair(getattr(mod, "padding", 0))
            d = _pair(getattr(mod, "dilation", 1))
            return self.spatial(node, lambda a, i: _conv_axis(a, k[i], s[i], p[i], d[i], where))
        if isinstance(mod, nn.Upsample):
            return self.upsample(node, mod.scale_factor, mod.size, mod.mode, mod.align_corners, where)
        if isinstance(mod, nn.PixelShuffle):
            r = mod.upscale_factor
            return self.spatial(node, lambda a, i: _step(a, 1, r, [(0, 0)] * r, where))
        if isinstance(mod, nn.PixelUnshuffle):
            r = mod.downscale_factor
            return self.spatial(node, lambda a, i: _conv_axis(a, r, r, 0, 1, where))
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and not mod.training and mod.track_running_stats:
            return self.only(node)  # eval BatchNorm with running statistics: a per-channel affine map
        if isinstance(mod, nn.modules.dropout._DropoutNd) and not mod.training:
            return self.only(node)  # eval Dropout: the identity
        if isinstance(mod, _POINTWISE_MODULES):
            return self.only(node)
        if isinstance(mod, _CHANNEL_MODULES):
            if mod.dim not in (1, -3):
                raise UnsupportedModelError(f"{where} normalizes over dim {mod.dim}, not the channels (dim=1)")
            return self.only(node)
        for kind, reason in NON_LOCAL:
            if isinstance(mod, kind):
                raise UnsupportedModelError(
                    f"{where} {reason}, so the model cannot be tiled exactly; remove it, put it in eval mode "
                    "where that makes it local (BatchNorm, Dropout), or use a local layer")
        raise UnsupportedModelError(
            f"{where} is not known to be local; the tiled engine supports convolutions (any stride, dilation, "
            "transposed), fixed-window pooling, upsampling, pointwise layers, eval-mode BatchNorm and Dropout, "
            "sums and channel concatenations")

    def upsample(self, node: fx.Node, scale: Any, size: Any, mode: str, align: bool | None, where: str) -> _Field:
        if size is not None or scale is None:
            raise UnsupportedModelError(f"{where} resizes to a fixed size; give an integer scale_factor instead")
        if align:
            raise UnsupportedModelError(f"{where} uses align_corners=True, which depends on the whole image's size; "
                                        "use align_corners=False")
        sh, sw = (scale if isinstance(scale, (tuple, list)) else (scale, scale))
        ints = []
        for v in (sh, sw):
            if float(v) != int(v) or int(v) < 1:
                raise UnsupportedModelError(f"{where} scales by {v}; the tiled engine needs integer scale factors")
            ints.append(int(v))
        return self.spatial(node, lambda a, i: _upsample_axis(a, ints[i], mode, where))

    # --- functions ---
    def function(self, node: fx.Node, fn: Any, where: str) -> Any:
        kw = node.kwargs
        if fn in _NON_LOCAL_FUNCTIONS:
            if fn in (torch.mean, torch.sum, torch.amax) and _channel_dim(node.args[1:2], kw.get("dim")):
                return self.only(node)
            raise UnsupportedModelError(f"{where} {_NON_LOCAL_FUNCTIONS[fn]}, so the model cannot be tiled exactly")
        if fn in _POINTWISE_FUNCTIONS:
            return self.only(node)
        if fn is torch.cat or fn is torch.concat:
            dim = node.args[1] if len(node.args) > 1 else kw.get("dim", 0)
            if dim not in (1, -3):
                raise UnsupportedModelError(f"{where} concatenates along dim {dim}; the tiled engine concatenates "
                                            "channels only (dim=1)")
            return self.only(node)
        if fn in (torch.softmax, torch.log_softmax, F.softmax, F.log_softmax):
            dim = node.args[1] if len(node.args) > 1 else kw.get("dim")
            if dim not in (1, -3):
                raise UnsupportedModelError(f"{where} normalizes over dim {dim}, not the channels (dim=1)")
            return self.only(node)
        if fn in (F.dropout, F.dropout2d, torch.dropout):
            training = kw.get("training", node.args[2] if len(node.args) > 2 else True)
            if training:
                raise UnsupportedModelError(f"{where} draws random masks that differ between tiles in training "
                                            "mode; put the model in eval mode")
            return self.only(node)
        if fn is F.batch_norm:
            if kw.get("training", node.args[5] if len(node.args) > 5 else False):
                raise UnsupportedModelError(f"{where} normalizes with statistics of the whole image in training "
                                            "mode; put the model in eval mode")
            return self.only(node)
        if fn is operator.getitem:
            return self.getitem(node, where)
        if fn in (torch.chunk, torch.split, torch.tensor_split):
            dim = node.args[2] if len(node.args) > 2 else kw.get("dim", 0)
            if dim not in (1, -3):
                raise UnsupportedModelError(f"{where} splits along dim {dim}; only channels (dim=1) can be split")
            return ("parts", self.only(node))
        if fn in (F.conv2d, F.conv_transpose2d):
            weight = self.value(node.args[1] if len(node.args) > 1 else kw["weight"])
            names = ["input", "weight", "bias", "stride", "padding"]
            names += ["output_padding", "groups", "dilation"] if fn is F.conv_transpose2d else ["dilation", "groups"]
            got: dict[str, Any] = dict(zip(names, node.args)) | dict(kw)
            k = (int(weight.shape[-2]), int(weight.shape[-1]))
            s, d = _pair(got.get("stride", 1)), _pair(got.get("dilation", 1))
            if fn is F.conv_transpose2d:
                p = _pair(got.get("padding", 0))
                return self.spatial(node, lambda a, i: _transposed_axis(a, k[i], s[i], p[i], d[i], where))
            self.note_input(node, int(weight.shape[1]) * int(got.get("groups", 1)))
            pads = _conv_padding(got.get("padding", 0), k, d, s, where)
            return self.spatial(node, lambda a, i: _conv_axis(a, k[i], s[i], pads[i], d[i], where))
        if fn in (F.max_pool2d, F.avg_pool2d):
            names = ["input", "kernel_size", "stride", "padding"] + (["dilation"] if fn is F.max_pool2d else [])
            got = dict(zip(names, node.args)) | dict(kw)
            k = _pair(got["kernel_size"])
            s = _pair(got.get("stride") or got["kernel_size"])
            p, d = _pair(got.get("padding", 0)), _pair(got.get("dilation", 1))
            return self.spatial(node, lambda a, i: _conv_axis(a, k[i], s[i], p[i], d[i], where))
        if fn is F.interpolate:
            names = ["input", "size", "scale_factor", "mode", "align_corners"]
            got = dict(zip(names, node.args)) | dict(kw)
            return self.upsample(node, got.get("scale_factor"), got.get("size"), str(got.get("mode", "nearest")),
                                 bool(got.get("align_corners")), where)
        if fn in (F.pixel_shuffle, F.pixel_unshuffle):
            r = int(node.args[1] if len(node.args) > 1 else next(iter(kw.values())))  # type: ignore[arg-type]
            if fn is F.pixel_shuffle:
                return self.spatial(node, lambda a, i: _step(a, 1, r, [(0, 0)] * r, where))
            return self.spatial(node, lambda a, i: _conv_axis(a, r, r, 0, 1, where))
        raise UnsupportedModelError(f"{where} is not known to be local")

    def method(self, node: fx.Node, name: str, where: str) -> Any:
        if name in _POINTWISE_METHODS:
            return self.only(node)
        if name in ("softmax", "log_softmax", "mean", "sum", "amax", "max", "min"):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if _channel_dim([dim], None):
                return self.only(node)
            raise UnsupportedModelError(f"{where} {'normalizes' if 'softmax' in name else 'reduces'} over dim "
                                        f"{dim}, not the channels (dim=1), so the model cannot be tiled exactly")
        if name in ("chunk", "split"):
            dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
            if dim not in (1, -3):
                raise UnsupportedModelError(f"{where} splits along dim {dim}; only channels (dim=1) can be split")
            return ("parts", self.only(node))
        if name in ("view", "reshape", "flatten", "permute", "transpose", "expand", "repeat", "roll", "flip",
                    "unfold", "squeeze", "unsqueeze"):
            raise UnsupportedModelError(f"{where} rearranges positions, so the model cannot be tiled exactly")
        if name in ("size", "dim"):
            return None
        raise UnsupportedModelError(f"{where} is not known to be local")

    def getitem(self, node: fx.Node, where: str) -> Any:
        src, index = node.args[0], node.args[1]
        f = self.fields.get(src) if isinstance(src, fx.Node) else None
        if isinstance(f, tuple) and f[0] == "parts":
            return f[1]
        if not isinstance(f, _Field):
            return None
        items = index if isinstance(index, tuple) else (index,)
        for pos, item in enumerate(items):
            if item is Ellipsis:
                if pos != len(items) - 1:
                    break  # x[..., a:b] slices the last axes
                return f
            if pos >= 2 and not (isinstance(item, slice) and item == slice(None)):
                break
            if pos == 0 and not (isinstance(item, slice) and item == slice(None)):
                break
        else:
            return f
        raise UnsupportedModelError(f"{where} indexes the batch or spatial axes ({index!r}); the tiled engine "
                                    "allows channel slices only (x[:, a:b])")

    def value(self, arg: Any) -> torch.Tensor:
        """The tensor of a ``get_attr`` node (a convolution's weight given to F.conv2d)."""
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            obj: Any = self.gm
            for part in str(arg.target).split("."):
                obj = getattr(obj, part)
            return torch.as_tensor(obj)
        raise UnsupportedModelError(f"{self.where(arg) if isinstance(arg, fx.Node) else 'a call'} convolves with a "
                                    "computed kernel; give F.conv2d a parameter, or use nn.Conv2d")


def _channel_dim(args: Sequence[Any], dim: Any) -> bool:
    d = args[0] if args else dim
    dims = d if isinstance(d, (tuple, list)) else (d,)
    return bool(dims) and all(x in (1, -3) for x in dims)


def _conv_padding(padding: Any, k: Sequence[int], d: Sequence[int], s: Sequence[int], where: str) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    if padding == "same":
        # PyTorch pads d (k - 1) in all, the odd one at the end: the start gets half, rounded down
        return d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2
    if isinstance(padding, str):
        raise UnsupportedModelError(f"{where} has padding {padding!r}")
    return _pair(padding)


# --- probing -----------------------------------------------------------------------------------


# NOTE [Probing the halo]
# The graph's arithmetic is checked on the model itself, once per model (and again if its
# modules or their modes change). The traced graph runs on a probe input of side n, a multiple
# of S: every tensor's spatial shape must be n / J (the grid the derivation assumed; a layer
# whose padding shifts or trims the grid, a transposed convolution whose output_padding does not
# restore the size, fail here). Then the model runs, without gradients, on a random image and on
# a crop of it holding one S x S core with the derived halos on every side, the crop's edges
# inside the image: the core's outputs must agree (to 1e-9 in float64, 1e-4 of the output's
# scale in float32, 2e-2 in half precision; the probes run on a float64 copy of the model on the
# CPU where it can be copied). A wrong derivation or an operation that reads further than it says is
# refused there rather than giving a gradient that is silently wrong.
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[Any, Geometry]] = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple[Any, ...]:
    return tuple((path, type(m), m.training) for path, m in model.named_modules())


def analyze(model: nn.Module, *, probe: bool = True) -> Geometry:
    """The tiling geometry of ``model`` (any ``nn.Module`` of local layers), derived from its
    traced graph and checked on the model (NOTE [Receptive field of a graph], NOTE [Probing
    the halo]). Cached per model while its modules and their training flags stay the same.

    Raises:
        UnsupportedModelError: naming the module path of the first operation whose locality
            cannot be proven, or saying what the check found.
    """
    sig = _signature(model)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == sig:
        return cached[1]
    probe_model = _float64_copy(model) if probe else model
    try:
        gm = fx.symbolic_trace(probe_model)
    except Exception as exc:
        raise UnsupportedModelError(
            f"module '' ({type(model).__name__}) cannot be traced by torch.fx ({type(exc).__name__}: {exc}); the "
            "tiled engine must see every operation to prove that the model is local - avoid control flow on "
            "tensor values or shapes in forward()") from exc
    analysis = _Analysis(gm, model)
    out, out_node = analysis.run()
    if out.h[0] != out.w[0]:
        raise UnsupportedModelError(f"module '' ({type(model).__name__}) outputs at jumps {out.h[0]} (rows) and "
                                    f"{out.w[0]} (columns); the tiled engine needs one resolution")
    stride = math.lcm(*analysis.jumps)
    lead = max(out.h[1], out.w[1], 0)
    trail = max(out.h[2], out.w[2], 0)
    if analysis.in_channels is None:
        raise UnsupportedModelError(f"module '' ({type(model).__name__}): no convolution reads the input, so its "
                                    "channels are unknown; the tiled engine needs a convolutional model")
    floats = _check_shapes(gm, analysis, stride, lead, trail)
    out_channels = int(out_node.meta["tensor_meta"].shape[1])
    geometry = Geometry(stride, lead, trail, analysis.in_channels, out_channels, out.h[0], floats)
    if probe:
        _check_halo(probe_model, geometry)
    _CACHE[model] = (sig, geometry)
    return geometry


def geometry_of(model: nn.Module) -> UNetConfig | Geometry:
    """What the engine tiles ``model`` by: a ``gigaseg.UNet``'s config, else ``analyze(model)``
    (cached: the engine asks once per tile)."""
    from ..model import UNet

    if isinstance(model, UNet):
        return model.config
    return analyze(model)


def _float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` on the CPU for the probes (NOTE [Probing the halo]): exact to
    1e-9 whatever the model's dtype and device (TF32 and half precision would hide a short halo
    in their rounding). The model itself where it cannot be copied."""
    import copy

    try:
        return copy.deepcopy(model).to("cpu", torch.float64)
    except Exception:  # noqa: BLE001 - any failure to copy: probe the model itself, less tightly
        return model


def _probe_params(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    for b in model.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.float32


def _check_shapes(gm: fx.GraphModule, analysis: _Analysis, stride: int, lead: int, trail: int) -> float:
    """Runs the traced graph on a probe input (NOTE [Probing the halo]) and checks every tensor's
    spatial shape against its jump; returns the floats of all its tensors per input pixel."""
    from torch.fx.passes.shape_prop import ShapeProp

    n = stride * max(2, -(-(lead + trail + 1) // stride) + 1)
    device, dtype = _probe_params(gm)
    x = torch.zeros((1, analysis.in_channels or 1, n, n), dtype=dtype, device=device)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(x)
    except Exception as exc:
        raise UnsupportedModelError(
            f"module '' ({type(analysis.root).__name__}) failed on a {n} x {n} probe input of "
            f"{analysis.in_channels} channels ({type(exc).__name__}: {exc})") from exc
    floats = 0.0
    for node, field in analysis.fields.items():
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        if shape is None:
            continue
        if not isinstance(field, _Field):
            if len(shape) == 4 and (shape[2] > 1 or shape[3] > 1) and any(
                    isinstance(analysis.fields.get(u), _Field) for u in node.users):
                raise UnsupportedModelError(
                    f"{analysis.where(node)} gives a {shape[2]} x {shape[3]} tensor that does not depend on the "
                    "image but is combined with it: its values depend on absolute positions")
            continue
        want = (n // field.h[0], n // field.w[0])
        if len(shape) != 4 or (shape[2], shape[3]) != want:
            raise UnsupportedModelError(
                f"{analysis.where(node)} gives shape {tuple(shape)} on a {n} x {n} probe input, where a tensor of "
                f"jump {field.h[0]} on the input's grid has {want[0]} x {want[1]} pixels: it shifts or trims the "
                "grid (padding that does not keep 'same' sizes, or a transposed convolution whose output_padding "
                "does not restore the size)")
        floats += shape[1] / (field.h[0] * field.w[0])
    return floats


def _check_halo(model: nn.Module, g: Geometry) -> None:
    """NOTE [Probing the halo]: one S x S core from a crop with the derived halos equals the same
    core of a larger image."""
    s = g.total_stride
    lead = -(-g.lead // s) * s  # as the engine's crops (tiles._halos)
    crop = lead + s + g.trail  # then zero-padded to a multiple of S, as the engine does
    pad = -crop % s
    n = crop + pad + 2 * s
    device, dtype = _probe_params(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, g.in_channels, n, n), generator=gen, dtype=torch.float64).to(device, dtype)
    y0 = s  # the crop starts inside the image, the core a halo further
    with torch.no_grad():
        whole = model(x)
        part = model(F.pad(x[:, :, y0:y0 + crop, y0:y0 + crop], (0, pad, 0, pad)))
    j = g.out_jump  # the core in the output's grid (S is a multiple of every jump)
    core = slice((y0 + lead) // j, (y0 + lead + s) // j)
    a = whole[:, :, core, core]
    b = part[:, :, lead // j:(lead + s) // j, lead // j:(lead + s) // j]
    scale = float(whole.abs().max()) or 1.0
    tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(dtype, 2e-2)
    err = float((a - b).abs().max()) / scale
    if not err <= tol:
        raise UnsupportedModelError(
            f"module '' ({type(model).__name__}): outputs computed from a crop with the derived halo "
            f"({g.lead} before, {g.trail} after) differ from the whole image's by {err:.2g} of their scale; "
            "some operation reads further than its layers say, so the model cannot be tiled exactly")
