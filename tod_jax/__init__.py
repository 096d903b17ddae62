"""tod_jax: Temporal Output Discrepancy active learning in JAX/Flax.

The Python API (docs/own-data.md):

  dataset = tod_jax.Dataset.from_arrays(train_images, train_labels, test_images, test_labels)
  tod_jax.register_model('my_net', MyFlaxModule)        # optional: a model of your own
  records = tod_jax.run(config, workdir, dataset=dataset)
"""

from tod_jax.dataset import Dataset
from tod_jax.driver import run
from tod_jax.models import register_model
from tod_jax.strategies import register as register_strategy

__all__ = ['Dataset', 'register_model', 'register_strategy', 'run']
__version__ = '0.1.0'
