"""Small digital phantoms shared by the phantom tests (built once per test process)."""

import functools

from ctac_helpers.imaging import phantom

SMALL = dict(shape=(40, 192, 192), spacing=(2.0, 2.0, 5.0))


@functools.lru_cache(maxsize=None)
def small(seed=1, **params):
    """A phantom of ``params`` on a 40 x 192 x 192 grid of 2 x 2 x 5 mm, its noise-free image kept."""
    return phantom.ctac_phantom(dict(params), seed=seed, keep_clean=True, **SMALL)
