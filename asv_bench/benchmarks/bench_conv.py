"""fastconv's passes over the layer suite (``fastconv/bench/shapes.csv``), with torch beside.

``asv run --python=same --quick`` times the installed package; ``setup`` compiles the
kernels first, so no timing includes JIT compilation.
"""

import numpy as np

import fastconv
from fastconv.bench import runner
from fastconv.bench.suite import load_suite

LAYERS = [layer.name for layer in load_suite()]
DTYPES = ["float32", "float64"]


class _Passes:
    params = (LAYERS, DTYPES)
    param_names = ("layer", "dtype")
    timeout = 300

    def passes(self, layer, arrays):
        raise NotImplementedError

    def setup(self, name, dtype):
        fastconv.set_num_threads(2)
        (layer,) = load_suite([name])
        self.calls = self.passes(layer, layer.arrays(np.dtype(dtype)))
        for call in self.calls.values():  # compile, and load the layer into memory
            call()

    def time_forward(self, name, dtype):
        self.calls["forward"]()

    def time_backward_input(self, name, dtype):
        self.calls["backward_input"]()

    def time_backward_weight(self, name, dtype):
        self.calls["backward_weight"]()


class Conv(_Passes):
    """fastconv's three passes."""

    def passes(self, layer, arrays):
        return runner.fastconv_passes(layer, arrays)

    def peakmem_forward(self, name, dtype):
        self.calls["forward"]()

    def peakmem_backward_input(self, name, dtype):
        self.calls["backward_input"]()

    def peakmem_backward_weight(self, name, dtype):
        self.calls["backward_weight"]()


class TorchConv(_Passes):
    """The same passes in torch, on as many threads; skipped without torch."""

    def passes(self, layer, arrays):
        if runner.torch is None:
            raise NotImplementedError("torch is not installed")
        runner.torch.set_num_threads(2)
        return runner.torch_passes(layer, arrays, channels_last=False)


class ColdStart:
    """A fresh interpreter: import, then the first float32 conv2d forward and backward,
    with whatever compiled kernels the on-disk cache holds."""

    timeout = 300

    def timeraw_import_and_first_step(self):
        return """
        import numpy as np
        import fastconv
        x = np.ones((2, 3, 16, 16), np.float32)
        w = np.ones((4, 3, 3, 3), np.float32)
        y = fastconv.conv2d(x, w, padding=1)
        fastconv.conv_backward_input(y, w, x.shape, padding=1)
        fastconv.conv_backward_weight(y, x, w.shape, padding=1)
        """
