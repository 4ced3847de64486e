"""minifw: a define-by-run deep-learning framework in a few screens of NumPy, with
fastconv as its convolution and pooling backend.

Each operation records, on the tensor it returns, its inputs and a closure that maps
the output's gradient to theirs; :meth:`Tensor.backward` runs those closures in
reverse topological order. Only the gradients some parameter needs are computed: the
first convolution never computes a gradient for the images.
"""

from .layers import Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential
from .optim import SGD, Adam
from .tensor import Tensor, conv2d, cross_entropy, flatten, linear, max_pool2d, relu

__all__ = ["SGD", "Adam", "Conv2d", "Flatten", "Linear", "MaxPool2d", "Module", "ReLU",
           "Sequential", "Tensor", "conv2d", "cross_entropy", "flatten", "linear", "max_pool2d",
           "relu"]
