"""ConvPlan: the descriptor validates once, then runs the three passes on its shapes."""

from __future__ import annotations

import math
import tracemalloc

import numba
import numpy as np
import pytest

import fastconv
from fastconv import ConvPlan, functional

from . import reference
from .oracle import assert_close, random, torch_conv_passes


def test_plan_passes_equal_the_functional_api():
    params = {"stride": 2, "padding": "valid", "dilation": 1, "groups": 2,
              "padding_mode": "zeros"}
    plan = ConvPlan((3, 4, 9, 9), (6, 2, 3, 3), dtype=np.float32, **params)
    assert plan.output_shape == (3, 6, 4, 4)
    assert plan.input_shape == (3, 4, 9, 9)
    assert plan.weight_shape == (6, 2, 3, 3)
    assert plan.dtype == np.float32
    rng = np.random.default_rng(0)
    x, w, b = (random(rng, s, np.float32) for s in (plan.input_shape, plan.weight_shape, (6,)))
    dy = random(rng, plan.output_shape, np.float32)
    np.testing.assert_array_equal(plan.forward(x, w, b), fastconv.conv(x, w, b, **params))
    np.testing.assert_array_equal(plan.backward_input(dy, w),
                                  fastconv.conv_backward_input(dy, w, x.shape, **params))
    np.testing.assert_array_equal(plan.backward_weight(dy, x),
                                  fastconv.conv_backward_weight(dy, x, w.shape, **params))
    np.testing.assert_array_equal(plan.backward_bias(dy), fastconv.conv_backward_bias(dy))


def test_workspace_counts_the_column_matrix_and_the_gemm_output():
    """In one go, a pass holds the batch's columns and GEMM output and a weight-sized
    partial product; split among worker threads (here one sample each), every worker
    holds its sample's and a weight-sized sum besides."""
    plan = ConvPlan((2, 3, 8, 8), (5, 3, 3, 3), padding=1, dtype=np.float64, algorithm="gemm")
    columns = 8 * 8
    weight = 5 * 3 * 3 * 3
    per_sample = 3 * 9 * columns + 5 * columns

    def largest(padding_per_sample):
        one_go = 2 * (per_sample + padding_per_sample) + weight
        side_by_side = 2 * (per_sample + padding_per_sample + 2 * weight)
        return max(one_go, side_by_side) if numba.config.NUMBA_NUM_THREADS >= 2 else one_go

    assert plan.workspace_nbytes == 8 * largest(0)
    padded = ConvPlan((2, 3, 8, 8), (5, 3, 3, 3), padding=1, padding_mode="reflect",
                      dtype=np.float32, algorithm="gemm")
    # per sample: the padded gradient and the copies that fold the padding back
    assert padded.workspace_nbytes == 4 * largest(4 * 3 * 10 * 10)


def test_repeated_calls_are_bitwise_identical():
    plan = ConvPlan((4, 8, 16, 16), (8, 8, 3, 3), padding=1, dtype=np.float32)
    rng = np.random.default_rng(1)
    x, w = random(rng, plan.input_shape, np.float32), random(rng, plan.weight_shape, np.float32)
    first = plan.forward(x, w)
    for _ in range(3):
        np.testing.assert_array_equal(plan.forward(x, w), first)


def test_transposed_plan_swaps_input_and_output():
    plan = ConvPlan.transposed((2, 4, 5, 5), (4, 3, 3, 3), stride=2, padding=1,
                               output_padding=1, dtype=np.float64)
    assert plan.output_shape == (2, 4, 5, 5)
    assert plan.input_shape == (2, 3, 10, 10)


def test_functional_calls_reuse_cached_plans():
    functional.clear_plan_cache()
    x = np.ones((1, 2, 6, 6))
    w = np.ones((3, 2, 3, 3))
    fastconv.conv(x, w, stride=[1, 1])
    fastconv.conv(x, w, stride=(1, 1))
    fastconv.conv(x, w, stride=[1, 1])
    info = functional._cached_plan.cache_info()
    assert (info.hits, info.misses) == (2, 1)  # a list and a tuple stride share a plan


def test_repr_names_the_geometry():
    text = repr(ConvPlan((1, 2, 5, 5), (4, 1, 3, 3), groups=2, padding="same"))
    assert "groups=2" in text
    assert "padding=((1, 1), (1, 1))" in text


