"""Neural-network models for Bayesian neural networks trained with ensemble Kalman methods.

A model is an Equinox module (a pytree of arrays); an *ensemble* is the same module whose every
array leaf carries a leading axis of size J (what :meth:`ekibnn.GaussianPrior.sample` returns).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ekibnn.errors import input_error

__all__ = ["ACTIVATIONS", "MLP", "ensemble_apply", "num_params"]

Activation = Literal["tanh", "relu", "gelu", "silu", "sin"]
Parameterization = Literal["standard", "ntk"]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "sin": jnp.sin,
}
_PARAMETERIZATIONS = ("standard", "ntk")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal_leaves(key: PRNGKeyArray, sizes: tuple[int, ...], dtype: jnp.dtype) -> list:
    """N(0, 1) weights ``(fan_in, fan_out)`` and biases ``(fan_out,)`` of every layer,
    interleaved: ONE draw of all ``p`` values split into the leaves in that order (independent
    entries; one random-number kernel compiles several times faster than one per leaf; one
    compiled program per architecture)."""
    shapes = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        shapes += [(fan_in, fan_out), (fan_out,)]
    z = jax.random.normal(key, (sum(math.prod(s) for s in shapes),), dtype)
    bounds = np.cumsum([0] + [math.prod(s) for s in shapes])
    return [z[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes, strict=True)]


class MLP(eqx.Module):
    """Fully connected network ``in_size -> hidden... -> out_size``.

    Layer ``l`` computes ``h_{l+1} = act(h_l W_l s_l + b_l)`` (no activation on the last layer),
    with ``W_l`` of shape ``(fan_in, fan_out)`` and ``b_l`` of shape ``(fan_out,)``:

    * ``parameterization="standard"``: ``s_l = 1`` (the tutorial's raw weights, ``y = x W + b``);
    * ``parameterization="ntk"``: ``s_l = 1 / sqrt(fan_in)`` (Jacot et al. 2018). The parameters
      stay raw ``N(0, 1)`` draws, so an ``N(0, 1)`` prior on them keeps the prior predictive
      variance ``O(1)`` however wide the layers are; in the standard parameterisation it grows
      linearly with the width.

    Every weight and bias is drawn ``N(0, 1)``, independently (the initial values only matter
    as a template: ensembles are drawn from an :class:`ekibnn.GaussianPrior`).

    Args:
        key: PRNG key for the initial values.
        in_size: number of input features.
        out_size: number of outputs.
        hidden: widths of the hidden layers (``()`` for a linear model).
        activation: ``"tanh"``, ``"relu"``, ``"gelu"``, ``"silu"`` or ``"sin"``.
        parameterization: ``"standard"`` or ``"ntk"``.
        dtype: floating dtype of the parameters (default: JAX's default float).
        compute_dtype: optional lower precision for the forward pass, e.g. ``jnp.bfloat16``:
            the inputs and every weight are cast to it for the matrix products, which accumulate
            in float32 (``preferred_element_type``); bias, scaling and activation run in float32
            and the output is returned in the parameters' dtype. The parameters, the ensemble
            statistics and the Kalman update stay in ``dtype`` (mixed precision: bf16 halves the
            bytes of activations and weights moved by the forward pass and uses the bf16 matrix
            units of GPUs/TPUs; on CPU the gain depends on the backend). Outputs differ from
            float32 by about bf16's relative precision (2^-8 = 0.4%) times the depth.

    Example:
        >>> import jax
        >>> model = MLP(jax.random.key(0), 1, 1, hidden=(20, 20))
        >>> model(jax.numpy.zeros((5, 1))).shape, num_params(model)
        ((5, 1), 481)
    """

    weights: tuple[Float[Array, "fan_in fan_out"], ...]
    biases: tuple[Float[Array, " fan_out"], ...]
    activation: str = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)
    compute_dtype: jnp.dtype | None = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        in_size: int,
        out_size: int,
        hidden: Sequence[int] = (20, 20),
        activation: Activation = "tanh",
        parameterization: Parameterization = "standard",
        dtype: jnp.dtype | None = None,
        compute_dtype: jnp.dtype | None = None,
    ):
        hidden = tuple(hidden)
        sizes = (in_size, *hidden, out_size)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise input_error(
                "MLP sizes",
                "positive integers for in_size, every hidden width and out_size",
                f"in_size={in_size!r}, hidden={hidden!r}, out_size={out_size!r}",
                "pass e.g. MLP(key, 1, 1, hidden=(20, 20))",
            )
        if activation not in ACTIVATIONS:
            raise input_error(
                "MLP activation",
                f"one of {sorted(ACTIVATIONS)}",
                repr(activation),
                "pick a supported activation name",
            )
        if parameterization not in _PARAMETERIZATIONS:
            raise input_error(
                "MLP parameterization",
                "'standard' or 'ntk'",
                repr(parameterization),
                "use 'ntk' for width-independent prior scales, 'standard' for raw weights",
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        if compute_dtype is not None:
            try:
                compute_dtype = jnp.dtype(compute_dtype)
            except TypeError:
                compute_dtype = None
            if compute_dtype is None or not jnp.issubdtype(compute_dtype, jnp.floating):
                raise input_error(
                    "MLP compute_dtype",
                    "None or a floating dtype such as jnp.bfloat16 or jnp.float16",
                    repr(compute_dtype),
                    "pass compute_dtype=jnp.bfloat16 for a bf16 forward pass",
                )
        leaves = _normal_leaves(key, sizes, jnp.dtype(dtype))
        self.weights, self.biases = tuple(leaves[0::2]), tuple(leaves[1::2])
        self.activation = activation
        self.parameterization = parameterization
        self.compute_dtype = compute_dtype

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer sizes ``(in_size, *hidden, out_size)``."""
        return (self.weights[0].shape[-2], *(w.shape[-1] for w in self.weights))

    def __call__(self, x: Float[Array, "n in_size"]) -> Float[Array, "n out_size"]:
        """Evaluate the network on a batch ``x`` of shape ``(n, in_size)`` (a single input of
        shape ``(in_size,)`` also works and gives ``(out_size,)``)."""
        act = ACTIVATIONS[self.activation]
        h = x
        last = len(self.weights) - 1
        low = self.compute_dtype
        out_dtype = self.weights[0].dtype
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if low is None:
                h = h @ w
            else:  # low-precision operands, float32 accumulation
                h = jnp.matmul(h.astype(low), w.astype(low), preferred_element_type=jnp.float32)
            if self.parameterization == "ntk":
                h = h * (1.0 / math.sqrt(w.shape[-2]))
            h = h + b
            if i < last:
                h = act(h)
        return h if low is None else h.astype(out_dtype)


def ensemble_apply(particles: PyTree, x: Float[Array, "n d"]) -> Float[Array, "J n out"]:
    """Evaluate every member of an ensemble of models on the batch ``x``.

    One fused ``eqx.filter_vmap`` over the leading ensemble axis (no Python loop over members).

    Args:
        particles: an ensemble of models (every array leaf has a leading axis of size J), e.g.
            ``GaussianPrior.like(model).sample(key, J)``.
        x: inputs of shape ``(n, in_size)``.

    Returns:
        ``(J, n, out_size)`` outputs.
    """
    return eqx.filter_vmap(lambda model, x: model(x), in_axes=(eqx.if_array(0), None))(particles, x)


def num_params(model: PyTree) -> int:
    """Number of scalar parameters (floating-point array entries) of ONE model."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return sum(leaf.size for leaf in leaves)
