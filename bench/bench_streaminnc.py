"""Streaming CNN inference: time per step of exact and approximate streaming against full recomputation.

The model is in the style of the paper's accelerometer network (Kechris et al., 2025, f_ACC), the one the paper timed:
3 x [Conv1d k = 3 "same", BatchNorm, ReLU] with 32, 64 and 64 filters on 4 input channels at full resolution, then
one MaxPool 16 and a global average and a dense layer as the head; window L = 1536 samples (every step of L/S in
{2, 3, 4, 6, 8, 12} is a multiple of 16). The head is recomputed on the whole window at every step in every mode, so
a head that reads many frames caps any streaming speedup (a global average over 1536 unpooled frames of 64 channels
costs a few milliseconds a step here), and a convolution run on few new frames per step is less efficient; the final
pooling keeps the head small and every convolution runs on all the new samples.

For every L/S and batches of 64 and 1024 streams it times ``StreamingCNN.step`` in ``full``, ``exact`` and
``approximate`` mode after a warm-up (one torch thread, as the pipeline runs; the median step, the modes taking
turns step by step), reports each mode's speedup over ``full`` next to 0.8 L/S, and the NRMSE of the streamed
outputs against full recomputation as the paper defines it (RMSE / (max - min of the full outputs)) on a noisy
multi-tone input. On a machine with CUDA it adds the same rows on the GPU.

    .venv/bin/python bench/bench_streaminnc.py > bench/results/streaminnc.md
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.streaminnc import StreamingCNN, nrmse  # noqa: E402

WINDOW = 1536
RATIOS = (2, 3, 4, 6, 8, 12)


def streaming_model(seed: int = 0) -> tuple[nn.Sequential, nn.Sequential]:
    torch.manual_seed(seed)
    widths = (4, 32, 64, 64)
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths, widths[1:]):
        norm = nn.BatchNorm1d(c_out)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        layers += [nn.Conv1d(c_in, c_out, 3, padding="same"), norm, nn.ReLU()]
    layers.append(nn.MaxPool1d(16))
    head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, 2))
    return nn.Sequential(*layers).eval(), head.eval()


def signal(streams: int, samples: int, device: torch.device) -> torch.Tensor:
    """Four channels of a few tones plus noise per stream (a stand-in for wrist accelerometry)."""
    t = torch.arange(samples, dtype=torch.float32) / 32.0
    phase = torch.rand(streams, 4, 1) * 2 * math.pi
    x = sum(torch.sin(2 * math.pi * f * t + phase * f) / f for f in (0.5, 1.3, 2.9))
    return (x + 0.2 * torch.randn(streams, 4, samples)).to(device)


def seconds_per_step(executors: dict[str, StreamingCNN], x: torch.Tensor, steps: int) -> dict:
    """Per mode, the median time of a step over ``steps`` steps after a window of warm-up. The modes take turns
    step by step, so a slow spell of the machine hits them alike, and the median ignores the odd slow step."""
    step = next(iter(executors.values())).step_size
    chunks = x.split(step, dim=2)
    warm = WINDOW // step
    for cnn in executors.values():
        for chunk in chunks[:warm]:
            cnn.step(chunk)
    times: dict[str, list[float]] = {mode: [] for mode in executors}
    for chunk in chunks[warm: warm + steps]:
        for mode, cnn in executors.items():
            started = time.perf_counter()
            cnn.step(chunk)
            if cnn.device.type == "cuda":
                torch.cuda.synchronize()
            times[mode].append(time.perf_counter() - started)
    return {mode: statistics.median(values) for mode, values in times.items()}


def outputs(cnn: StreamingCNN, x: torch.Tensor) -> torch.Tensor:
    chunks = x.split(cnn.step_size, dim=2)
    return torch.stack([cnn.step(chunk) for chunk in chunks])[2 * WINDOW // cnn.step_size:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="64,1024", help="batch sizes (streams)")
    parser.add_argument("--steps", type=int, default=9, help="timed steps per mode (after a window of warm-up)")
    parser.add_argument("--ratios", default=",".join(map(str, RATIOS)), help="the L/S values")
    parser.add_argument("--device", default="cpu,cuda", help="devices to try (cuda only when available)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    features, head = streaming_model()
    devices = [torch.device(d) for d in args.device.split(",") if d != "cuda" or torch.cuda.is_available()]
    print(f"# Streaming CNN (StreamiNNC): time per step, window {WINDOW}\n")
    print(f"`python bench/bench_streaminnc.py {' '.join(sys.argv[1:])}`; Python {platform.python_version()}, "
          f"torch {torch.__version__}, one torch thread; {', '.join(d.type for d in devices)}"
          + ("" if torch.cuda.is_available() else "; no GPU was available: no CUDA rows") + "\n")
    print("| device | streams | L/S | step S | full ms/step | exact ms/step | exact speedup | 0.8·L/S | "
          "approximate ms/step | approximate speedup | NRMSE exact | NRMSE approximate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for streams in (int(b) for b in args.streams.split(",")):
            for ratio in (int(r) for r in args.ratios.split(",")):
                step = WINDOW // ratio
                x = signal(streams, WINDOW + step * args.steps, device)
                timed = seconds_per_step({mode: StreamingCNN(features, head, WINDOW, step, mode=mode, streams=streams,
                                                             device=device) for mode in ("full", "exact", "approximate")},
                                         x, args.steps)
                probe = signal(8, 4 * WINDOW, device)
                full = outputs(StreamingCNN(features, head, WINDOW, step, mode="full", streams=8, device=device), probe)
                errors = {mode: nrmse(full, outputs(StreamingCNN(features, head, WINDOW, step, mode=mode, streams=8,
                                                                 device=device), probe))
                          for mode in ("exact", "approximate")}
                print(f"| {device.type} | {streams} | {ratio} | {step} | {timed['full'] * 1e3:.2f} | "
                      f"{timed['exact'] * 1e3:.2f} | {timed['full'] / timed['exact']:.2f}x | {0.8 * ratio:.1f}x | "
                      f"{timed['approximate'] * 1e3:.2f} | {timed['full'] / timed['approximate']:.2f}x | "
                      f"{errors['exact'] * 100:.2f} % | {errors['approximate'] * 100:.2f} % |", flush=True)


if __name__ == "__main__":
    main()