@pytest.mark.parametrize("dtype", ["float32", np.float64, np.dtype("float32")])
def test_dtype_accepts_what_numpy_accepts(dtype):
    assert ConvPlan((1, 1, 4), (1, 1, 2), dtype=dtype).dtype == np.dtype(dtype)


TILING_CASES = [
    ((5, 4, 9, 8), (6, 2, 3, 3), {"padding": 1, "groups": 2}),
    ((3, 4, 11), (6, 4, 3), {"stride": 2, "padding": 2, "padding_mode": "reflect"}),
    ((2, 2, 5, 6, 7), (3, 2, 2, 3, 2), {"padding": "same", "dilation": 2}),
    ((3, 4, 6, 7), (8, 4, 1, 1), {}),  # 1x1: no columns at all
    ((2, 3, 7, 7), (4, 3, 3, 3), {"stride": 2, "padding": 1, "padding_mode": "circular"}),
]


@pytest.mark.parametrize("limit", [1, 600, 2000], ids=["slabs", "small", "samples"])
@pytest.mark.parametrize("case", range(len(TILING_CASES)))
def test_tiles_under_a_workspace_limit_give_the_same_results(case, limit):
    """A tiny limit forces slabs of single samples; a larger one groups samples."""
    input_shape, weight_shape, params = TILING_CASES[case]
    whole = ConvPlan(input_shape, weight_shape, algorithm="gemm", **params)
    tiled = ConvPlan(input_shape, weight_shape, workspace_limit=limit, algorithm="gemm",
                     **params)
    rng = np.random.default_rng(case)
    x, w = random(rng, input_shape), random(rng, weight_shape)
    dy = random(rng, whole.output_shape)
    np.testing.assert_allclose(tiled.forward(x, w), whole.forward(x, w), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(tiled.backward_input(dy, w), whole.backward_input(dy, w),
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(tiled.backward_weight(dy, x), whole.backward_weight(dy, x),
                               rtol=1e-13, atol=1e-13)


needs_two_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                       reason="worker threads need NUMBA_NUM_THREADS >= 2")


@pytest.fixture
def small_passes_split(monkeypatch):
    """Split passes among worker threads however little work they hold."""
    monkeypatch.setattr(fastconv.plan, "WORKER_MIN_WORK", 0)


@pytest.fixture
def small_worker_tiles(monkeypatch, small_passes_split):
    """Worker tiles of one output line each: slabs of single samples."""
    monkeypatch.setattr(fastconv.plan, "WORKER_TILE_BYTES", 1)
    monkeypatch.setattr(fastconv.plan, "WORKER_TILE_COLUMNS", 1)


@pytest.fixture
def threads():
    """Set the calling thread's count; restored afterwards."""
    before = fastconv.get_num_threads()
    yield fastconv.set_num_threads
    fastconv.set_num_threads(before)


#: The tiling cases that need columns: the others always run in one go.
COLUMN_CASES = [case for case in TILING_CASES if max(case[1][2:]) > 1 or case[2]]


def assert_split_equals_one_go(plan, threads, seed):
    """Each pass split among two worker threads equals the pass run in one go on one
    thread (the GEMMs differ in shape, so to rounding)."""
    rng = np.random.default_rng(seed)
    x, w = random(rng, plan.input_shape), random(rng, plan.weight_shape)
    dy = random(rng, plan.output_shape)

    def passes():
        return (plan.forward(x, w), plan.backward_input(dy, w), plan.backward_weight(dy, x))

    threads(1)
    one_go = passes()
    threads(2)
    for split, whole in zip(passes(), one_go):
        np.testing.assert_allclose(split, whole, rtol=1e-13, atol=1e-13)


@needs_two_threads
@pytest.mark.parametrize("tiles", ["default", "slabs"])
@pytest.mark.parametrize("case", range(len(COLUMN_CASES)))
def test_worker_threads_give_the_results_of_one_go(case, tiles, threads, request,
                                                   small_passes_split):
    """Split by samples (default tiles) or by slabs of samples."""
    if tiles == "slabs":
        request.getfixturevalue("small_worker_tiles")
    input_shape, weight_shape, params = COLUMN_CASES[case]
    plan = ConvPlan(input_shape, weight_shape, algorithm="gemm", **params)
    assert plan._pieces(2) is not None
    assert_split_equals_one_go(plan, threads, seed=case)


@needs_two_threads
@pytest.mark.parametrize("workers", [2, 3, 7])
def test_worker_pieces_are_runs_of_whole_samples_that_cover_the_batch(workers,
                                                                      small_worker_tiles):
    """No two pieces share a sample (their input gradients would race), and together
    they hold every tile of the output once, in order."""
    plan = ConvPlan((5, 4, 9, 8), (6, 2, 3, 3), padding=1, groups=2, algorithm="gemm")
    pieces = plan._pieces(workers)
    assert len(pieces) == min(workers, 5)
    samples = [sorted({n for t in piece for n in range(t.first, t.last)}) for piece in pieces]
    assert [n for run in samples for n in run] == list(range(5))
    positions = sum((t.last - t.first) * t.columns for piece in pieces for t in piece)
    assert positions == 5 * 9 * 8


def test_small_passes_run_in_one_go(monkeypatch):
    small = ConvPlan((4, 4, 9, 8), (6, 4, 3, 3), algorithm="gemm")
    assert small._pieces(2) is None
    monkeypatch.setattr(fastconv.plan, "WORKER_MIN_WORK", 0)
    assert small._pieces(2) is not None


@needs_two_threads
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_one_sample_gives_the_results_of_one_go_split_into_slabs(padding_mode, threads,
                                                                 small_worker_tiles):
    """A single sample splits into runs of slabs of its output; in the input gradient,
    where their windows overlap, the second worker scatters into a gradient of its own."""
    plan = ConvPlan((1, 3, 9, 8), (5, 3, 3, 3), padding=1, padding_mode=padding_mode,
                    algorithm="gemm")
    pieces = plan._pieces(2)
    assert len(pieces) == 2
    rows = [row for piece in pieces for t in piece for row in range(t.start, t.stop)]
    assert rows == list(range(9))
    assert_split_equals_one_go(plan, threads, seed=0)


def test_one_slab_one_thread_1x1_and_few_positions_per_filter_run_in_one_go(
        small_passes_split):
    # a single sample whose columns fit one tile
    assert ConvPlan((1, 4, 9, 8), (6, 4, 3, 3), algorithm="gemm")._pieces(2) is None
    assert ConvPlan((4, 4, 9, 8), (6, 4, 3, 3), algorithm="gemm")._pieces(1) is None
    assert ConvPlan((4, 4, 9, 8), (4, 1, 3, 3), groups=4, algorithm="direct")._pieces(2) is None
    # a 1x1 convolution without columns
    assert ConvPlan((4, 64, 56, 56), (256, 64, 1, 1), dtype=np.float32)._pieces(2) is None
    # ResNet-50's strided 1x1 layer: 98 positions per worker for 2048 filters
    assert ConvPlan((4, 1024, 14, 14), (2048, 1024, 1, 1), stride=2,
                    dtype=np.float32)._pieces(2) is None


def test_workers_stay_under_a_tight_limit_by_running_in_one_go(small_passes_split):
    """When each worker's own weight-gradient sum and one output line would not fit in
    the limit together, passes run in one go."""
    plan = ConvPlan((8, 16, 32, 32), (16, 16, 3, 3), padding=1, dtype=np.float32,
                    workspace_limit=64 * 2**10, algorithm="gemm")
    assert plan._pieces(2) is None


def test_workspace_stays_under_the_limit():
    limit = 64 * 2**10
    plan = ConvPlan((8, 16, 32, 32), (16, 16, 3, 3), padding=1, dtype=np.float32,
                    workspace_limit=limit, algorithm="gemm")
    assert plan.workspace_nbytes <= limit
    unlimited = ConvPlan((8, 16, 32, 32), (16, 16, 3, 3), padding=1, dtype=np.float32,
                         algorithm="gemm")
    assert plan.workspace_nbytes < unlimited.workspace_nbytes


def test_workspace_limit_setting():
    default = fastconv.get_workspace_limit()
    try:
        fastconv.set_workspace_limit(2**20)
        assert ConvPlan((1, 1, 8), (1, 1, 3)).workspace_limit == 2**20
        with pytest.raises(ValueError, match="nbytes must be positive, got 0"):
            fastconv.set_workspace_limit(0)
        with pytest.raises(ValueError, match="workspace_limit must be positive, got -5"):
            ConvPlan((1, 1, 8), (1, 1, 3), workspace_limit=-5)
    finally:
        fastconv.set_workspace_limit(default)


DIRECT_CASES = [
    ((2, 4, 9, 8), (8, 1, 3, 3), {"padding": 1, "groups": 4}),
    ((2, 3, 12), (3, 1, 4), {"stride": 2, "padding": 3, "dilation": 2, "groups": 3,
                             "padding_mode": "reflect"}),
    ((1, 2, 5, 6, 7), (4, 1, 3, 2, 3), {"stride": (1, 2, 3), "padding": (1, 0, 2), "groups": 2}),
    ((3, 1, 10, 10), (6, 1, 5, 5), {"padding": 2}),  # one input channel: LeNet's first layer
    ((2, 8, 7, 6), (8, 2, 3, 3), {"padding": 1, "groups": 4, "stride": 2}),  # ResNeXt-like
    ((2, 6, 9), (4, 6, 3), {"padding": "same", "padding_mode": "circular"}),  # dense
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(DIRECT_CASES)))
def test_direct_kernels_equal_the_gemm_path(case, dtype):
    input_shape, weight_shape, params = DIRECT_CASES[case]
    direct = ConvPlan(input_shape, weight_shape, dtype=dtype, algorithm="direct", **params)
    gemm = ConvPlan(input_shape, weight_shape, dtype=dtype, algorithm="gemm", **params)
    assert direct.algorithm == "direct"
    assert gemm.algorithm == "gemm"
    rng = np.random.default_rng(case)
    x, w = random(rng, input_shape, dtype), random(rng, weight_shape, dtype)
    dy = random(rng, direct.output_shape, dtype)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(direct.forward(x, w), gemm.forward(x, w), **tol)
    np.testing.assert_allclose(direct.backward_input(dy, w), gemm.backward_input(dy, w), **tol)
    np.testing.assert_allclose(direct.backward_weight(dy, x), gemm.backward_weight(dy, x), **tol)


