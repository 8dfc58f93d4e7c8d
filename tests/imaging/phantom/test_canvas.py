"""The drawing surface of the phantoms (imaging.phantom.canvas): grid, tubes, curves, random streams."""

import numpy as np

from ctac_helpers.imaging.phantom import canvas


def test_grid_box_and_index_follow_the_voxel_centres():
    g = canvas.Grid((4, 5, 6), (2.0, 3.0, 5.0), (-5.0, -6.0, -7.5))
    # centres: x -5..5 by 2, y -6..6 by 3, z -7.5..7.5 by 5; a box takes the centres inside it
    sl, Z, Y, X = g.box((-1.0, -6.0, -7.5), (3.0, 0.0, 2.5))
    assert sl == (slice(0, 3), slice(0, 3), slice(2, 5))
    np.testing.assert_array_equal(X.ravel(), [-1.0, 1.0, 3.0])
    np.testing.assert_array_equal(Y.ravel(), [-6.0, -3.0, 0.0])
    np.testing.assert_array_equal(Z.ravel(), [-7.5, -2.5, 2.5])
    assert X.shape == (1, 1, 3) and Y.shape == (1, 3, 1) and Z.shape == (3, 1, 1)
    assert g.index((1.1, 2.9, 7.4)) == (3, 3, 3)
    assert canvas.empty_box(g.box((100.0, 0.0, 0.0), (200.0, 1.0, 1.0))[0])
    assert not canvas.empty_box(sl)


def test_tube_mask_is_the_union_of_balls_along_the_centreline():
    g = canvas.Grid((10, 20, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    b = canvas.Canvas(g, {})
    pts = np.array([[5.0, 5.0, 2.0], [8.0, 9.0, 5.0], [12.0, 12.0, 7.0]])
    radii = np.array([1.5, 2.0, 2.5])
    sl, m = b.tube_mask(pts, radii)
    full = np.zeros(g.shape, bool)
    full[sl] = m
    Z, Y, X = np.meshgrid(g.z, g.y, g.x, indexing="ij")
    brute = np.zeros(g.shape, bool)
    for p, r in zip(pts, radii):
        brute |= (X - p[0]) ** 2 + (Y - p[1]) ** 2 + (Z - p[2]) ** 2 <= r * r
    assert brute.sum() > 50
    np.testing.assert_array_equal(full, brute)


def test_polyline_passes_through_its_nodes_in_small_steps():
    nodes = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 10.0, 5.0]])
    pts = canvas.polyline(nodes, step=0.5)
    for n in nodes:
        assert np.min(np.linalg.norm(pts - n, axis=1)) < 1e-9
    assert np.max(np.linalg.norm(np.diff(pts, axis=0), axis=1)) < 1.0


def test_random_streams_are_reproducible_and_independent():
    a = canvas.rng_stream(3, 1).standard_normal(4)
    np.testing.assert_array_equal(a, canvas.rng_stream(3, 1).standard_normal(4))
    assert not np.array_equal(a, canvas.rng_stream(3, 2).standard_normal(4))
    assert not np.array_equal(a, canvas.rng_stream(4, 1).standard_normal(4))
