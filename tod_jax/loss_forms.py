"""The unsupervised term of Eq. 9 in the forms tod_jax offers (config.tod_loss_form).

* 'paper': Eq. 7 as the paper writes it. The classifier's own output on the
  unlabeled batch is pulled towards the teacher's (the EMA model or w_{c-1}) with
  the squared L2 norm over classes; labeled and unlabeled images share one
  BatchNorm batch.
* 'reference': the authors' code (main_TOD.py), which produced the paper's numbers.
  A second linear head on the pooled features (the consistency head) is pulled
  towards the teacher's main head, and the main head towards the consistency head,
  on the labeled and the unlabeled batch; every term is PyTorch's `mse_loss`
  (mean over samples and classes); labeled and unlabeled images go through the
  network in two forward passes (two BatchNorm batches), and the teacher sees
  both batches too.
"""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from tod_jax import tod
from tod_jax.errors import ConfigError

CONSISTENCY_HEAD = 'consistency_head'  # Its params' key beside the model's own params.


@dataclasses.dataclass(frozen=True)
class LossForm:
  """How the train step computes the unsupervised term."""
  separate_batches: bool  # Labeled and unlabeled images in two forward passes.
  consistency_head: bool  # A second head takes the pull towards the teacher.
  teacher_on_labeled: bool  # The teacher's outputs on the labeled batch are needed too.


FORMS = {
    'paper': LossForm(separate_batches=False, consistency_head=False, teacher_on_labeled=False),
    'reference': LossForm(separate_batches=True, consistency_head=True, teacher_on_labeled=True),
}


def get(name: str) -> LossForm:
  if name not in FORMS:
    raise ConfigError(f'Unknown tod_loss_form {name!r}; set --config.tod_loss_form to one of '
                     f'{sorted(FORMS)}.')
  return FORMS[name]


def uses_consistency_head(config) -> bool:
  """Whether a run of `config` trains the consistency head (in its params)."""
  return bool(config.semi) and get(config.tod_loss_form).consistency_head


def init_consistency_head(rng: chex.PRNGKey, features: chex.Array, num_classes: int) -> dict:
  """Params of the consistency head: a Dense layer from `features` [B, D] to the classes."""
  return nn.Dense(num_classes).init(rng, features)['params']


def consistency_head(params: dict, features: chex.Array) -> chex.Array:
  """The consistency head's logits [B, classes] from pooled features [B, D]."""
  return nn.Dense(params['kernel'].shape[-1]).apply({'params': params}, features)


def paper(student_u: chex.Array, teacher_u: chex.Array) -> chex.Array:
  """Eq. 7: mean over the unlabeled batch of ||f(x_u; w) - f(x_u; w~)||^2."""
  return tod.unsupervised_tod_loss(student_u, teacher_u)


def reference(student: tuple[chex.Array, chex.Array], head: tuple[chex.Array, chex.Array],
              teacher: tuple[chex.Array, chex.Array]) -> chex.Array:
  """The authors' code: sum over the labeled and unlabeled batch of
  mse(main, consistency head) + mse(consistency head, teacher's main head).

  Args:
    student, head, teacher: (labeled [B_l, K], unlabeled [B_u, K]) outputs of the main
      head, the consistency head and the teacher (gradient stopped here).
  """
  total = jnp.zeros((), jnp.float32)
  for s, h, t in zip(student, head, teacher):
    total += tod.mean_squared_error(s, h) + tod.mean_squared_error(h, jax.lax.stop_gradient(t))
  return total