def test_algorithm_argument():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        ConvPlan((1, 2, 8), (2, 1, 3), groups=2, algorithm="fft")
    assert ConvPlan((1, 4, 8), (4, 2, 3), groups=2).algorithm == "direct"  # 2 x 2 per group
    assert ConvPlan((1, 16, 8), (16, 4, 3), groups=4).algorithm == "direct"  # 4 x 4
    assert ConvPlan((1, 8, 8), (8, 1, 3), groups=8).algorithm == "direct"  # depthwise
    assert ConvPlan((1, 16, 8), (16, 8, 3), groups=2, stride=2).algorithm == "gemm"  # 8 x 8
    assert ConvPlan((1, 8, 8), (16, 8, 3)).algorithm == "gemm"  # 128 channel pairs
    assert ConvPlan((1, 8, 8), (16, 8, 3), algorithm="direct").algorithm == "direct"


def test_auto_takes_stacked_planes_for_few_channel_pairs_with_unit_strides():
    def algorithm(input_shape, weight_shape, **params):
        return ConvPlan(input_shape, weight_shape, **params).algorithm

    # the cases straddle the limits
    assert 8 * 8 <= fastconv.plan.STACKED_MAX_CHANNEL_PAIRS < 3 * 32
    assert 14 * 14 / 100 <= fastconv.plan.STACKED_MAX_POSITIONS_PER_OUTPUT < 14 * 14 / 64
    assert algorithm((1, 16, 8), (16, 8, 3), groups=2) == "direct"  # 8 x 8 per group
    assert algorithm((1, 1, 8), (16, 1, 3)) == "direct"
    assert algorithm((2, 1, 28, 28), (6, 1, 5, 5), padding=2) == "direct"  # LeNet's conv1
    assert algorithm((2, 3, 9, 9), (16, 3, 3, 3), padding=1, padding_mode="reflect") == "direct"
    assert algorithm((2, 3, 9, 9), (16, 3, 3, 3), padding=1, stride=2) == "gemm"
    assert algorithm((2, 3, 40), (32, 3, 3), padding=1) == "gemm"  # 96 pairs, 1-d
    assert algorithm((2, 3, 9, 9), (32, 3, 3, 3), padding=1) == "direct"  # 2-d
    assert algorithm((2, 8, 9, 9), (8, 8, 1, 1)) == "gemm"  # a 1x1 window needs no im2col
    assert algorithm((2, 2, 6, 6, 6), (8, 2, 3, 3, 3), padding=1) == "gemm"  # 3-d
    # on 14 x 14, unpadded: 5x5 computes 14 x 14 positions per 100 outputs (1.96), 7x7
    # 14 x 14 per 64 (3.06)
    assert algorithm((2, 3, 14, 14), (16, 3, 5, 5)) == "direct"
    assert algorithm((2, 3, 14, 14), (16, 3, 7, 7)) == "gemm"


