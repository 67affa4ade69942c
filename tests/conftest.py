import atexit
import shutil
import tempfile

import helpers
import jax
import pytest


# Many tests compile the same programs through different function objects (each
# `sgjax.fit` builds its own optimiser, so its training step is traced anew); a
# persistent compilation cache for the session turns those recompilations into
# cache hits. It lives in a fresh temporary directory: nothing is shared between runs.
_cache = tempfile.mkdtemp(prefix="sgjax-test-xla-")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def getkey():
    """Call `getkey()` for a fresh PRNG key; the sequence is the same in every test."""
    return helpers.getkey()
