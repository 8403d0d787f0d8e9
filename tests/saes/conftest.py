import pytest
import torch


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """The SAE tests train tiny models: one intra-op thread is faster than two for tensors this small, and on
    a shared, oversubscribed CPU it avoids OpenMP spin-waiting that can slow such steps tenfold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