def test_auto_takes_stacked_planes_for_2d_windows_with_more_channel_pairs():
    """2-d windows of up to STACKED_2D_MAX_CHANNEL_PAIRS channel pairs run all three
    passes on stacked planes, 1-d ones up to STACKED_MAX_CHANNEL_PAIRS."""
    def algorithms(input_shape, weight_shape, dtype=np.float32):
        plan = ConvPlan(input_shape, weight_shape, padding=1, dtype=dtype)
        return plan.algorithm, plan.backward_weight_algorithm

    assert fastconv.plan.STACKED_MAX_CHANNEL_PAIRS < 16 * 16
    assert 16 * 16 <= fastconv.plan.STACKED_2D_MAX_CHANNEL_PAIRS < 16 * 32
    assert algorithms((2, 16, 32, 32), (16, 16, 3, 3)) == ("direct", "direct")
    assert algorithms((2, 3, 32, 32), (64, 3, 3, 3)) == ("direct", "direct")
    assert algorithms((2, 16, 32, 32), (32, 16, 3, 3)) == ("winograd", "gemm")
    assert algorithms((2, 16, 32, 32), (16, 16, 3, 3), np.float64) == ("direct", "direct")
    assert algorithms((2, 16, 400), (16, 16, 3)) == ("gemm", "gemm")  # 1-d
    assert algorithms((2, 8, 400), (8, 8, 3)) == ("direct", "direct")


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("pass_name", ["forward", "backward_input", "backward_weight"])
@pytest.mark.parametrize(("input_shape", "limit"), [
    ((8, 16, 32, 32), 512 * 2**10),  # a few tiles per sample; room for one padded sample
    ((1, 16, 64, 64), 4 * 2**20),  # workers take slabs of the sample, and a gradient each
], ids=["batch", "one sample"])
def test_a_pass_allocates_at_most_its_workspace_besides_its_result(input_shape, limit,
                                                                   pass_name, padding_mode):
    plan = ConvPlan(input_shape, (16, 16, 3, 3), padding=1, padding_mode=padding_mode,
                    dtype=np.float32, workspace_limit=limit, algorithm="gemm")
    assert plan.workspace_nbytes <= limit
    if input_shape[0] == 1 and numba.config.NUMBA_NUM_THREADS >= 2:
        assert plan._pieces(2) is not None
    _assert_pass_within_workspace(plan, pass_name)


