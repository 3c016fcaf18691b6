"""CNN model files: an architecture spec as plain data plus a state dict, loaded without unpickling code.

A model file is what :func:`save_model` writes with ``torch.save``: ``{"spec": ..., "state_dict": ...}``, where the
spec holds only strings, numbers, lists and dicts. :func:`load_model` reads it back with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, builds the feature
extractor and the head from the spec and loads the weights strictly. An unknown layer type or a state dict that does
not fit the architecture is refused with a message that names it.

Spec::

    {"format": "vigil-cnn/1", "channels": 1, "window": 64, "step": 16, "outputs": ["normal", "abnormal"],
     "features": [{"type": "conv", "in": 1, "out": 8, "kernel": 5, "dilation": 1, "padding": "causal"},
                  {"type": "relu"}, {"type": "maxpool", "size": 2}, ...],
     "head": [{"type": "flatten"}, {"type": "linear", "in": 128, "out": 2}]}

Layer types: ``conv`` (``padding`` "causal" or "same"), ``batchnorm`` (``channels``), ``relu``, ``gelu``, ``tanh``,
``sigmoid``, ``elu``, ``silu``, ``leaky_relu``, ``dropout`` (``p``), ``maxpool`` and ``avgpool`` (``size``), and in
the head also ``flatten``, ``linear`` (``in``, ``out``) and ``global_avgpool`` (the mean over time).

>>> import tempfile, pathlib
>>> spec = {"format": FORMAT, "channels": 1, "window": 8, "step": 4, "outputs": ["score"],
...         "features": [{"type": "conv", "in": 1, "out": 2, "kernel": 3, "padding": "causal"}, {"type": "relu"}],
...         "head": [{"type": "global_avgpool"}, {"type": "linear", "in": 2, "out": 1}]}
>>> features, head = build_modules(spec)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
>>> save_model(path, spec, features, head)
>>> load_model(path).spec["window"]
8
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kernels.streaminnc import CausalConv1d

FORMAT = "vigil-cnn/1"
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU,
               "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}
FEATURE_LAYERS = ("conv", "batchnorm", "dropout", "maxpool", "avgpool", *ACTIVATIONS)
HEAD_LAYERS = (*FEATURE_LAYERS, "flatten", "linear", "global_avgpool")


class GlobalAveragePool(nn.Module):
    """The mean over the time axis: [B, C, T] to [B, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1)


@dataclass
class CnnModel:
    spec: dict[str, Any]
    features: nn.Sequential
    head: nn.Sequential


def _layer(entry: dict[str, Any], allowed: tuple[str, ...], where: str) -> nn.Module:
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind not in allowed:
        raise ValueError(f"{where}: unknown layer type {kind!r} (known: {', '.join(allowed)})")
    try:
        if kind == "conv":
            padding, size, dilation = entry.get("padding", "causal"), int(entry["kernel"]), int(entry.get("dilation", 1))
            if padding == "causal":
                return CausalConv1d(int(entry["in"]), int(entry["out"]), size, dilation=dilation)
            if padding == "same":
                return nn.Conv1d(int(entry["in"]), int(entry["out"]), size, dilation=dilation, padding="same")
            raise ValueError(f"{where}: conv padding must be 'causal' or 'same', not {padding!r}")
        if kind == "batchnorm":
            return nn.BatchNorm1d(int(entry["channels"]))
        if kind == "dropout":
            return nn.Dropout(float(entry.get("p", 0.5)))
        if kind in ("maxpool", "avgpool"):
            return (nn.MaxPool1d if kind == "maxpool" else nn.AvgPool1d)(int(entry["size"]))
        if kind == "flatten":
            return nn.Flatten()
        if kind == "linear":
            return nn.Linear(int(entry["in"]), int(entry["out"]))
        if kind == "global_avgpool":
            return GlobalAveragePool()
        return ACTIVATIONS[kind]()
    except KeyError as missing:
        raise ValueError(f"{where}: {kind} needs {missing.args[0]!r}") from None


def build_modules(spec: dict[str, Any]) -> tuple[nn.Sequential, nn.Sequential]:
    """The feature extractor and the head a spec describes (fresh weights)."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} model spec")
    features = nn.Sequential(*[_layer(e, FEATURE_LAYERS, f"features[{i}]") for i, e in enumerate(spec.get("features", []))])
    head = nn.Sequential(*[_layer(e, HEAD_LAYERS, f"head[{i}]") for i, e in enumerate(spec.get("head", []))])
    if not len(features):
        raise ValueError("the spec has no feature layers")
    return features, head


def save_model(path: str | Path, spec: dict[str, Any], features: nn.Module, head: nn.Module) -> None:
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    torch.save({"spec": spec, "state_dict": state}, path)


def load_model(path: str | Path) -> CnnModel:
    """The model in ``path`` (``torch.load(weights_only=True)``: no code is unpickled), in eval mode."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"model file {str(path)!r} not found") from None
    except Exception as error:  # an unsafe or corrupt file: torch raises UnpicklingError, RuntimeError, ...
        raise ValueError(f"model file {str(path)!r} cannot be loaded safely: {str(error).splitlines()[0]}") from None
    if not isinstance(content, dict) or not {"spec", "state_dict"} <= set(content):
        raise ValueError(f"model file {str(path)!r} holds no spec and state_dict")
    features, head = build_modules(content["spec"])
    state = content["state_dict"]
    for prefix, module in (("features.", features), ("head.", head)):
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as error:
            details = " ".join(line.strip() for line in str(error).splitlines()[1:])
            raise ValueError(f"model file {str(path)!r}: the state dict does not fit the {prefix[:-1]} of the spec: "
                             f"{details}") from None
    unknown = [k for k in state if not k.startswith(("features.", "head."))]
    if unknown:
        raise ValueError(f"model file {str(path)!r}: unexpected state dict keys {unknown[:3]}")
    return CnnModel(content["spec"], features.eval(), head.eval())
