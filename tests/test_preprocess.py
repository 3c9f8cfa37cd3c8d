"""Preprocessing: height resampling, field of view, median filter, normalisation."""

from __future__ import annotations

import numpy as np

from raypipe import ScanStack, Window, preprocess
from raypipe.scans.preprocess import fit_window, median3, resample_heights
from helpers import synthetic_stack


def test_resampling_interpolates_linearly_in_height() -> None:
    # 4 images at uneven heights whose values equal their height: resampled values must be the heights
    heights = np.array([0.0, 0.1, 0.5, 1.0])
    images = np.broadcast_to(heights[:, None, None], (4, 8, 8)).astype(np.float32)
    out = resample_heights(images, heights, 10)
    np.testing.assert_allclose(out[:, 0, 0], np.linspace(0, 1, 10), atol=1e-6)


def test_preprocess_shape_and_normalisation() -> None:
    stack = ScanStack(synthetic_stack(7, size=100), metadata={"name": "s"})
    x = preprocess(stack)
    assert x.shape == (10, 128, 128) and x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4
    # closest first is kept: the closest slice has the strongest contrast
    assert x[0].std() > x[-1].std()


def test_median_filter_removes_salt_noise() -> None:
    images = np.zeros((10, 128, 128), np.float32)
    images[:, 40, 40] = 100.0  # isolated hot pixel
    images[:, 60:70, 60:70] = 1.0
    x = preprocess(ScanStack(images, metadata={"fov": [18.0, 18.0]}))
    assert x[:, 40, 40].max() < x[:, 65, 65].min()
    assert preprocess(ScanStack(images, metadata={"fov": [18.0, 18.0]}), median=1)[0, 40, 40] > x[0, 65, 65]


def test_the_fast_median_is_scipys_median_value_for_value() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(3)
    cases = [rng.normal(size=(10, 128, 128)).astype(np.float32),  # the model's grid
             rng.integers(0, 3, size=(4, 17, 9)).astype(np.float32),  # many ties
             rng.normal(size=(2, 1, 5)), rng.normal(size=(3, 2, 1)), rng.normal(size=(1, 1, 1))]  # tiny edges
    for images in cases:
        expected = ndimage.median_filter(images, size=(1, 3, 3))
        got = median3(images)
        assert got.dtype == images.dtype and got.shape == images.shape
        np.testing.assert_array_equal(got, expected)


def test_known_fov_is_rescaled_to_the_window_pixel() -> None:
    window = Window(size=64, fov=16.0)  # 0.25 Å per pixel
    images = np.zeros((2, 40, 40), np.float32)
    images[:, 10:30, 10:30] = 1.0  # a 10 Å square on a 20 Å scan (0.5 Å per pixel)
    out = fit_window(images, (20.0, 20.0), window)
    assert out.shape == (2, 64, 64)
    side = (out[0] > 0.5).sum(axis=0).max()
    assert abs(side - 40) <= 1  # 10 Å at 0.25 Å per pixel


def test_flat_stack_normalises_to_zeros() -> None:
    x = preprocess(ScanStack(np.ones((3, 32, 32), np.float32)))
    assert not x.any()


def test_unknown_fov_keeps_the_whole_scan() -> None:
    images = np.zeros((2, 50, 100), np.float32)
    images[:, :, :5] = 1.0  # features at the left and right edges of a wide scan
    images[:, :, -5:] = 1.0
    out = fit_window(images, None, Window(size=64, fov=18.0))
    assert out.shape == (2, 64, 64)
    assert out[0, 32, :3].mean() > 0.5 and out[0, 32, -3:].mean() > 0.5