@pytest.mark.parametrize("pass_name", ["forward", "backward_input", "backward_weight"])
def test_a_winograd_pass_allocates_at_most_its_workspace_besides_its_result(pass_name):
    plan = ConvPlan((6, 16, 32, 30), (16, 16, 3, 3), padding=1, dtype=np.float32,
                    workspace_limit=2 * 2**20, algorithm="winograd")
    assert plan.algorithm == "winograd"
    assert plan.workspace_nbytes <= plan.workspace_limit
    assert plan._winograd_samples < 3  # each thread's samples in more than one chunk
    _assert_pass_within_workspace(plan, pass_name)


def test_winograd_counts_the_input_gradients_tiles_where_they_are_more():
    # The input (60 x 4) has 30 x 2 tiles, the output (62 x 2) 31 x 1: a limit that
    # holds a sample of the output's tiles but not of the input's is too small.
    filters = (16 + 9) * 64 * 64 * 4  # more than one thread's weight-gradient sums
    output_tiles, input_tiles = 16 * 128 * 31 * 4, 16 * 128 * 60 * 4
    limit = filters + (output_tiles + input_tiles) // 2
    with pytest.raises(ValueError, match="too small for algorithm='winograd'"):
        ConvPlan((1, 64, 60, 4), (64, 64, 3, 3), padding=(2, 0), dtype=np.float32,
                 workspace_limit=limit, algorithm="winograd")


def test_a_1x1_forward_pass_allocates_only_its_result():
    """Its GEMMs write straight into the output: no buffer besides it (an unused
    output-sized one had cost the pass fresh pages for the output)."""
    plan = ConvPlan((4, 24, 14, 14), (96, 24, 1, 1), dtype=np.float32)
    assert not plan._needs_columns
    rng = np.random.default_rng(5)
    x, w = random(rng, plan.input_shape, np.float32), random(rng, plan.weight_shape, np.float32)
    plan.forward(x, w)  # compile first
    tracemalloc.start()
    try:
        y = plan.forward(x, w)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= y.nbytes + 64 * 2**10  # numpy's small temporaries and views


