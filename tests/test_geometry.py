"""Shape arithmetic, checked against hand-worked examples and torch's formulas."""

from __future__ import annotations

import pytest

from fastconv import _geometry as geo


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "low", "high", "expected"),
    [
        (28, 5, 1, 1, 2, 2, 28),  # LeNet conv1, "same" by hand
        (224, 7, 2, 1, 3, 3, 112),  # ResNet-50 conv1
        (56, 3, 2, 1, 1, 1, 28),
        (8000, 2, 1, 64, 0, 0, 7936),  # WaveNet dilation 64
        (5, 5, 1, 1, 0, 0, 1),
        (6, 2, 3, 1, 0, 0, 2),  # the last partial window is dropped
    ],
)
def test_output_length(size, kernel, stride, dilation, low, high, expected):
    assert geo.output_length(size, kernel, stride, dilation, low, high) == expected


@pytest.mark.parametrize(
    ("kernel", "dilation", "expected"),
    [((3,), (1,), ((1,), (1,))), ((4,), (1,), ((1,), (2,))), ((2, 5), (3, 1), ((1, 2), (2, 2)))],
)
def test_same_padding_puts_the_odd_element_high(kernel, dilation, expected):
    rank = len(kernel)
    assert geo.resolve_padding("same", rank, kernel, (1,) * rank, dilation) == expected


def test_valid_and_explicit_padding():
    assert geo.resolve_padding("valid", 2, (3, 3), (2, 2), (1, 1)) == ((0, 0), (0, 0))
    assert geo.resolve_padding((1, 2), 2, (3, 3), (2, 2), (1, 1)) == ((1, 2), (1, 2))
    assert geo.resolve_padding(3, 1, (3,), (1,), (1,)) == ((3,), (3,))


def test_as_tuple_accepts_numpy_integers_and_lists():
    np = pytest.importorskip("numpy")
    assert geo.as_tuple(np.int64(2), 3, "stride") == (2, 2, 2)
    assert geo.as_tuple([1, np.int32(2)], 2, "stride") == (1, 2)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (1.5, TypeError, "stride must be made of ints, got 1.5"),
        (True, TypeError, "stride must be made of ints, got True"),
        ((1, 2, 3), ValueError, r"sequence of 2 ints .* got \(1, 2, 3\) of length 3"),
        ("2", TypeError, "stride must be made of ints"),
    ],
)
def test_as_tuple_errors_name_the_argument(value, error, match):
    with pytest.raises(error, match=match):
        geo.as_tuple(value, 2, "stride")


def test_window_kernel_args_widen_to_three_dimensions():
    window = geo.make_window((10,), (3,), (2,), (1,), (1,), (1,))
    assert window.output_size == (5,)
    assert window.kernel_args() == ((1, 1, 3), (1, 1, 2), (1, 1, 1), (0, 0, 1), (1, 1, 5))
    assert window.without_padding().input_size == (12,)
    assert not window.without_padding().is_padded


def test_conv_geometry_shapes():
    g = geo.conv_geometry((4, 6, 9, 9), (8, 3, 3, 3), stride=2, padding=1, groups=2)
    assert g.output_shape == (4, 8, 5, 5)
    assert g.weight_shape == (8, 3, 3, 3)
    assert g.col_rows == 6 * 9
    assert not g.needs_explicit_padding


def test_transpose_geometry_is_the_conv_it_inverts():
    # conv_transpose2d of (N, 4, 5, 5) with weight (4, 3, 3, 3), stride 2, padding 1,
    # output_padding 1: output 10x10, the conv of which gives 5x5 back.
    g = geo.transpose_geometry((2, 4, 5, 5), (4, 3, 3, 3), stride=2, padding=1,
                               output_padding=1)
    assert g.input_shape == (2, 3, 10, 10)
    assert g.output_shape == (2, 4, 5, 5)
    assert g.weight_shape == (4, 3, 3, 3)
