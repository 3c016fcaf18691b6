"""Streaming CNN inference over overlapping windows that never computes a window twice (StreamiNNC).

A time-series CNN ``f = g ∘ h`` applied to windows of ``L`` samples taken every ``S`` samples recomputes ``L - S``
samples of work at each step. Convolution is shift-equivariant, so a streaming executor can compute only the ``S``
new samples per step (Kechris et al., 2025): every convolution reads its left context from a per-layer buffer of
the last ``(k - 1) · d`` input frames (signal padding instead of zero padding), pointwise layers (BatchNorm in eval
mode, activations, dropout) need nothing, a non-overlapping pooling layer needs the step to be aligned with its
window, and the feature extractor's output frames go into an aggregation ring buffer of the last ``L / P`` frames
(``P`` = the product of the pooling factors) on which the head ``g`` is recomputed at every step.

:class:`StreamingCNN` runs ``B`` independent streams in lockstep, with state tensors indexed by stream slot, on the
CPU or CUDA with the same code, in three modes:

* ``exact``: the buffered executor above. A stream at reset behaves as if it had seen zeros forever (its buffers
  hold ``h``'s response to zeros), so its outputs equal ``h`` run without padding on the zero-prefixed history,
  cropped to the window (:func:`signal_padded_features`) from the first step on;
* ``approximate``: no per-layer buffers; each new chunk runs through ``h`` with zero padding on its own and its
  frames go into the aggregation buffer (cheap, no state, but the chunk borders see zeros);
* ``full``: the reference that keeps the last ``L`` samples and runs ``h`` and ``g`` on the whole window each step.

``step`` takes any chunk whose length is a multiple of ``P`` (a pooling layer keeps the frames of an unfinished
pooling window for the next call), so feeding one chunk of ``S`` samples or ``S / P`` chunks of ``P`` gives the
same outputs. A step that is not a multiple of ``P`` is refused in ``exact`` mode unless ``allow_misaligned``: the
pooling windows then drift against the window start, and :meth:`StreamingCNN.pooling_error_bound` gives the paper's
bound on the error, ``(L_p - 1) · 2π · A · f_max / f_s`` per misaligned pooling layer.

Convolutions must be stride 1 with "same" padding (``padding="same"`` or the symmetric equivalent) or causal
(:class:`CausalConv1d`); exact streaming computes both causally, a "same" convolution's output then lags its offline
position by its right padding (the price of not waiting for future samples).

>>> import torch
>>> torch.manual_seed(0) and None
>>> features = torch.nn.Sequential(CausalConv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool1d(2))
>>> head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 8, 1))
>>> cnn = StreamingCNN(features, head, window=16, step=4, streams=2)
>>> cnn.step(torch.randn(2, 1, 4)).shape
torch.Size([2, 1])
>>> receptive_field(features)
4

References
----------
Kechris, C., Dan, J., Miranda, J. and Atienza, D. (2025). Don't think it twice: exploit shift invariance for
efficient online streaming inference of CNNs. *AAAI* 39. arXiv:2408.03223.

Kondratyuk, D. et al. (2021). MoViNets: mobile video networks for efficient video recognition. *CVPR* (stream
buffers).

Bai, S., Kolter, J. Z. and Koltun, V. (2018). An empirical evaluation of generic convolutional and recurrent
networks for sequence modeling. arXiv:1803.01271 (causal convolutions).

Araujo, A., Norris, W. and Sim, J. (2019). Computing receptive fields of convolutional neural networks. *Distill*.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kernels.device import select_device, to_device
from kernels.profiling import timed

MODES = ("exact", "approximate", "full")
POINTWISE = (nn.BatchNorm1d, nn.Dropout, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh,
             nn.Sigmoid, nn.Hardtanh, nn.ReLU6, nn.Softplus)


class CausalConv1d(nn.Conv1d):
    """A stride-1 convolution padded with ``(k - 1) · d`` zeros on the left only: output frame ``t`` reads input
    frames ``t - (k - 1) · d .. t`` (Bai et al., 2018). Its parameters are an ``nn.Conv1d``'s."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.dilation[0] * (self.kernel_size[0] - 1), 0)))


