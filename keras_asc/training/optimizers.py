"""Adam with PyTorch's update rule and L2 weight decay coupled into the gradient.

The CP-JKU reference code trains CP-Mobile and CP-ResNet with ``torch.optim.Adam(params,
weight_decay=wd)``, which adds ``wd * param`` to the gradient before the moment estimates (L2
regularisation), and the DCASE 2024 baseline with ``torch.optim.AdamW``, which shrinks the
weights by ``lr * wd * param`` apart from the moments (decoupled). Keras' ``Adam`` and ``AdamW``
offer only the decoupled form, and place epsilon before the bias correction, so this small
subclass is hand-written: it is ``keras.optimizers.Adam`` with PyTorch's arithmetic, reached
through Adam's public ``update_step``: the L2 term is added to the gradient, and Keras'
epsilon (added to sqrt(v) after the step is scaled by sqrt(1 - beta_2^t)) is set for each step
to ``epsilon * sqrt(1 - beta_2^t)``, which is PyTorch's epsilon (added to the bias-corrected
sqrt(v / (1 - beta_2^t))).
"""

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_asc")
class AdamL2(keras.optimizers.Adam):
    """Adam computed as ``torch.optim.Adam``, with coupled L2 and optional decoupled decay.

    Per step t, for every trainable variable p with gradient g:
    ``g += l2_weight_decay * p``; ``m = beta_1 m + (1 - beta_1) g``;
    ``v = beta_2 v + (1 - beta_2) g^2``;
    ``p -= lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)``.
    With ``weight_decay`` (Keras' decoupled decay), ``p -= lr * weight_decay * p`` first, which
    is ``torch.optim.AdamW``'s rule. The decay applies to every trainable variable, batch
    normalisation and GRN scalars included, as in the reference, which passes all the
    model's parameters to the optimiser.

    Args:
        learning_rate: a float or a ``LearningRateSchedule``.
        beta_1: decay of the first-moment estimate.
        beta_2: decay of the second-moment estimate.
        epsilon: added to the bias-corrected root of the second moment (PyTorch's 1e-8).
        l2_weight_decay: L2 coefficient added to the gradient (``torch.optim.Adam``'s
            ``weight_decay``); 0 disables it.
        **kwargs: ``keras.optimizers.Optimizer`` arguments (``weight_decay`` for decoupled
            decay, ``clipnorm``, ``name``, ...).

    Example:
        >>> optimizer = AdamL2(learning_rate=1e-3, l2_weight_decay=1e-4)
        >>> model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")

    Reference:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Loshchilov and
        Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        l2_weight_decay=0.0,
        name="adam_l2",
        **kwargs,
    ):
        if (
            isinstance(l2_weight_decay, bool)
            or not isinstance(l2_weight_decay, numbers.Real)
            or not l2_weight_decay >= 0
        ):
            raise ValueError(
                "AdamL2: `l2_weight_decay` must be a number >= 0. "
                f"Received: l2_weight_decay={l2_weight_decay!r}"
            )
        if kwargs.get("amsgrad"):
            raise ValueError("AdamL2 does not implement amsgrad. Received: amsgrad=True")
        kwargs.pop("amsgrad", None)
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=False,
            name=name,
            **kwargs,
        )
        self.l2_weight_decay = float(l2_weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        if self.l2_weight_decay:
            gradient = gradient + ops.cast(self.l2_weight_decay, dtype) * variable
        step = ops.cast(self.iterations + 1, dtype)
        torch_epsilon = self.epsilon
        self.epsilon = torch_epsilon * ops.sqrt(1 - ops.power(ops.cast(self.beta_2, dtype), step))
        try:
            super().update_step(gradient, variable, learning_rate)
        finally:
            self.epsilon = torch_epsilon

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() == "torch":
            self._torch_update_step(grads, trainable_variables, learning_rate)
        else:
            super()._backend_update_step(grads, trainable_variables, learning_rate)

    def _torch_update_step(self, grads, trainable_variables, learning_rate):
        """``update_step`` for all variables at once with PyTorch's multi-tensor kernels."""
        import torch

        with torch.no_grad():
            variables = [variable.value for variable in trainable_variables]
            dtype = variables[0].dtype
            grads = [g if g.dtype == p.dtype else g.to(p.dtype) for g, p in zip(grads, variables, strict=True)]
            if self.l2_weight_decay:
                grads = torch._foreach_add(grads, variables, alpha=self.l2_weight_decay)
            step = ops.cast(self.iterations + 1, dtype)
            bias_2 = ops.sqrt(1 - ops.power(ops.cast(self.beta_2, dtype), step))
            alpha = ops.cast(learning_rate, dtype) * bias_2 / (
                1 - ops.power(ops.cast(self.beta_1, dtype), step)
            )
            index = self._get_variable_index
            m_list = [self._momentums[index(v)].value for v in trainable_variables]
            v_list = [self._velocities[index(v)].value for v in trainable_variables]
            torch._foreach_mul_(m_list, self.beta_1)
            torch._foreach_add_(m_list, grads, alpha=1 - self.beta_1)
            torch._foreach_mul_(v_list, self.beta_2)
            torch._foreach_addcmul_(v_list, grads, grads, value=1 - self.beta_2)
            # Keras' form, as update_step: epsilon * sqrt(1 - beta_2^t) added to sqrt(v).
            denominators = torch._foreach_sqrt(v_list)
            torch._foreach_add_(denominators, self.epsilon * bias_2)
            steps = torch._foreach_div(m_list, denominators)
            torch._foreach_mul_(steps, alpha)
            torch._foreach_sub_(variables, steps)

    def get_config(self):
        config = super().get_config()
        config.pop("amsgrad", None)
        config["l2_weight_decay"] = self.l2_weight_decay
        return config
