"""Default protocol: the paper's classification setup (Table VIII) on CIFAR-10.

Dataset configs (configs/*.py, or a user's own file anywhere) import this with
`from tod_jax.configs import default` and change only what differs.
"""

import ml_collections

from tod_jax import precision


def get_config() -> ml_collections.ConfigDict:
  """Returns the paper's CIFAR-10 protocol."""
  config = ml_collections.ConfigDict()

  # Data.
  config.dataset = 'cifar10'  # A name in tod_jax.datasets.DATASETS (or tod_jax.run(dataset=)).
  config.data_dir = ''  # TFDS data_dir; '' uses the TFDS default (~/tensorflow_datasets).
  config.crop_padding = 4  # Zero padding before the random crop back to full size; 0: no crop.
  config.flip = True  # Random horizontal flip of training images.
  config.crop_size = 0  # Segmentation: random crop_size x crop_size crop of image and mask; 0: none.
  config.data_on_device = 'auto'  # Pool kept on every device, steps get indices: 'auto', 'always', 'never' (stream).
  config.device_data_max_bytes = 2**30  # 'auto' keeps the pool on device up to this size (per device).
  config.steps_per_dispatch = 1  # Train steps per dispatch (lax.scan) with the pool on device; 1: none.

  # Model.
  config.model = 'resnet18'  # A name in tod_jax.models.MODELS.
  config.dropout_rate = 0.0  # Dropout before the classifier (MC-dropout needs > 0).
  # Train step's compute: 'auto' (bfloat16 on GPU/TPU, float32 on CPU), 'float32' or 'bfloat16'
  # (mixed: float32 params, BN statistics, loss; scoring and evaluation stay float32).
  config.compute_dtype = 'auto'
  config.param_init = 'pytorch'  # Initial values: 'pytorch' (authors' code) or 'flax' (initializers.py).
  config.init_checkpoint = ''  # Pretrained weights: a .pth state dict or tod_jax checkpoint dir.

  # Active learning protocol.
  config.initial_fraction = 0.10  # Start: 10% of the pool labeled at random.
  config.budget_fraction = 0.05  # Budget b: 5% of the pool queried per cycle.
  config.num_cycles = 7  # Cycles trained: 10%, 15%, ..., 40% labeled.
  config.strategy = 'cod'  # A name in tod_jax.strategies.STRATEGIES.
  config.pool_subset = 0  # Score a random subset of this many unlabeled samples; 0: all.
  config.reinit_each_cycle = False  # The authors' code continues from the last cycle's weights.
  config.label_noise = 0.0  # Flip each pool label to another class with this probability (Fig. 9).
  config.label_noise_seed = 0  # Seed of those flips, apart from config.seed: one noisy pool for all runs.
  config.labels = 'oracle'  # 'oracle': ground truth labels queries (benchmarks); 'ledger': a person (labels.py).

  # Optimization (per cycle; optimizer state and schedule restart each cycle).
  config.optimizer = 'sgd'  # 'sgd' (momentum, weight decay) or 'adam'.
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.num_epochs = 200  # One epoch = one pass over the labeled set.
  config.batch_size = 128  # Labeled batch size.
  config.unlabeled_batch_size = 128  # Unlabeled batch drawn each step for the TOD loss.
  config.lr_decay_at = 0.8  # Learning rate x lr_decay_factor after this fraction of steps.
  config.lr_decay_factor = 0.1

  # TOD (Eqs. 5-9).
  config.semi = True  # Add the unsupervised TOD loss of Eq. 7 (Eq. 9); False: CE only.
  config.tod_loss_form = 'reference'  # Eq. 7 as 'reference' (authors' code) or 'paper' (loss_forms.py).
  config.tod_weight = 0.05  # lambda of Eq. 9.
  config.ema_decay = 0.999  # alpha of Eq. 6.
  config.ema_warmup = True  # decay = min(1 - 1/(step+1), alpha), as in the authors' code.
  config.loss_output = 'logits'  # Output compared in Eq. 7: 'logits' (authors' code) or 'softmax'.
  config.score_output = 'softmax'  # Output compared by COD, Eq. 5: 'softmax' (authors' code) or 'logits'.
  config.cod_first_cycle = 'lowest'  # Cycle 1 COD vs initial weights: 'lowest' (authors' code) or 'highest' (paper's text).
  config.cod_interval = 'cycle'  # COD vs w_{c-1} ('cycle', Eq. 5) or a snapshot this far back, e.g. '1epoch'.
  # COD keeps w_c's pool outputs for cycle c+1: one forward pass per image (kept_outputs.py).
  config.kept_outputs = ml_collections.ConfigDict()
  config.kept_outputs.enabled = True
  config.kept_outputs.dtype = 'float32'  # 'float32' or 'bfloat16' storage.
  config.kept_outputs.max_bytes = 2**30  # Above this COD runs both models instead (logged once).
  config.loss_teacher = 'ema'  # w~ of Eq. 7: 'ema' (paper) or 'cyclic' (w_{c-1}, fixed; Fig. 12).

  config.snapshot_intervals = ''  # Also keep w_c this many steps/epochs back, e.g. '5steps,1epoch' (Fig. 7).

  # Other strategies.
  config.mc_samples = 10  # T stochastic forward passes for 'mc_dropout' and 'bald'.
  config.ll4al = ml_collections.ConfigDict()  # Strategy 'll4al' (loss_prediction.py).
  config.ll4al.weight = 1.0  # Weight of LL4AL's ranking loss.
  config.ll4al.margin = 1.0  # Margin of LL4AL's ranking loss.
  config.ll4al.detach_at = 0.6  # Stop its gradient into the model after this fraction of epochs.
  config.vaal = ml_collections.ConfigDict()  # Strategy 'vaal' (vaal.py).
  config.vaal.latent_size = 32  # VAAL's latent size.
  config.vaal.width = 128  # VAE's first conv channels, doubled per stage to 8x (VAAL: 128..1024).
  config.vaal.discriminator_width = 512  # Hidden units of its discriminator's two layers.
  config.vaal.beta = 1.0  # beta of the VAE's KL term.
  config.vaal.adversary_weight = 1.0  # Weight of the VAE's term for fooling the discriminator.
  config.vaal.learning_rate = 5e-4  # Adam's learning rate for the VAE and the discriminator.
  config.vaal.batch_size = 64  # Labeled and unlabeled images per VAAL iteration (each).
  config.vaal.vae_steps = 2  # VAE updates per iteration (VAAL's code).
  config.vaal.discriminator_steps = 1  # Discriminator updates per iteration (VAAL's code).
  config.vaal.iteration_fraction = 0.25  # Iterations a cycle: this x the task model's steps.

  # Scoring and evaluation.
  config.score_chunk_size = 1024  # Pool samples per sharded scoring call (rounded up to #devices).
  # Matmul/convolution precision per phase: 'default' (TF32 on GPU, 1 bf16 pass on TPU),
  # 'high' or 'highest' (float32); tod_jax/precision.py, docs/scale.md.
  config.precision = ml_collections.ConfigDict(precision.DEFAULTS)

  # Devices and hosts (each batch is split over all devices; batch sizes must divide evenly).
  config.num_cpu_devices = -1  # On CPU: N XLA devices (data parallel); -1: auto (devices.py); 0: one.
  config.deterministic = True  # XLA:GPU deterministic kernels, no autotuning (devices.py).
  config.cpu_convolutions = 'auto'  # XLA:CPU kernels: 'eigen', 'xla_default'; 'auto': eigen for large models.
  # Persistent compilation cache: 'auto' ($XDG_CACHE_HOME or ~/.cache)/tod_jax/jax, '' off, or a dir.
  config.compilation_cache_dir = 'auto'
  config.distributed = ml_collections.ConfigDict()  # Several hosts (devices.py, host_pool.py).
  config.distributed.enabled = False  # jax.distributed.initialize() before anything else.
  config.distributed.coordinator_address = ''  # 'host:port' of process 0; '': from the env.
  config.distributed.num_processes = 0  # Number of processes (hosts); 0: from the environment.
  config.distributed.process_id = -1  # This process's index; -1: from the environment.
  config.distributed.timeout = 120  # Seconds to reach the coordinator and to hear from a peer.
  config.distributed.host_pool = False  # Each process loads only its block of the pool.

  # Run.
  config.seed = 0  # Initial labeled set, initialisation, batches, augmentation.
  config.tensorboard = True  # Write TensorBoard events to workdir/tensorboard.
  config.progress_bar = True  # One tqdm bar per cycle.
  config.profile_dir = ''  # A jax.profiler trace of cycle 1's second epoch goes here; '': none.
  return config
