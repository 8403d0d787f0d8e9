import pytest


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread):
    """Every SAE test trains tiny models (tests/conftest.py says why one thread)."""