def _assert_pass_within_workspace(plan, pass_name):
    rng = np.random.default_rng(3)
    x, w = random(rng, plan.input_shape, np.float32), random(rng, plan.weight_shape, np.float32)
    dy = random(rng, plan.output_shape, np.float32)
    call = {"forward": lambda: plan.forward(x, w),
            "backward_input": lambda: plan.backward_input(dy, w),
            "backward_weight": lambda: plan.backward_weight(dy, x)}[pass_name]
    call()  # compile first
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    slack = 64 * 2**10  # numpy's small temporaries and views
    assert peak <= plan.workspace_nbytes + result.nbytes + slack


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_1x1_convolution_without_columns_matches_the_loops(dtype):
    """The 1x1 path multiplies the arrays as they lie, one GEMM per sample in the weight
    gradient: against the loop reference, with groups and a ragged spatial shape."""
    plan = ConvPlan((3, 6, 5, 7), (4, 3, 1, 1), groups=2, dtype=dtype)
    assert not plan._needs_columns
    rng = np.random.default_rng(5)
    x, w = random(rng, plan.input_shape, dtype), random(rng, plan.weight_shape, dtype)
    dy = random(rng, plan.output_shape, dtype)
    window = {"stride": (1, 1), "pad_low": (0, 0), "dilation": (1, 1), "groups": 2}
    got = [plan.forward(x, w), plan.backward_input(dy, w), plan.backward_weight(dy, x)]
    want = [reference.conv(x, w, pad_high=(0, 0), **window),
            reference.conv_backward_input(dy, w, x.shape, **window),
            reference.conv_backward_weight(dy, x, w.shape, **window)]
    magnitude = [reference.conv(abs(x), abs(w), pad_high=(0, 0), **window),
                 reference.conv_backward_input(abs(dy), abs(w), x.shape, **window),
                 reference.conv_backward_weight(abs(dy), abs(x), w.shape, **window)]
    for name, a, b, m, terms in zip(["forward", "backward_input", "backward_weight"], got,
                                    want, magnitude, [3, 2, 3 * 5 * 7]):
        assert_close(a, b.astype(dtype), m, terms, label=f"1x1 {name}", reference="loops")


@pytest.mark.parametrize(("input_shape", "weight_shape", "transposed"), [
    ((3, 4, 6, 7), (2, 4, 3, 3), True),  # 36 rows, 2 output channels
    ((3, 1, 6, 7), (16, 1, 3, 3), False),  # 9 rows, 16 output channels
    ((3, 8, 6, 7), (2, 8, 1, 1), True),  # 1x1: no columns
    ((3, 2, 6, 7), (8, 2, 1, 1), False),
    ((1, 16, 4, 4), (129, 16, 3, 3), False),  # 144 rows, more than 128 output channels
])
def test_the_float32_weight_gradient_in_either_gemm_order(input_shape, weight_shape,
                                                          transposed):
    """float32 GEMM plans multiply the longer side of the weight gradient first; both
    orders against torch and the loops."""
    plan = ConvPlan(input_shape, weight_shape, dtype=np.float32, algorithm="gemm")
    assert plan._weight_gradient_transposed == transposed
    assert not ConvPlan(input_shape, weight_shape, algorithm="gemm")._weight_gradient_transposed
    rng = np.random.default_rng(2)
    x, dy = random(rng, input_shape, np.float32), random(rng, plan.output_shape, np.float32)
    got = plan.backward_weight(dy, x)
    assert got.flags.c_contiguous
    window = {"stride": (1, 1), "pad_low": (0, 0), "dilation": (1, 1)}
    loops = reference.conv_backward_weight(dy, x, weight_shape, **window)
    magnitude = reference.conv_backward_weight(abs(dy), abs(x), weight_shape, **window)
    terms = math.prod(plan.output_shape[::2]) * plan.output_shape[3]
    assert_close(got, torch_conv_passes(x, random(rng, weight_shape, np.float32), None,
                                        dy)[2], magnitude, terms, label="weight gradient")
    assert_close(got, loops.astype(np.float32), magnitude, terms, label="weight gradient",
                 reference="loops")


