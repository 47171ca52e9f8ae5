"""Candidate operations: array primitives and NNX modules, looked up by name."""

from jnas.ops.modules import OPS
from jnas.ops.modules import make_op
from jnas.ops.primitives import depthwise_conv
from jnas.ops.primitives import pointwise_conv
from jnas.ops.primitives import pool
from jnas.ops.primitives import set_depthwise_impl
