"""Heartbeat-like waveforms with abnormal beats, and the small streaming CNN the demo runs on them.

Each entity's ``ecg`` field is one sample of a synthetic electrocardiogram-like signal per event: beats every 14 to
18 samples (a small P wave, a sharp QRS complex, a T wave), baseline wander and noise. About one beat in sixteen is
abnormal, shaped like a premature ventricular contraction: early, without P wave, a wide and taller QRS, an inverted
T wave, then a compensatory pause. :attr:`HeartbeatSignal.abnormal` is the ground truth (the sample of each abnormal
beat's peak).

The demo's ``cnn`` operator reads ``ecg`` in windows of 64 samples, stepping every 16, and scores the probability
that the newest step holds an abnormal beat's peak. ``python -m pipeline.demo.heartbeat`` trains that model in a few
seconds on signals of other seeds, with the signal-padding recipe of Kechris et al. (2025): every training window is
extended by the feature extractor's receptive field of past samples and only the window's own frames reach the head,
so the streamed model computes exactly what was trained. It writes ``pipeline/demo/models/heartbeat_cnn.pt``.

>>> signal = HeartbeatSignal(entities=2, samples=200, seed=1)
>>> signal.values.shape, all(0 <= t < 200 for beats in signal.abnormal for t in beats)
((200, 2), True)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

WINDOW, STEP = 64, 16
MODEL_PATH = Path(__file__).parent / "models" / "heartbeat_cnn.pt"
ABNORMAL_RATE = 1 / 16
SPEC = {
    "format": "vigil-cnn/1", "channels": 1, "window": WINDOW, "step": STEP, "outputs": ["normal", "abnormal"],
    "features": [
        {"type": "conv", "in": 1, "out": 8, "kernel": 5, "padding": "causal"}, {"type": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "conv", "in": 8, "out": 16, "kernel": 3, "dilation": 2, "padding": "causal"}, {"type": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "conv", "in": 16, "out": 16, "kernel": 3, "dilation": 2, "padding": "causal"}, {"type": "relu"},
    ],
    "head": [{"type": "flatten"}, {"type": "linear", "in": 16 * WINDOW // 4, "out": 32}, {"type": "relu"},
             {"type": "linear", "in": 32, "out": 2}],
}


def _bump(n: np.ndarray, centre: float, width: float, height: float) -> np.ndarray:
    return height * np.exp(-0.5 * ((n - centre) / width) ** 2)


class HeartbeatSignal:
    """Samples (samples, entities) and, per entity, the sample index of every abnormal beat's peak."""

    def __init__(self, *, entities: int, samples: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 0xECC])  # its own stream: the other demo fields keep their values
        n = np.arange(samples, dtype=np.float64)
        self.values = np.zeros((samples, entities))
        self.abnormal: list[list[int]] = []
        for entity in range(entities):
            period, scale = rng.uniform(14, 18), rng.uniform(0.8, 1.2)
            signal = 0.1 * np.sin(2 * np.pi * (n / rng.uniform(150, 400) + rng.uniform()))  # baseline wander
            peaks, t, previous_abnormal = [], rng.uniform(2, period), False
            while t < samples + 8:
                abnormal = not previous_abnormal and t > 2 * period and rng.random() < ABNORMAL_RATE
                if abnormal:
                    peak = t - rng.uniform(3, 5)  # premature
                    signal += _bump(n, peak, 1.8, 1.5) + _bump(n, peak + 6, 2.5, -0.45)
                    if 0 <= round(peak) < samples:
                        peaks.append(int(round(peak)))
                    t += period * 1.3  # compensatory pause
                else:
                    peak = t + rng.normal(0, 0.4)
                    signal += (_bump(n, peak - 4, 1.2, 0.15) + _bump(n, peak - 1, 0.5, -0.1) + _bump(n, peak, 0.6, 1.0)
                               + _bump(n, peak + 1, 0.5, -0.25) + _bump(n, peak + 5, 2.0, 0.3))
                    t += period + rng.normal(0, 0.5)
                previous_abnormal = abnormal
            self.values[:, entity] = scale * signal + rng.normal(0, 0.04, samples)
            self.abnormal.append(peaks)

    def step_labels(self, entity: int, step: int = STEP) -> np.ndarray:
        """1 for each step of ``step`` samples that holds an abnormal beat's peak."""
        labels = np.zeros(len(self.values) // step, dtype=np.int64)
        for peak in self.abnormal[entity]:
            if peak // step < len(labels):
                labels[peak // step] = 1
        return labels


def training_set(signal: HeartbeatSignal, extension: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``WINDOW + extension`` samples ending at every step boundary, and whether their newest step holds
    an abnormal peak."""
    from kernels.streaminnc import signal_padding_windows

    windows, labels = [], []
    for entity in range(signal.values.shape[1]):
        x = signal.values[:, entity][None]
        found = signal_padding_windows(x, WINDOW, STEP, extension)
        first_end = (extension + WINDOW) // STEP
        windows.append(found)
        labels.append(signal.step_labels(entity)[first_end - 1: first_end - 1 + len(found)])
    return np.concatenate(windows).astype(np.float32), np.concatenate(labels)


def train(out: Path = MODEL_PATH, seed: int = 11, epochs: int = 6) -> dict:
    """Train the demo model on fresh signals and write it to ``out``; returns its precision and recall on a held-out
    signal (per step, threshold 0.5)."""
    import torch

    from kernels.cnn_model import build_modules, save_model
    from kernels.streaminnc import SignalPaddedModel, receptive_field

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    features, head = build_modules(SPEC)
    extension = -(-receptive_field(features) // STEP) * STEP
    model = SignalPaddedModel(features, head, WINDOW)
    x, y = training_set(HeartbeatSignal(entities=200, samples=2000, seed=seed), extension)
    x_test, y_test = training_set(HeartbeatSignal(entities=50, samples=2000, seed=seed + 1), extension)
    x, y, x_test = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x_test)
    weight = torch.tensor([1.0, float((y == 0).sum() / max(1, (y == 1).sum()))])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    started = time.perf_counter()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(256):
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch], weight=weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        predicted = (torch.softmax(model(x_test), dim=-1)[:, 1] >= 0.5).numpy()
    true_positive = int((predicted & (y_test == 1)).sum())
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(out, SPEC, features, head)
    return {"seconds": round(time.perf_counter() - started, 1), "windows": len(x),
            "precision": true_positive / max(1, int(predicted.sum())), "recall": true_positive / max(1, int(y_test.sum()))}


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the demo's heartbeat CNN (signal-padding recipe).")
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    print(train(args.out, args.seed, args.epochs))


if __name__ == "__main__":
    main()