WINOGRAD_CASES = [
    ((2, 3, 7, 9), (5, 3, 3, 3), 1),  # odd sizes: the last tiles stick out
    ((1, 4, 6, 6), (4, 4, 3, 3), 0),
    ((3, 5, 8, 5), (2, 5, 3, 3), 2),  # padding beyond the filter's reach
    ((1, 2, 4, 3), (3, 2, 3, 3), (0, 1)),  # per-axis padding, one tile row
    ((2, 16, 13, 13), (16, 16, 3, 3), 1),
    ((0, 3, 5, 5), (3, 3, 3, 3), 1),  # no samples
    ((4, 16, 32, 30), (16, 16, 3, 3), 1),  # enough work to split among worker threads
]
#: Winograd's transforms combine each output from 16 channel sums of tiles transformed
#: with rows of absolute sum up to 2 (B^T), 1.5 (G) and 3 (A^T): its rounding error may
#: exceed that of a direct sum by up to (2 * 1.5 * 3)^2 / 9 = 9 times. The weight
#: gradient's F(3x3, 2x2) has rows of sums 2, 1 and 3: up to 4 times.
WINOGRAD_GROWTH = 9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(WINOGRAD_CASES)))
def test_winograd_matches_torch_and_the_loops(case, dtype):
    input_shape, weight_shape, padding = WINOGRAD_CASES[case]
    plan = ConvPlan(input_shape, weight_shape, padding=padding, dtype=dtype,
                    algorithm="winograd")
    assert plan.algorithm == "winograd"
    assert (plan._pieces(2) is not None) == (case == len(WINOGRAD_CASES) - 1)
    rng = np.random.default_rng(case)
    x, w = random(rng, input_shape, dtype), random(rng, weight_shape, dtype)
    dy = random(rng, plan.output_shape, dtype)
    got = [plan.forward(x, w), plan.backward_input(dy, w), plan.backward_weight(dy, x)]
    expected = torch_conv_passes(x, w, None, dy, padding=padding)[:3]
    magnitude = torch_conv_passes(abs(x), abs(w), None, abs(dy), padding=padding)[:3]
    pads = padding if isinstance(padding, tuple) else (padding, padding)
    window = {"stride": (1, 1), "pad_low": pads, "dilation": (1, 1)}
    loops = [reference.conv(x, w, pad_high=pads, **window),
             reference.conv_backward_input(dy, w, x.shape, **window),
             reference.conv_backward_weight(dy, x, w.shape, **window)]
    terms = [9 * input_shape[1] * WINOGRAD_GROWTH, 9 * weight_shape[0] * WINOGRAD_GROWTH,
             math.prod(plan.output_shape[::2]) * plan.output_shape[3] * WINOGRAD_GROWTH]
    for name, a, want, loop, m, n in zip(["forward", "backward_input", "backward_weight"],
                                         got, expected, loops, magnitude, terms):
        assert_close(a, want, m, n, label=f"winograd {name} {case}")
        assert_close(a, loop.astype(dtype), m, n, label=f"winograd {name} {case}",
                     reference="loops")


