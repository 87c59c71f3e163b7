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
