"""Shared test settings: torch runs single-threaded (the suite's many small ops are faster so, and
results do not depend on how busy the machine's 2 cores are)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    try:
        import torch
    except ImportError:  # the compiled-core tests run without torch (cibuildwheel)
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
