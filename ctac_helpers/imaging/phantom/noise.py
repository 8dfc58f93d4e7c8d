"""The finishing pass of a phantom: the protocol's Gaussian noise and the site's HU offset, added last.

The noise is Gaussian with the SD of the parameter ``noise_hu`` (for the synthetic cohort the
protocol's reference-size value, :data:`ctac_helpers.cohort.synth.PROTOCOL_NOISE_HU`: the synthetic
feature model additionally scales noise with body size). The same pass counts each label's voxels and
sums their noise-free HU for the truth.
"""

from __future__ import annotations

import numpy as np

# z-slabs of about this many voxels: the finishing pass then works in the CPU's cache instead of
# streaming the whole volume through memory once per operation.
_SLAB_VOXELS = 1 << 20


def finish_image(hu: np.ndarray, lab: np.ndarray, offset: float, sigma: float, rng: np.random.Generator,
                 keep_clean: bool):
    """Per-label voxel counts and noise-free HU sums, then the noisy int16 image, slab by slab.

    ``hu`` (float32, noise-free, without the site offset) is overwritten. The noise is drawn slab
    after slab from ``rng``: a Generator's normal draws do not depend on how they are split into
    calls, so the image is the one a single draw for the whole volume gives.

    Parameters
    ----------
    hu : numpy.ndarray of float32
        The noise-free image without the site offset, ``(z, y, x)``; overwritten.
    lab : numpy.ndarray of uint8
        The label map.
    offset : float
        The site's HU offset.
    sigma : float
        The noise SD in HU (0: no noise).
    rng : numpy.random.Generator
        The noise's random stream.
    keep_clean : bool
        Also return the noise-free image with the offset.

    Returns
    -------
    ct : numpy.ndarray of int16
        The image, rounded and clipped to -1024..3071 HU.
    clean : numpy.ndarray of int16 or None
        The noise-free image with the offset when ``keep_clean``.
    counts : numpy.ndarray of int64, shape (256,)
        Voxels per label id.
    hu_sums : numpy.ndarray of float64, shape (256,)
        Sum of the noise-free HU (without the offset) per label id (label 0 left at 0).
    """
    nz = hu.shape[0]
    step = max(1, _SLAB_VOXELS // max(1, hu[0].size))
    ct = np.empty(hu.shape, np.int16)
    clean = np.empty(hu.shape, np.int16) if keep_clean else None
    counts = np.zeros(256, np.int64)
    hu_sums = np.zeros(256, np.float64)
    for z0 in range(0, nz, step):
        h, lb = hu[z0:z0 + step], lab[z0:z0 + step]
        counts += np.bincount(lb.ravel(), minlength=256)
        labelled = lb != 0  # most voxels are unlabelled: summing only the others is faster
        hu_sums += np.bincount(lb[labelled], weights=h[labelled], minlength=256)
        if keep_clean:
            clean[z0:z0 + step] = np.clip(np.rint(h + offset), -1024, 3071)
        if sigma > 0:
            noise = rng.standard_normal(h.shape, dtype=np.float32)
            noise *= sigma
            h += noise
        h += offset
        np.rint(h, out=h)
        np.clip(h, -1024, 3071, out=h)
        ct[z0:z0 + step] = h
    return ct, clean, counts, hu_sums