def test_winograd_chunks_samples_under_the_workspace_limit():
    input_shape, weight_shape = (5, 16, 12, 10), (16, 16, 3, 3)
    per_sample = 16 * (16 + 16) * 6 * 5 * 8  # transformed input and products, float64
    threads = min(numba.config.NUMBA_NUM_THREADS, 5)  # a chunk per thread
    # transformed and turned filters, or each thread's weight-gradient sums and product
    filters = max(16 + 9, 17 * threads) * 16 * 16 * 8
    whole = ConvPlan(input_shape, weight_shape, padding=1, algorithm="winograd")
    chunked = ConvPlan(input_shape, weight_shape, padding=1, algorithm="winograd",
                       workspace_limit=filters + threads * 2 * per_sample + per_sample // 2)
    assert whole._winograd_samples == 5
    assert chunked._winograd_samples == 2
    assert chunked.workspace_nbytes <= chunked.workspace_limit
    rng = np.random.default_rng(7)
    x, w = random(rng, input_shape), random(rng, weight_shape)
    dy = random(rng, whole.output_shape)
    # equal to rounding: BLAS may block GEMMs of other widths differently
    np.testing.assert_allclose(chunked.forward(x, w), whole.forward(x, w), rtol=1e-13,
                               atol=1e-13)
    np.testing.assert_allclose(chunked.backward_input(dy, w), whole.backward_input(dy, w),
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(chunked.backward_weight(dy, x), whole.backward_weight(dy, x),
                               rtol=1e-13, atol=1e-13)
    # too small for a sample per thread: "auto" takes the GEMM path, "winograd" is refused
    # (with 16 output channels "auto" would take the stacked planes)
    wide, wide_weight = (2, 16, 28, 28), (32, 16, 3, 3)
    wide_threads = min(numba.config.NUMBA_NUM_THREADS, 2)
    wide_sample = 16 * (16 + 32) * 14 * 14 * 8
    wide_filters = max(16 + 9, 17 * wide_threads) * 16 * 32 * 8
    assert ConvPlan(wide, wide_weight, padding=1).algorithm == "winograd"
    fallback = ConvPlan(wide, wide_weight, padding=1,
                        workspace_limit=wide_filters + wide_threads * wide_sample - 1)
    assert (fallback.algorithm, fallback.backward_weight_algorithm) == ("gemm", "gemm")
    tiny = filters + threads * per_sample - 1
    with pytest.raises(ValueError, match=r"workspace_limit of \d+ bytes is too small"):
        ConvPlan(input_shape, weight_shape, padding=1, workspace_limit=tiny, algorithm="winograd")


def _algorithms(*args, **kwargs):
    plan = ConvPlan(*args, **kwargs)
    return plan.algorithm, plan.backward_weight_algorithm


def test_winograd_algorithm_argument():
    wide = (1, 16, 28, 30)
    # float64: every pass by Winograd down to 14 rows, the weight gradient down to 10
    # (16 to 16 channels take the stacked planes)
    assert _algorithms(wide, (32, 16, 3, 3), padding=1) == ("winograd", "winograd")
    assert _algorithms((1, 16, 14, 30), (32, 16, 3, 3), padding=1) == ("winograd", "winograd")
    assert _algorithms((1, 16, 13, 30), (32, 16, 3, 3), padding=1) == ("gemm", "winograd")
    assert _algorithms((1, 16, 10, 30), (32, 16, 3, 3), padding=1) == ("gemm", "winograd")
    assert _algorithms((1, 16, 9, 30), (32, 16, 3, 3), padding=1) == ("gemm", "gemm")
    assert _algorithms(wide, (32, 16, 3, 3), padding=1, algorithm="gemm") == ("gemm", "gemm")
    assert _algorithms((1, 8, 28, 30), (64, 8, 3, 3), padding=1) == ("gemm", "gemm")  # 8 inputs
    # float32: the forward pass and input gradient down to 28 rows, the weight gradient
    # from 128 channels on (16 to 16 channels take the stacked planes)
    assert _algorithms(wide, (32, 16, 3, 3), padding=1,
                       dtype=np.float32) == ("winograd", "gemm")
    assert _algorithms((1, 16, 27, 30), (32, 16, 3, 3), padding=1,
                       dtype=np.float32) == ("gemm", "gemm")
    assert _algorithms((1, 128, 12, 12), (128, 128, 3, 3), padding=1,
                       dtype=np.float32) == ("gemm", "winograd")
    assert _algorithms((1, 16, 12, 12), (16, 16, 3, 3), padding=1,
                       algorithm="winograd") == ("winograd", "winograd")
    # a GEMM plan's Winograd weight gradient against the GEMM one's
    rng = np.random.default_rng(11)
    mixed = ConvPlan((3, 16, 12, 11), (32, 16, 3, 3), padding=1)
    assert (mixed.algorithm, mixed.backward_weight_algorithm) == ("gemm", "winograd")
    x, dy = random(rng, mixed.input_shape), random(rng, mixed.output_shape)
    np.testing.assert_allclose(
        mixed.backward_weight(dy, x),
        ConvPlan(mixed.input_shape, mixed.weight_shape, padding=1,
                 algorithm="gemm").backward_weight(dy, x), rtol=1e-12, atol=1e-12)
    assert ConvPlan(wide, (16, 16, 3, 3), stride=2).algorithm == "gemm"
    assert ConvPlan(wide, (32, 16, 3, 3), padding=1,
                    padding_mode="reflect").algorithm == "gemm"
    for params in ({"stride": 2}, {"dilation": 2}, {"groups": 2}, {"padding": 3},
                   {"padding": 1, "padding_mode": "circular"}):
        with pytest.raises(ValueError, match="algorithm='winograd' needs a 2-d 3x3"):
            ConvPlan((1, 16, 8, 8), (16, 16 // params.get("groups", 1), 3, 3),
                     algorithm="winograd", **params)
    with pytest.raises(ValueError, match="algorithm='winograd' needs a 2-d 3x3"):
        ConvPlan((1, 16, 8), (16, 16, 3), algorithm="winograd")
