"""Shared fixtures: a tiny CLIP model directory built once per test session, and a random φ for it."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Path of a tiny random CLIP saved in HF format (loads with calibclip.load)."""
    from calibclip.testing import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    """A loaded Encoder over the tiny model (CPU)."""
    import calibclip

    return calibclip.load(str(tiny_model_dir), device="cpu")


@pytest.fixture
def phi_path(tmp_path, tiny_encoder):
    """A freshly initialised LinCIR-style φ for the tiny encoder, saved in calibclip's checkpoint format."""
    from calibclip.cir import build_phi, save_phi

    torch.manual_seed(0)
    return save_phi(build_phi("lincir", tiny_encoder.dim, tiny_encoder.token_dim), tmp_path / "phi.pt")


def available_devices() -> list:
    """``cpu`` always; ``cuda`` as a ``cuda``-marked parameter, skipped where no GPU is present.

    ``pytest -m cuda`` (what scripts/device_check.sh runs) selects exactly the GPU half.
    """
    gpu = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                            reason="no CUDA device")])
    return ["cpu", gpu]


def pytest_generate_tests(metafunc):
    """A test that takes ``device`` runs once per device of ``available_devices``."""
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", available_devices())


@pytest.fixture
def sigint_after_update(monkeypatch):
    """``with sigint_after_update(n):`` — Ctrl-C (a real SIGINT) right after the n-th AdamW update, before
    the trainer records it: the interrupt of issue 16.15. AdamW.step is restored when the block ends."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def arm(n: int):
        real_step, calls = torch.optim.AdamW.step, []

        def step_with_sigint(self, *a, **k):
            calls.append(1)
            out = real_step(self, *a, **k)
            if len(calls) == n:  # the update is done, its record not yet
                os.kill(os.getpid(), signal.SIGINT)
            return out

        monkeypatch.setattr(torch.optim.AdamW, "step", step_with_sigint)
        try:
            yield
        finally:
            monkeypatch.setattr(torch.optim.AdamW, "step", real_step)

    return arm
