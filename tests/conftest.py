import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def cfg(repo):
    """The embedded default config, as a fresh mutable dict."""
    from husai.config import load_yaml

    return load_yaml(repo / "config" / "config.yaml")


@pytest.fixture
def policy(repo):
    from husai.config import load_yaml

    return load_yaml(repo / "config" / "policy.yaml")


@pytest.fixture
def one_cpu_thread():
    """Tests that train tiny models: one intra-op thread is faster than two for tensors this small, and on a
    shared, oversubscribed CPU it avoids OpenMP spin-waiting that can slow such steps tenfold."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