@dataclass(frozen=True)
class _Layer:
    """One layer of ``h`` as the executor sees it."""

    module: nn.Module
    kind: str  # "conv", "pool" or "pointwise"
    downsampling: int  # P_l: the product of the pooling factors before this layer
    context: int = 0  # conv: (k - 1) · d input frames of left context
    right_padding: int = 0  # conv: zeros its offline form pads on the right
    pool: int = 1  # pool: window = stride


def _conv_paddings(conv: nn.Conv1d, where: str) -> tuple[int, int]:
    """(left, right) zero padding of ``conv`` offline; refuses strides and asymmetric or "valid" padding."""
    if conv.stride[0] != 1 or conv.groups < 1:
        raise ValueError(f"{where}: only stride-1 convolutions stream (stride {conv.stride[0]})")
    if conv.padding_mode != "zeros":
        raise ValueError(f"{where}: padding_mode {conv.padding_mode!r} does not stream; use zeros")
    span = conv.dilation[0] * (conv.kernel_size[0] - 1)
    if isinstance(conv, CausalConv1d):
        return span, 0
    if conv.padding == "same":
        return span // 2, span - span // 2
    padding = conv.padding[0] if not isinstance(conv.padding, str) else None
    if padding is not None and 2 * padding == span:
        return padding, padding
    raise ValueError(f"{where}: padding {conv.padding!r} with kernel {conv.kernel_size[0]} and dilation "
                     f"{conv.dilation[0]} is neither 'same' nor causal (use padding='same' or CausalConv1d)")


def _layers(features: nn.Module) -> list[_Layer]:
    modules = list(features) if isinstance(features, nn.Sequential) else [features]
    layers, downsampling = [], 1
    for index, module in enumerate(modules):
        where = f"layer {index} ({type(module).__name__})"
        if isinstance(module, nn.Conv1d):
            left, right = _conv_paddings(module, where)
            layers.append(_Layer(module, "conv", downsampling, left + right, right))
        elif isinstance(module, (nn.MaxPool1d, nn.AvgPool1d)):
            size = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            stride = module.stride if isinstance(module.stride, int) else module.stride[0]
            padding = module.padding if isinstance(module.padding, int) else module.padding[0]
            if stride != size or padding or getattr(module, "dilation", 1) not in (1, (1,)):
                raise ValueError(f"{where}: only non-overlapping pooling streams (stride = kernel size, no padding)")
            layers.append(_Layer(module, "pool", downsampling, pool=size))
            downsampling *= size
        elif isinstance(module, POINTWISE):
            layers.append(_Layer(module, "pointwise", downsampling))
        else:
            raise ValueError(f"{where}: not a streamable layer (Conv1d, CausalConv1d, BatchNorm1d, pointwise "
                             f"activations, Dropout, MaxPool1d or AvgPool1d)")
    return layers


def downsampling_factor(features: nn.Module) -> int:
    """P: the product of ``features``' pooling factors."""
    return math.prod(layer.pool for layer in _layers(features))


def receptive_field(features: nn.Module) -> int:
    """Input samples that one output frame of ``features`` depends on (Araujo et al., 2019).

    >>> stack = nn.Sequential(*[CausalConv1d(1, 1, 5, dilation=2) for _ in range(3)], nn.AvgPool1d(4))
    >>> receptive_field(stack)
    28
    """
    field = 1
    for layer in _layers(features):
        if layer.kind == "conv":
            field += layer.context * layer.downsampling
        elif layer.kind == "pool":
            field += (layer.pool - 1) * layer.downsampling
    return field


def signal_padded_features(features: nn.Module, history: torch.Tensor, frames: int) -> torch.Tensor:
    """The reference for exact streaming: the last ``frames`` output frames of ``features`` run on ``history``
    [B, C, T] with every convolution computed causally (left context only, whatever its offline padding), so each
    output frame reads true past frames: signal padding. Zeros are assumed before ``history``; they reach only the
    first ``receptive_field`` samples' frames. Pooling windows are aligned with the start of ``history``."""
    x = history
    for layer in _layers(features):
        if layer.kind == "conv":
            conv = layer.module
            x = F.conv1d(F.pad(x, (layer.context, 0)), conv.weight, conv.bias, dilation=conv.dilation, groups=conv.groups)
        else:
            x = layer.module(x)
    if x.shape[-1] < frames:
        raise ValueError(f"history of {history.shape[-1]} samples gives {x.shape[-1]} frames, fewer than {frames}")
    return x[..., -frames:]


