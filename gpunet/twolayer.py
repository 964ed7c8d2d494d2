"""The seed's two-layer net in the shape of the course autograder (DS-GA 1008 HW1).

    from gpunet.twolayer import MLP, mse_loss, bce_loss

    net = MLP(linear_1_in_features=2, linear_1_out_features=20, f_function="relu",
              linear_2_in_features=20, linear_2_out_features=5, g_function="identity")
    net.clear_grad_and_cache()
    y_hat = net.forward(x)                  # x: numpy or cupy array (batch, 2)
    J, dJdy_hat = mse_loss(y, y_hat)
    net.backward(dJdy_hat)
    net.grads["dJdW1"]                      # compare with torch autograd

This is a thin shape over ``gpunet.MLP``: ``parameters`` IS the general model's ``params`` dict
(W1, b1, W2, b2, weights shaped out x in, biases vectors), so assigning new arrays of those
shapes to its keys works. The backend and the dtype follow the input handed to ``forward``.
Everything it returns and holds is a NumPy (or CuPy) array, a torch tensor given to it is read
as NumPy: where an autograder copies parameters into torch (``linear1.weight.data =
net.parameters["W1"]``), wrap them, ``torch.from_numpy(net.parameters["W1"])``.
"""

from __future__ import annotations

from .backends import backend_of
from .errors import ConfigError
from .losses import BCELoss, MSELoss
from .model import MLP as _GeneralMLP

FUNCTIONS = ("relu", "sigmoid", "identity", "tanh", "leaky_relu")


class MLP:
    """The seed's two-layer net, z1 = x W1^T + b1, z2 = f(z1), z3 = z2 W2^T + b2,
    y_hat = g(z3), with the autograder's constructor and ``forward(x)`` / ``backward(dJdy_hat)``
    (see the module docstring); f and g are named in ``FUNCTIONS``. ``seed``: the weights'
    (torch's default initialisation); ``dtype``: the parameters' until a ``forward`` input of
    another float dtype (or backend) moves the net to its own."""

    def __init__(self, linear_1_in_features, linear_1_out_features, f_function,
                 linear_2_in_features, linear_2_out_features, g_function, *, seed=0,
                 dtype="float32"):
        for name, fn in (("f_function", f_function), ("g_function", g_function)):
            if fn not in FUNCTIONS:
                raise ConfigError(f"unknown {name} {fn!r}; valid names: {', '.join(FUNCTIONS)}")
        if linear_1_out_features != linear_2_in_features:
            raise ConfigError(
                f"linear_1_out_features ({linear_1_out_features}) must equal "
                f"linear_2_in_features ({linear_2_in_features})"
            )
        self.f_function = f_function
        self.g_function = g_function
        self.net = _GeneralMLP(
            [linear_1_in_features, linear_1_out_features, linear_2_out_features],
            activation=f_function, output=g_function, backend="numpy", seed=seed, dtype=dtype,
            init="torch",
        )
        self.parameters = self.net.params
        self.grads = {}
        self.cache = {}
        self.clear_grad_and_cache()

    def forward(self, x):
        """y_hat = g(z3), z3 = f(z1) W2^T + b2, z1 = x W1^T + b1; fills ``cache``."""
        x = _array(x)
        backend = backend_of(x)
        dtype = x.dtype if getattr(x, "dtype", None) is not None and x.dtype.kind == "f" else None
        # Also re-homes parameters the caller assigned as other arrays (no copy when in place).
        self.net.to(backend, dtype)
        y_hat = self.net.forward(x)
        lin1, act1, lin2, act2 = self.net.layers
        self.cache.update(x=lin1.x, z1=act1.z, z2=act1.y, z3=act2.z, y_hat=act2.y)
        return y_hat

    def backward(self, dJdy_hat):
        """Fill ``grads`` (dJdW1, dJdb1, dJdW2, dJdb2) from dJ/dy_hat; returns dJ/dx."""
        dJdx = self.net.backward(_array(dJdy_hat))
        for k, g in self.net.grads.items():
            self.grads["dJd" + k] = g
        return dJdx

    def clear_grad_and_cache(self):
        """Set every ``grads`` entry to zeros and forget the last forward pass."""
        xp = self.net.backend.xp
        for k, p in self.parameters.items():
            self.grads["dJd" + k] = xp.zeros_like(self.net.backend.asarray(p))
        self.cache = {}
        self.net.clear_cache()


def _array(a):
    """A torch tensor (as an autograder may still hand over) as a numpy array; else as is."""
    if hasattr(a, "detach") and hasattr(a, "numpy"):
        return a.detach().cpu().numpy()
    return a


def mse_loss(y, y_hat):
    """(J, dJ/dy_hat) of the mean squared error, as ``torch.nn.functional.mse_loss``."""
    return MSELoss()(_array(y_hat), _array(y))


def bce_loss(y, y_hat):
    """(J, dJ/dy_hat) of binary cross-entropy on probabilities, as ``F.binary_cross_entropy``,
    which also refuses a y_hat outside [0, 1] (an identity g, say: use a sigmoid)."""
    return BCELoss()(_array(y_hat), _array(y))
