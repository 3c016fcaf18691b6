"""MLP autoencoders for tabular outlier scoring: the probabilistic one (PAE) and the plain MSE baseline.

Layer widths follow the authors' rule by input width d (Tan et al., their code; ``round`` is
Python's)::

    d < 20      encoder d -> d/2                  decoder -> out
    20..99      encoder d -> d/2 -> d/4           decoder -> d/2 -> out
    100..199    encoder d -> d/2 -> d/4 -> d/8    decoder -> d/4 -> d/2 -> out
    >= 200      encoder d -> d/2 -> d/4 -> d/16   decoder -> d/4 -> d/2 -> out

with ReLU after every encoder layer (the latent one included) and between decoder layers, and a linear
output of width d (plain) or 2d (probabilistic: a mean and a raw variance per dimension).
Training is full-batch Adam (lr 1e-3, halved every 1000 epochs); the PAE trains on APRE with
alpha = beta = 1 and the plain one on the summed squared error.

>>> [layer.out_features for layer in AutoEncoder(64, probabilistic=True).modules() if hasattr(layer, "out_features")]
[32, 16, 32, 128]

References
----------
Tan, X., Yang, J., Chen, J., Rahardja, S. and Rahardja, S. (2025). MSS-PAE: Saving autoencoder-based
outlier detection from unexpected reconstruction. *Pattern Recognition* 163, 111467 (arXiv 2304.00709);
the authors' code: github.com/Ra1demmmm/Autoencoder-based-Outlier-Detection.
"""
from __future__ import annotations

import torch
from torch import nn

from kernels.apre import apre, squared_error


def hidden_widths(d: int) -> list[int]:
    """Encoder widths after the input, the last being the latent width."""
    if d < 20:
        fractions = (2,)
    elif d < 100:
        fractions = (2, 4)
    elif d < 200:
        fractions = (2, 4, 8)
    else:
        fractions = (2, 4, 16)
    return [max(1, round(d / f)) for f in fractions]


class AutoEncoder(nn.Module):
    def __init__(self, d: int, probabilistic: bool) -> None:
        super().__init__()
        self.d = d
        self.probabilistic = probabilistic
        widths = [d, *hidden_widths(d)]
        encoder: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            encoder += [nn.Linear(a, b), nn.ReLU()]
        decoder_widths = [widths[-1], *reversed(widths[1:-1]), 2 * d if probabilistic else d]
        decoder: list[nn.Module] = []
        for a, b in zip(decoder_widths, decoder_widths[1:]):
            decoder += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*encoder, *decoder[:-1])  # linear output

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, raw variance) for the probabilistic model, (reconstruction, None) for the plain one."""
        out = self.net(x)
        if self.probabilistic:
            mu, raw = out.chunk(2, dim=-1)
            return mu, raw
        return out, None

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, raw = self(x)
        per_sample = apre(x, mu, raw, 1.0, 1.0) if raw is not None else squared_error(x, mu)
        return per_sample.mean()

    def score(self, x: torch.Tensor, target: torch.Tensor | None = None, alpha: float = 0.5, beta: float = 2.0) -> torch.Tensor:
        """Outlier scores of ``x`` against ``target`` (x itself by default; its mean-shifted version for MSS)."""
        target = x if target is None else target
        with torch.no_grad():
            mu, raw = self(x)
            return apre(target, mu, raw, alpha, beta) if raw is not None else squared_error(target, mu)


def fit(model: AutoEncoder, data: torch.Tensor, epochs: int, lr: float = 1e-3) -> AutoEncoder:
    """Full-batch training; the caller seeds torch for reproducibility."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=1000, gamma=0.5)
    model.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        model.training_loss(data).backward()
        optimiser.step()
        schedule.step()
    model.eval()
    return model
