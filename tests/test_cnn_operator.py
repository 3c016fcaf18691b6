"""The `cnn` operator: model files are loaded safely and checked by `vigil config check`, and in the dataflow its
scores equal the streaming executor run on each entity's samples directly."""
from __future__ import annotations

import pickle
from datetime import timedelta

import msgspec
import numpy as np
import pytest
import torch
from bytewax.testing import TestingSink, TestingSource, run_main

from kernels.cnn_model import FORMAT, build_modules, load_model, save_model
from kernels.streaminnc import StreamingCNN, receptive_field
from operators.cnn import CnnParams
from operators.registry import OperatorSpec
from pipeline.cli import main as vigil_main
from pipeline.engine.dataflow import Batching, EntityLimits, ScoredEvent, build_flow
from pipeline.engine.decode import RecordBatch
from pipeline.engine.metrics import Metrics

SPEC = {"format": FORMAT, "channels": 2, "window": 16, "step": 4, "outputs": ["normal", "abnormal"],
        "features": [{"type": "conv", "in": 2, "out": 6, "kernel": 3, "dilation": 2, "padding": "causal"},
                     {"type": "batchnorm", "channels": 6}, {"type": "relu"}, {"type": "maxpool", "size": 2},
                     {"type": "conv", "in": 6, "out": 4, "kernel": 3, "padding": "same"}, {"type": "gelu"}],
        "head": [{"type": "flatten"}, {"type": "linear", "in": 32, "out": 2}]}


@pytest.fixture
def model_path(tmp_path):
    torch.manual_seed(4)
    features, head = build_modules(SPEC)
    path = tmp_path / "model.pt"
    save_model(path, SPEC, features, head)
    return path


def check(tmp_path, capsys, model: str, extra: str = "") -> tuple[int, str]:
    config = tmp_path / "vigil.toml"
    config.write_text(f'[[operators]]\nname = "beats"\ntype = "cnn"\nfields = ["a", "b"]\n[operators.params]\n'
                      f'model = "{model}"\nwindow = 16\nstep = 4\n{extra}')
    code = vigil_main(["config", "check", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_config_check_accepts_a_good_model_with_a_path_relative_to_the_config(tmp_path, capsys, model_path):
    assert check(tmp_path, capsys, model_path.name) == (0, check(tmp_path, capsys, str(model_path))[1])


def test_config_check_refuses_unknown_layers_mismatched_weights_and_bad_steps(tmp_path, capsys, model_path):
    features, head = build_modules(SPEC)
    unknown = {**SPEC, "features": [*SPEC["features"], {"type": "lstm", "size": 4}]}
    torch.save({"spec": unknown, "state_dict": {}}, tmp_path / "unknown.pt")
    code, out = check(tmp_path, capsys, "unknown.pt")
    assert code == 2 and "operators[0].params.model: features[6]: unknown layer type 'lstm'" in out
    wider = {**SPEC, "features": [{**SPEC["features"][0], "out": 7}, *SPEC["features"][1:]]}
    save_model(tmp_path / "mismatch.pt", wider, features, head)  # weights of the 6-channel model under a 7-channel spec
    code, out = check(tmp_path, capsys, "mismatch.pt")
    assert code == 2 and "the state dict does not fit the features of the spec" in out and "size mismatch" in out
    code, out = check(tmp_path, capsys, model_path.name, "")
    assert code == 0
    config = tmp_path / "vigil.toml"
    config.write_text(config.read_text().replace("window = 16", "window = 12").replace("step = 4", "step = 3"))
    assert vigil_main(["config", "check", str(config)]) == 2
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "operators[0].params.step: " in out and "e.g. 2 or 4" in out
    assert "step 3 is not aligned with pooling layer 3 (MaxPool1d, window 2 after a downsampling of 1)" in out


class Payload:
    """Not a tensor: an object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_model_files_never_unpickle_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"spec": SPEC, "state_dict": {}, "extra": Payload()}, path)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_model(path)
    assert "unpickled!" not in capsys.readouterr().out
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_model(raw)
    assert "unpickled!" not in capsys.readouterr().out


def test_in_the_dataflow_scores_equal_the_executor_per_entity(model_path):
    """Three entities at different rates (one sample in 1, 2 and 5 rows), interleaved, some rows missing a channel,
    in record batches of odd sizes across two shards: every event completing a step once the window and the receptive
    field hold the entity's own samples carries the executor's output for that step, and no other event is scored."""
    rng = np.random.default_rng(0)
    keys = ["fast"] * 10 + ["mid"] * 5 + ["slow"] * 2
    order = rng.permutation(np.repeat(keys, 30))
    events, samples = [], {"fast": [], "mid": [], "slow": []}
    for i, key in enumerate(order.tolist()):
        a, b = rng.normal(size=2).round(4).tolist()
        fields = {"a": a, "b": b} if rng.random() > 0.05 else {"a": a}
        if "b" in fields:
            samples[key].append((i, a, b))
        events.append(msgspec.json.encode({"key": key, "ts": 1_767_225_600_000 + i, "fields": fields}))
    batches = [RecordBatch("t", 0, np.arange(s, min(s + 23, len(events))), events[s:s + 23]) for s in range(0, len(events), 23)]
    params = CnnParams(model=str(model_path), window=16, step=4, threshold=2.0)  # no alerts: scores only
    scored: list = []
    flow = build_flow(source=TestingSource(batches), operator_specs=[OperatorSpec("cnn", "beats", ("a", "b"), params)],
                      alert_sink=TestingSink([]), dead_letter_sink=TestingSink([]), scores_sink=TestingSink(scored),
                      metrics=Metrics(), shards=2, batching=Batching(64, timedelta(0)), entities=EntityLimits(100),
                      max_event_bytes=4096)
    run_main(flow)
    got = {(s.key, s.source.offset): s.scores["beats"] for s in scored if isinstance(s, ScoredEvent)}
    model = load_model(model_path)
    warmup = -(-(16 + receptive_field(model.features)) // 4) * 4
    for key, rows in samples.items():
        executor = StreamingCNN(model.features, model.head, 16, 4)
        values = np.array([[a, b] for _, a, b in rows], dtype=np.float32)
        scored_rows = set()
        for step in range(len(rows) // 4):
            chunk = torch.from_numpy(values[4 * step: 4 * step + 4].T[None].copy())
            expected = torch.softmax(executor.step(chunk), dim=-1)[0, 1].item()
            if 4 * step + 4 >= warmup:
                assert got[(key, rows[4 * step + 3][0])] == pytest.approx(expected, abs=1e-6)
                scored_rows.add(rows[4 * step + 3][0])
        assert len(scored_rows) >= 5
        assert all(value is None for (k, offset), value in got.items() if k == key and offset not in scored_rows)
