"""Test-wide settings: a persistent XLA compilation cache, so programs that several tests
(or repeated runs) compile identically are built once."""

import os
import tempfile

import jax

jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get("LPG_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "lpg-jax-test-cache")),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


import contextlib

import pytest


@pytest.fixture
def killed_after_checkpoint(monkeypatch):
    """`with killed_after_checkpoint(2): train(...)`: the run dies (KeyboardInterrupt) right after
    writing checkpoint 2, as a job killed there would; the context expects that and restores saving."""
    from lpg import runs

    original_save = runs.RunDir.save

    @contextlib.contextmanager
    def kill(at_step: int):
        def save_then_die(self, step, state):
            original_save(self, step, state)
            if step == at_step:
                self.checkpoints.wait_until_finished()
                raise KeyboardInterrupt("simulated kill")

        monkeypatch.setattr(runs.RunDir, "save", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(runs.RunDir, "save", original_save)

    return kill
