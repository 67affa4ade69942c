import pytest

import helpers


@pytest.fixture
def getkey():
    """Call `getkey()` for a fresh PRNG key; the sequence is the same in every test."""
    return helpers.getkey()