def signal_padding_windows(signal, window: int, step: int, extension: int) -> np.ndarray:
    """Training windows for streaming, the paper's batch-mode recipe: each window of ``window`` samples that ends at a
    multiple of ``step``, extended by ``extension`` past samples (at least :func:`receptive_field`, a multiple of the
    pooling factor), from ``signal`` [C, T]; [N, C, extension + window]. Train ``h`` on them with its zero padding
    and give ``g`` only the window's own frames (:class:`SignalPaddedModel`): those never see the padding, so the
    streamed model computes what was trained.

    >>> signal_padding_windows(np.arange(10.0)[None], window=4, step=2, extension=2)[:, 0].tolist()
    [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]]
    """
    x = np.asarray(signal)
    length = extension + window
    first = -(-length // step) * step
    return np.stack([x[:, end - length:end] for end in range(first, x.shape[-1] + 1, step)]) if x.shape[-1] >= first \
        else np.zeros((0, x.shape[0], length), dtype=x.dtype)


class SignalPaddedModel(nn.Module):
    """``g(h(x)[..., -window / P:])``: the model trained on :func:`signal_padding_windows`."""

    def __init__(self, features: nn.Module, head: nn.Module, window: int) -> None:
        super().__init__()
        self.features, self.head = features, head
        self.frames = window // downsampling_factor(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[..., -self.frames:])


def zero_padding_diagnostic(features: nn.Module, length: int, channels: int | None = None) -> list[float]:
    """Per layer of ``features``, the fraction of its outputs that zero padding affects (Kechris et al., 2025):
    every convolution's kernel set to a normalised moving average (all taps 1 / (C_in · k), no bias), normalisation
    layers left out (they would move the level), the other layers kept, and a constant input of ones of ``length``
    samples: an output below 1 has read padding zeros.

    >>> acc = nn.Sequential(*[nn.Conv1d(1, 1, 3, padding="same") for _ in range(6)])
    >>> zero_padding_diagnostic(acc, 960)[-1] * 960
    12.0
    """
    # float64: in float32 a 384-tap average of ones can land 1.5e-6 below 1 on some CPUs' kernels, which the test
    # below 1 - 1e-6 would take for padding.
    probe = copy.deepcopy(features).eval().double()
    layers = _layers(probe)
    first_conv = next((layer.module for layer in layers if layer.kind == "conv"), None)
    channels = channels or (first_conv.in_channels if first_conv is not None else 1)
    with torch.no_grad():
        for layer in layers:
            if layer.kind == "conv":
                conv = layer.module
                conv.weight.fill_(1.0 / (conv.in_channels // conv.groups * conv.kernel_size[0]))
                if conv.bias is not None:
                    conv.bias.zero_()
        x = torch.ones(1, channels, length, dtype=torch.float64)
        fractions = []
        for layer in layers:
            if not isinstance(layer.module, nn.BatchNorm1d):
                x = layer.module(x)
            fractions.append(int((x < 1 - 1e-6).sum()) / x.numel())
    return fractions


def nrmse(y_full, y_stream) -> float:
    """The paper's normalised RMSE: ``sqrt(mean((y_full - y_stream)²)) / (max(y_full) - min(y_full))``.

    >>> nrmse([0.0, 1.0, 2.0], [0.0, 1.0, 2.5])
    0.14433756729740643
    """
    full = np.asarray(torch.as_tensor(y_full).detach().cpu(), dtype=np.float64)
    stream = np.asarray(torch.as_tensor(y_stream).detach().cpu(), dtype=np.float64)
    spread = full.max() - full.min()
    return float(np.sqrt(np.mean((full - stream) ** 2)) / spread) if spread else 0.0


def pooling_error_bound(pool: int, amplitude: float, f_max: float, f_s: float) -> float:
    """Kechris et al. (2025), Eqs. 5-6: the expected error of a pooled frame when the step is misaligned with a
    pooling window of ``pool`` samples, for a signal band-limited to ``f_max`` with peak ``amplitude``, sampled at
    ``f_s`` (Bernstein's inequality bounds the slope by ``2π · A · f_max``).

    >>> round(pooling_error_bound(8, 1.0, 1.0, 256.0), 3)
    0.172
    """
    return (pool - 1) * 2 * math.pi * amplitude * f_max / f_s


def pooling_misalignment_error(signal: torch.Tensor, pool: int, step: int, kind: str = "max") -> float:
    """The largest error between the pooled frames of a window moved by ``step`` samples and the previous window's
    pooled frames that a streaming executor would reuse (those ``step // pool`` frames later): 0 when ``step`` is
    a multiple of ``pool`` (the paper's Fig. 4 experiment)."""
    pooling = F.max_pool1d if kind == "max" else F.avg_pool1d
    x = torch.as_tensor(signal, dtype=torch.float64).reshape(1, 1, -1)
    usable = (x.shape[-1] - step) // pool * pool
    before = pooling(x[..., :usable], pool)[0, 0]
    after = pooling(x[..., step:step + usable], pool)[0, 0]
    shift = step // pool
    return float((after[: len(after) - shift] - before[shift:]).abs().max())


def nearest_aligned_steps(step: int, factor: int) -> list[int]:
    """The valid steps nearest ``step``: multiples of ``factor`` (at least ``factor``)."""
    below = step // factor * factor
    return sorted({max(factor, below), below + factor})


class StreamingCNN:
    """``B`` streams through ``features`` (h) and ``head`` (g) over windows of ``window`` samples every ``step``
    (module docstring).

    Parameters
    ----------
    features
        ``nn.Sequential`` of Conv1d ("same" padding) or :class:`CausalConv1d` (stride 1, any kernel size and dilation),
        BatchNorm1d, pointwise activations, Dropout, and non-overlapping MaxPool1d / AvgPool1d. Run in eval mode.
    head
        Any module taking ``features``' output over a window, [B, C_h, window / P].
    window
        L, in samples; a multiple of ``step`` and of P.
    step
        S, in samples: the chunk ``step`` expects (other chunk lengths that are multiples of P work too).
    mode
        ``exact``, ``approximate`` or ``full``.
    streams
        B, the number of stream slots.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:func:`kernels.device.select_device`).
    allow_misaligned
        Let ``exact`` run with a step that is not a multiple of P (its error is then bounded, not zero).
    """

    kernel_name = "streaminnc_step"  # each step's time goes to vigil_kernel_seconds under this name

    def __init__(self, features: nn.Module, head: nn.Module, window: int, step: int, mode: str = "exact",
                 streams: int = 1, device: str | torch.device | None = None, allow_misaligned: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.features = features.to(self.device).eval()
        self.head = head.to(self.device).eval()
        self.layers = _layers(self.features)
        self.factor = math.prod(layer.pool for layer in self.layers)
        self.window, self.step_size, self.mode, self.streams = window, step, mode, streams
        if step <= 0 or window <= step or window % step:
            raise ValueError(f"window ({window}) must be a multiple of step ({step}) and larger than it")
        if window % self.factor:
            raise ValueError(f"window ({window}) must be a multiple of the pooling factor {self.factor}")
        # A pooling layer is aligned when every step brings it whole pooling windows: S a multiple of P_l · L_p.
        self.misaligned = [layer for layer in self.layers
                           if layer.kind == "pool" and step % (layer.downsampling * layer.pool)]
        if self.misaligned and mode == "exact" and not allow_misaligned:
            first = self.misaligned[0]
            raise ValueError(
                f"step {step} is not aligned with pooling layer {self._index(first.module)} "
                f"({type(first.module).__name__}, window {first.pool} after a downsampling of {first.downsampling}): "
                f"exact streaming needs a step that is a multiple of {self.factor}, e.g. "
                f"{' or '.join(map(str, nearest_aligned_steps(step, self.factor)))} (or allow_misaligned=True)")
        for layer in self.misaligned if mode == "exact" else []:
            warnings.warn(f"step {step} is misaligned with pooling layer {self._index(layer.module)} (window "
                          f"{layer.pool}): its outputs may differ from full recomputation by up to (L_p - 1)·2π·A·f_max"
                          f"/f_s = {(layer.pool - 1) * 2 * math.pi * layer.downsampling:.3g}·A·f_max/f_s for an input "
                          f"of peak A band-limited to f_max and sampled at f_s (pooling_error_bound)", stacklevel=2)
        self.frames = window // self.factor
        self.channels_in = next((layer.module.in_channels for layer in self.layers if layer.kind == "conv"), None)
        self._fresh: dict[str, torch.Tensor] = {}
        self.state: dict[str, torch.Tensor] = {}
        self._allocate()

    def _index(self, module: nn.Module) -> int:
        return next(i for i, layer in enumerate(self.layers) if layer.module is module)

    # State -----------------------------------------------------------------------------------------------------

    def _allocate(self) -> None:
        """State tensors [streams, channels, frames] for every slot, each set to the fresh state: what a stream
        holds after an infinite run of zeros (found by running zeros through one stream until it settles)."""
        with torch.no_grad():
            one = self._zero_state(1)
            settle = -(-(receptive_field(self.features) + self.window) // self.step_size) + 1
            zeros = torch.zeros(1, self._input_channels(), self.step_size, device=self.device)
            for _ in range(settle):
                self._advance(one, zeros)
            self._fresh = {name: tensor[0] for name, tensor in one.items()}
            self._set_state({name: tensor.expand(self.streams, *tensor.shape) for name, tensor in self._fresh.items()})

    def _set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Adopt ``state`` (copied). The aggregation buffer lives in a ring twice its length: a step writes its new
        frames after the window and ``state["aggregate"]`` is a view of the last ``frames``, so the window is never
        copied; once the ring is full, the window moves back to its start (one copy every ``frames`` new frames)."""
        self.state = {name: tensor.clone() for name, tensor in state.items() if name != "aggregate"}
        if "aggregate" in state:
            window = state["aggregate"]
            self._ring = window.new_empty(*window.shape[:2], 2 * self.frames)
            self._ring[..., : self.frames] = window
            self._position = self.frames
            self.state["aggregate"] = self._ring[..., : self.frames]

    def _input_channels(self) -> int:
        if self.channels_in is not None:
            return self.channels_in
        raise ValueError("features need a convolution to know their input channels")

    def _zero_state(self, streams: int) -> dict[str, torch.Tensor]:
        """All-zero state of the right shapes (channels found by running one zero frame block through h)."""
        state = {}
        with torch.no_grad():
            x = torch.zeros(1, self._input_channels(), self.factor, device=self.device)
            if self.mode == "full":
                return {"window": torch.zeros(streams, x.shape[1], self.window, device=self.device)}
            for i, layer in enumerate(self.layers):
                if self.mode == "exact" and layer.kind == "conv":
                    state[f"context{i}"] = torch.zeros(streams, x.shape[1], layer.context, device=self.device)
                if layer.kind == "pool":
                    state[f"pending{i}"] = torch.zeros(streams, x.shape[1], 0, device=self.device)
                x = layer.module(x)
            state["aggregate"] = torch.zeros(streams, x.shape[1], self.frames, device=self.device)
        return state

    def reset(self, slots: Sequence[int] | np.ndarray | torch.Tensor | None = None) -> None:
        """Return these stream slots (all when None) to the fresh state."""
        for name, tensor in self.state.items():
            if slots is None:
                tensor[:] = self._fresh[name]
            else:
                tensor[torch.as_tensor(slots, dtype=torch.long, device=self.device)] = self._fresh[name]

    def resize(self, streams: int) -> None:
        """Grow (or shrink) to ``streams`` slots; new slots are fresh."""
        resized = {}
        for name, tensor in self.state.items():
            if streams > len(tensor):
                resized[name] = torch.cat([tensor, self._fresh[name].expand(streams - len(tensor), *self._fresh[name].shape)])
            else:
                resized[name] = tensor[:streams]
        self._set_state(resized)
        self.streams = streams

    # Stepping --------------------------------------------------------------------------------------------------

    def step(self, x_new, slots: Sequence[int] | np.ndarray | None = None, block: int | None = None) -> torch.Tensor:
        """Feed each stream its next samples, ``x_new`` [B, C, n] (n a multiple of P, usually ``step``), and return
        the head's output for the window that ends with them, [B, ...]. With ``slots``, only those streams step
        (``x_new`` then has one row per slot); with ``block`` as well, they are computed in a padded batch of exactly
        ``block`` streams, so each stream's arithmetic (and its result, bit for bit) does not depend on how many
        streams step together."""
        x_new = to_device(x_new, self.device, torch.float32)
        with timed(self.kernel_name, self.device.type), torch.no_grad():
            if slots is None:
                return self._advance(self.state, x_new)
            index = torch.as_tensor(np.asarray(slots, dtype=np.int64), device=self.device)
            state = {name: tensor.index_select(0, index) for name, tensor in self.state.items()}
            count, pad = len(index), (block - len(index) if block else 0)
            if pad < 0:
                raise ValueError(f"{len(index)} streams do not fit a block of {block}")
            if pad:
                state = {name: torch.cat([tensor, self._fresh[name].expand(pad, *self._fresh[name].shape)])
                         for name, tensor in state.items()}
                x_new = torch.cat([x_new, x_new.new_zeros(pad, *x_new.shape[1:])])
            output = self._advance(state, x_new)
            for name, tensor in state.items():
                if tensor.shape[1:] != self.state[name].shape[1:]:
                    raise ValueError(f"a chunk of {x_new.shape[-1]} samples leaves some streams with a partial "
                                     f"pooling window the others lack; step subsets with multiples of {self.factor}")
                self.state[name].index_copy_(0, index, tensor[:count])
            return output[:count]

    def _advance(self, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.mode == "full":
            window = torch.cat([state["window"], x], dim=2)[..., -self.window:]
            state["window"] = window
            return self.head(self.features(window))
        for i, layer in enumerate(self.layers):
            if layer.kind == "conv":
                conv = layer.module
                if self.mode == "exact":
                    padded = torch.cat([state[f"context{i}"], x], dim=2)
                    state[f"context{i}"] = padded[..., padded.shape[-1] - layer.context:]
                else:
                    padded = F.pad(x, (layer.context - layer.right_padding, layer.right_padding))
                x = F.conv1d(padded, conv.weight, conv.bias, dilation=conv.dilation, groups=conv.groups)
            elif layer.kind == "pool":
                pending = state[f"pending{i}"]
                waiting = torch.cat([pending, x], dim=2) if pending.shape[-1] else x  # aligned steps leave none
                ready = waiting.shape[-1] // layer.pool * layer.pool
                state[f"pending{i}"] = waiting[..., ready:]
                x = layer.module(waiting[..., :ready])
            else:
                x = layer.module(x)
        if state is self.state:  # every stream steps: append to the ring
            if self._position + x.shape[-1] > self._ring.shape[-1]:
                self._ring[..., : self.frames] = self._ring[..., self._position - self.frames : self._position].clone()
                self._position = self.frames
            self._ring[..., self._position : self._position + x.shape[-1]] = x
            self._position += x.shape[-1]
            state["aggregate"] = self._ring[..., self._position - self.frames : self._position]
        else:
            state["aggregate"] = torch.cat([state["aggregate"], x], dim=2)[..., -self.frames:]
        return self.head(state["aggregate"])

    # Reporting -------------------------------------------------------------------------------------------------

    def pooling_error_bound(self, amplitude: float, f_max: float, f_s: float) -> dict[int, float]:
        """Per misaligned pooling layer (by index in ``features``), the paper's bound on its output error for a
        signal of peak ``amplitude`` band-limited to ``f_max`` and sampled at ``f_s`` (empty when aligned)."""
        return {self._index(layer.module): pooling_error_bound(layer.pool, amplitude, f_max, f_s / layer.downsampling)
                for layer in self.misaligned}

    def state_bytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self.state.values())
