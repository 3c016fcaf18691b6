"""StreamiNNC's executor against its references (Kechris et al., 2025): exact streaming equals the features run
causally on the signal-padded history, chunking does not matter, misaligned steps are refused or bounded, and the
zero-padding diagnostic and pooling bound reproduce the paper's figures."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from kernels.streaminnc import (CausalConv1d, StreamingCNN, downsampling_factor, nrmse, pooling_error_bound,
                                pooling_misalignment_error, receptive_field, signal_padded_features,
                                zero_padding_diagnostic)


def random_architecture(rng: np.random.Generator, channels: int) -> tuple[nn.Sequential, int]:
    """1 to 3 blocks of 1 or 2 convolutions (kernel 1 to 5, dilation 1 to 3, causal or "same"), BatchNorm with
    random statistics, an activation and, in most blocks, max or average pooling of 2 or 3; and its output channels."""
    layers, width = [], channels
    for _ in range(int(rng.integers(1, 4))):
        for _ in range(int(rng.integers(1, 3))):
            out, k, d = int(rng.integers(2, 9)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
            layers.append(CausalConv1d(width, out, k, dilation=d) if rng.random() < 0.5
                          else nn.Conv1d(width, out, k, dilation=d, padding="same"))
            norm = nn.BatchNorm1d(out)
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            layers += [norm, [nn.ReLU(), nn.Tanh(), nn.GELU()][int(rng.integers(0, 3))]]
            width = out
        if rng.random() < 0.7:
            size = int(rng.integers(2, 4))
            layers.append(nn.MaxPool1d(size) if rng.random() < 0.5 else nn.AvgPool1d(size))
    return nn.Sequential(*layers).eval(), width


def head_for(width: int, frames: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(width * frames, 3)).eval()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("streams", [1, 256])
def test_exact_streaming_equals_the_signal_padded_reference(seed, streams):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    channels = int(rng.integers(1, 4))
    features, width = random_architecture(rng, channels)
    factor = downsampling_factor(features)
    step = factor * int(rng.integers(1, 3))
    window = step * int(rng.integers(2, 5))
    head = head_for(width, window // factor)
    cnn = StreamingCNN(features, head, window, step, mode="exact", streams=streams)
    field = receptive_field(features)
    prefix = -(-(field + window) // factor) * factor  # zeros before the stream: its fresh state has seen zeros forever
    history = torch.zeros(streams, channels, prefix)
    steps = -(-(field + window) // step) + 3
    with torch.no_grad():
        for n in range(steps):
            chunk = torch.randn(streams, channels, step)
            history = torch.cat([history, chunk], dim=2)
            got = cnn.step(chunk)
            want = head(signal_padded_features(features, history, window // factor))
            assert (got - want).abs().max() <= 1e-5, (n, (got - want).abs().max())
        # After ceil((receptive field + window) / step) steps the stream's own samples are enough: no zeros needed.
        real = history[..., prefix:]
        assert (got - head(signal_padded_features(features, real, window // factor))).abs().max() <= 1e-5


def test_chunking_does_not_change_the_outputs():
    torch.manual_seed(3)
    features = nn.Sequential(CausalConv1d(2, 6, 3, dilation=2), nn.ReLU(), nn.MaxPool1d(2),
                             nn.Conv1d(6, 8, 3, padding="same"), nn.ReLU(), nn.AvgPool1d(2)).eval()
    head = head_for(8, 8)
    for mode in ("exact", "full"):
        whole, pieces = (StreamingCNN(features, head, 32, 8, mode=mode, streams=5) for _ in range(2))
        for _ in range(10):
            chunk = torch.randn(5, 2, 8)
            expected = whole.step(chunk)
            for part in chunk.split(downsampling_factor(features), dim=2):
                got = pieces.step(part)
            assert torch.allclose(got, expected, atol=1e-6), mode


def test_a_misaligned_step_is_refused_with_the_layer_and_the_nearest_steps():
    features = nn.Sequential(nn.Conv1d(1, 4, 3, padding="same"), nn.MaxPool1d(4), nn.Conv1d(4, 4, 3, padding="same"),
                             nn.MaxPool1d(2))
    with pytest.raises(ValueError, match=r"step 12 is not aligned with pooling layer 3 \(MaxPool1d, window 2 after a "
                                         r"downsampling of 4\).*multiple of 8, e.g. 8 or 16"):
        StreamingCNN(features, head_for(4, 6), 48, 12)
    with pytest.warns(UserWarning, match=r"misaligned with pooling layer 3 \(window 2\).*up to \(L_p - 1\)"):
        allowed = StreamingCNN(features, head_for(4, 6), 48, 12, allow_misaligned=True)
    bound = allowed.pooling_error_bound(amplitude=1.0, f_max=1.0, f_s=256.0)
    assert list(bound) == [3] and bound[3] == pytest.approx(pooling_error_bound(2, 1.0, 1.0, 64.0))
    assert allowed.step(torch.randn(1, 1, 12)).shape == (1, 3)


def test_non_streamable_layers_are_refused():
    with pytest.raises(ValueError, match="layer 1 .LSTM.: not a streamable layer"):
        StreamingCNN(nn.Sequential(nn.Conv1d(1, 2, 3, padding="same"), nn.LSTM(2, 2)), nn.Flatten(), 8, 4)
    with pytest.raises(ValueError, match="layer 0 .Conv1d.: only stride-1"):
        StreamingCNN(nn.Sequential(nn.Conv1d(1, 2, 3, stride=2)), nn.Flatten(), 8, 4)
    with pytest.raises(ValueError, match="neither 'same' nor causal"):
        StreamingCNN(nn.Sequential(nn.Conv1d(1, 2, 3)), nn.Flatten(), 8, 4)
    with pytest.raises(ValueError, match="only non-overlapping pooling"):
        StreamingCNN(nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.MaxPool1d(3, stride=2)), nn.Flatten(), 8, 4)


def test_zero_padding_diagnostic_reproduces_the_papers_figures():
    accelerometer = nn.Sequential(*[nn.Conv1d(c_in, c_out, 3, padding="same")
                                    for c_in, c_out in zip([4, 8, 16, 32, 64, 128], [8, 16, 32, 64, 128, 256])])
    assert zero_padding_diagnostic(accelerometer, 960)[-1] == pytest.approx(12 / 960)
    eeg = nn.Sequential(*[layer for c_in in (18, 128, 128) for layer in (nn.Conv1d(c_in, 128, 3, padding=1),
                                                                         nn.BatchNorm1d(128), nn.ReLU(), nn.MaxPool1d(4))])
    fractions = zero_padding_diagnostic(eeg, 1024)
    assert fractions[8] == pytest.approx(2 / 64)  # the last convolution: 2 of its 64 frames read padding


def test_pooling_error_is_bounded_when_misaligned_and_zero_when_aligned():
    f_s, pool = 256.0, 8
    t = np.arange(8 * 256) / f_s
    signal = np.cos(2 * np.pi * 1.0 * t)
    bound = pooling_error_bound(pool, 1.0, 1.0, f_s)
    assert bound == pytest.approx(7 * 2 * math.pi / 256) and round(bound, 3) == 0.172
    for step in range(1, pool):
        error = pooling_misalignment_error(signal, pool, step)
        assert 0 < error <= bound, step
    assert pooling_misalignment_error(signal, pool, pool) == 0.0


def test_streams_step_reset_and_resize_by_slot():
    torch.manual_seed(5)
    features = nn.Sequential(CausalConv1d(1, 4, 3), nn.ReLU(), nn.MaxPool1d(2)).eval()
    head = head_for(4, 8)
    many = StreamingCNN(features, head, 16, 4, streams=4)
    alone = StreamingCNN(features, head, 16, 4, streams=1)
    for _ in range(6):
        chunk = torch.randn(1, 1, 4)
        assert torch.allclose(many.step(chunk, slots=[2]), alone.step(chunk), atol=1e-6)
    many.reset([2])
    fresh = StreamingCNN(features, head, 16, 4, streams=1)
    chunk = torch.randn(1, 1, 4)
    assert torch.allclose(many.step(chunk, slots=[2]), fresh.step(chunk), atol=1e-6)
    many.resize(9)
    assert many.step(torch.randn(9, 1, 4)).shape == (9, 3)


def test_approximate_mode_runs_each_chunk_alone_with_zero_padding():
    torch.manual_seed(1)
    features = nn.Sequential(nn.Conv1d(1, 4, 5, padding="same"), nn.ReLU(), nn.AvgPool1d(2)).eval()
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 16, 1)).eval()
    approximate = StreamingCNN(features, head, 32, 8, mode="approximate", streams=2)
    full = StreamingCNN(features, head, 32, 8, mode="full", streams=2)
    chunks = [torch.randn(2, 1, 8) for _ in range(8)]
    outputs = [approximate.step(chunk) for chunk in chunks]
    expected = head(torch.cat([features(chunk) for chunk in chunks[-4:]], dim=2))  # the last 4 chunks, each alone
    assert torch.allclose(outputs[-1], expected, atol=1e-6)
    full_outputs = [full.step(chunk) for chunk in chunks]
    assert 0 < nrmse(torch.cat(full_outputs[4:]), torch.cat(outputs[4:])) < 1
