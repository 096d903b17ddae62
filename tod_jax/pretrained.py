"""Pretrained initialisation: external weights mapped onto a model's initial variables.

`load(path, model_name, init_variables)` returns the model's {'params', 'batch_stats'}
with every array taken from `path` (config.init_checkpoint), which is one of

- a PyTorch state dict file (read with `torch.load(weights_only=True)`, the optional
  'pretrained' extra) in the layout of
  * torchvision's ResNet-18, for 'resnet18_imagenet': conv1, bn1, layer<s>.<b>.conv1/bn1/
    conv2/bn2/downsample.0/downsample.1, fc;
  * the DRN authors' DRN-D (github.com/fyu/drn), for 'drn_d_22' (and 'drn_tiny', same
    naming): drn.py's classifier, layer0.0/.1 (7x7 stem conv, BN), layer1, layer2,
    layer7, layer8 as Sequentials of (conv, BN, ReLU) per unit (names .<3u> and
    .<3u+1>), layer3-layer6 as basic blocks (conv1, bn1, conv2, bn2, downsample.0/.1),
    fc (a 1x1 conv); or segment.py's DRNSeg, the same layers as base.0-base.8 and seg
    (the 1x1 classifier), whose fixed bilinear `up.weight` is not needed here;
  and `{'state_dict': ...}` wrappers and DataParallel's 'module.' prefix unwrapped;
- a tod_jax Orbax checkpoint, for any model: a run's WORKDIR/checkpoints/<cycle>, a
  run's WORKDIR (its latest cycle) or a model-selection candidate directory.

PyTorch arrays change layout on the way: conv weights OIHW -> HWIO, linear weights
transposed, BatchNorm weight/bias -> scale/bias, running_mean/var -> batch_stats
mean/var. The classifier (and the TOD consistency head, which no PyTorch model has)
stays freshly initialised when the source lacks it or its shape differs (another class
count); every other array must be there with the model's shape, else ConfigError.
"""

import os
import re
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from tod_jax import checkpointing, drn, loss_forms, models
from tod_jax.errors import ConfigError, MissingFileError

# Flax leaf name -> PyTorch parameter name (conv/linear and BatchNorm alike).
_LEAF_TO_TORCH = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
                  'mean': 'running_mean', 'var': 'running_var'}
# Basic block submodules, Flax (creation order) -> torchvision and DRN names.
_BLOCK = (('Conv_0', 'conv1'), ('BatchNorm_0', 'bn1'), ('Conv_1', 'conv2'),
          ('BatchNorm_1', 'bn2'), ('Conv_2', 'downsample.0'), ('BatchNorm_2', 'downsample.1'))
# PyTorch entries with no counterpart here: BN step counters, DRNSeg's fixed upsampling.
_IGNORED = re.compile(r'(^|\.)num_batches_tracked$|^up\.weight$')
_EXAMPLES = 3  # Names quoted in an error message.


def load(path: str, model_name: str, init_variables: dict) -> tuple[dict, list[str]]:
  """(variables shaped as `init_variables` with the weights of `path`, the names kept fresh).

  Fresh names are flat ('params/Dense_0/kernel'); they are logged in one line.
  """
  check_path(path)
  model = models.create_model(model_name, 1)  # Only its architecture fields are read.
  targets = _flat(init_variables)
  if os.path.isdir(path):
    source, names = _flat(read_orbax(path)), None
  else:
    state = read_torch(path)
    names = torch_names(model, model_name, init_variables, seg=_is_drnseg(state))
    source = {k: to_flax(k, state[names[k]]) for k in targets if names.get(k) in state}
    unused = [n for n in state if n not in set(names.values()) and not _IGNORED.search(n)]
    _check_unused(path, model_name, unused)
  variables, fresh = merge(path, model_name, source, init_variables, head_modules(model, targets),
                           names)
  if fresh:
    logging.warning('init_checkpoint %s: loaded %d of %d %s arrays; freshly initialised (absent '
                    'there or another shape, e.g. another class count): %s', path,
                    len(targets) - len(fresh), len(targets), model_name, ', '.join(fresh))
  else:
    logging.info('init_checkpoint %s: loaded all %d %s arrays.', path, len(targets), model_name)
  return variables, fresh


def check_path(path: str) -> None:
  """Raises MissingFileError unless `path` exists (the driver checks before loading data)."""
  if not os.path.exists(path):
    raise MissingFileError(
        f'init_checkpoint {path} does not exist; set --config.init_checkpoint to a PyTorch '
        "state dict file or a tod_jax checkpoint directory, or to '' for random initialisation.")


def merge(path: str, model_name: str, source: dict, init_variables: dict, heads: set[str],
          names: Optional[dict] = None) -> tuple[dict, list[str]]:
  """`init_variables` with each array replaced by `source`'s of the same flat name.

  `source` is in Flax names and layouts; `heads` are top-level params modules that stay
  fresh when absent or of another shape; `names` maps flat names to the file's (messages).
  """
  targets = _flat(init_variables)
  if not set(targets) & set(source):
    raise ConfigError(
        f'init_checkpoint {path} holds none of the {model_name} weights (it has e.g. '
        f'{_quote(source)}); pass weights of a {model_name}, or set --config.model to '
        'the architecture they belong to.')
  unused = [k for k in source if k not in targets and _module(k) not in heads]
  _check_unused(path, model_name, unused)
  fresh, missing, mismatched = [], [], []
  for name, target in targets.items():
    shape = None if name not in source else np.shape(source[name])
    if shape == target.shape:
      continue
    if _module(name) in heads:
      fresh.append(name)
    elif shape is None:
      missing.append(_describe(name, names))
    else:
      mismatched.append(f'{_describe(name, names)}: {shape} there, {target.shape} here')
  if missing:
    raise ConfigError(
        f'init_checkpoint {path} lacks {len(missing)} {model_name} backbone arrays '
        f'({", ".join(missing[:_EXAMPLES])}); pass a complete {model_name} state dict or '
        'checkpoint.')
  if mismatched:
    raise ConfigError(
        f'init_checkpoint {path} does not fit {model_name}: {len(mismatched)} backbone arrays '
        f'have another shape ({"; ".join(mismatched[:_EXAMPLES])}, in Flax layout); pass '
        'weights of the same architecture and input channels.')
  fresh_set = set(fresh)
  variables = jax.tree_util.tree_map_with_path(
      lambda p, x: x if _name(p) in fresh_set else jnp.asarray(source[_name(p)], x.dtype),
      init_variables)
  return variables, sorted(fresh)


def read_torch(path: str) -> dict[str, np.ndarray]:
  """A PyTorch state dict file as {name: NumPy array}, wrappers and 'module.' removed."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConfigError(
        f'init_checkpoint {path} is a PyTorch file and reading it needs torch; install it with '
        "pip install 'tod_jax[pretrained]', or pass a tod_jax checkpoint directory.") from e
  try:
    # weights_only: tensors and plain containers, never arbitrary pickled objects.
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises pickle, zip and runtime errors for foreign files.
    raise ConfigError(
        f'init_checkpoint {path} is not a PyTorch state dict ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}); save one with '
        'torch.save(model.state_dict(), path).') from e
  for wrapper in ('state_dict', 'model'):  # Training scripts' {'state_dict': ..., 'epoch': ...}.
    if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
      state = state[wrapper]
  if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
    raise ConfigError(f'init_checkpoint {path} holds no tensors by name; save a state dict with '
                      'torch.save(model.state_dict(), path).')
  if all(k.startswith('module.') for k in state):  # Saved from nn.DataParallel.
    state = {k[len('module.'):]: v for k, v in state.items()}
  return {k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy()
          for k, v in state.items() if torch.is_tensor(v)}


def read_orbax(path: str) -> dict:
  """{'params', 'batch_stats'} of a tod_jax checkpoint: a run's checkpoints/<cycle>, a run
  directory (its latest cycle) or a candidate directory."""
  parent = os.path.dirname(os.path.abspath(path))
  if os.path.basename(parent) == 'checkpoints' and os.path.basename(path).isdigit():
    workdir, cycle = os.path.dirname(parent), int(os.path.basename(path))
  elif os.path.isdir(os.path.join(path, 'checkpoints')):
    workdir, cycle = path, None
  else:
    raise ConfigError(
        f'init_checkpoint {path} is a directory but not a tod_jax checkpoint; pass a run\'s '
        'WORKDIR or WORKDIR/checkpoints/<cycle>, a candidate directory, or a .pth file.')
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    cycle = checkpointer.latest_cycle() if cycle is None else cycle
    if cycle is None or cycle not in checkpointer.cycles():
      raise MissingFileError(f'init_checkpoint {path} holds no complete checkpoint; pass a '
                             'finished cycle\'s directory (WORKDIR/checkpoints/<cycle>).')
    tree, _, _ = checkpointer.restore(cycle, None)
  finally:
    checkpointer.close()
  tree = tree.get('final', tree)  # A candidate keeps its model under 'final'.
  return {'params': tree['params'], 'batch_stats': tree.get('batch_stats', {})}


def torch_names(model: Any, model_name: str, init_variables: dict,
                seg: bool = False) -> dict[str, str]:
  """Flat Flax name -> PyTorch state dict name for every array of `init_variables`.

  Arrays with no PyTorch counterpart (the consistency head) are left out. `seg`: the
  DRN authors' segmentation layout (base.*, seg) instead of the classifier's.
  """
  if isinstance(model, models.ResNet) and model.torch_padding:
    modules = _resnet_modules(model)
  elif isinstance(model, drn.DRNSeg):
    modules = _drn_modules(model, seg)
  else:
    raise ConfigError(
        f'PyTorch weights load into resnet18_imagenet (torchvision layout) and drn_d_22 (the '
        f"DRN authors' layout), not {model_name}; pass a tod_jax checkpoint directory instead.")
  names = {}
  for name in _flat(init_variables):
    module = tuple(name.split('/')[1:-1])
    if module in modules:
      names[name] = f'{modules[module]}.{_LEAF_TO_TORCH[name.split("/")[-1]]}'
  return names


def to_flax(name: str, array: np.ndarray) -> np.ndarray:
  """A PyTorch array in the layout of the Flax array `name` (kernels: OIHW -> HWIO, (out,
  in) -> (in, out)); arrays of an unexpected rank stay as they are (a shape error later)."""
  array = np.asarray(array)
  if name.endswith('/kernel') and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if name.endswith('/kernel') and array.ndim == 2:
    return array.T
  return array


def to_state_dict(model_name: str, variables: dict, seg: bool = False) -> dict[str, np.ndarray]:
  """`variables` as a PyTorch state dict (NumPy arrays) in the layout `load` reads.

  The inverse of the mapping: HWIO -> OIHW, BatchNorm counters added; DRNSeg's fixed
  `up.weight` is not produced (load into it with strict=False).
  """
  model = models.create_model(model_name, 1)
  flat = _flat(variables)
  state = {}
  for name, torch_name in torch_names(model, model_name, variables, seg).items():
    array = np.asarray(flat[name])
    if name.endswith('/kernel'):
      array = array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T
    state[torch_name] = np.ascontiguousarray(array)
    if torch_name.endswith('.running_mean'):
      state[torch_name.replace('running_mean', 'num_batches_tracked')] = np.array(0, np.int64)
  return state


def head_modules(model: Any, targets: dict) -> set[str]:
  """Top-level params modules that may stay fresh: the classifier and the consistency head.

  The classifier is the last top-level Conv of a DRN, else the last top-level Dense.
  """
  kind = 'Conv' if isinstance(model, drn.DRNSeg) else 'Dense'
  top = {_module(n) for n in targets if n.startswith('params/')}
  indices = [int(m[len(kind) + 1:]) for m in top if re.fullmatch(rf'{kind}_\d+', m)]
  heads = {loss_forms.CONSISTENCY_HEAD}
  if indices:
    heads.add(f'{kind}_{max(indices)}')
  return heads


def _resnet_modules(model: models.ResNet) -> dict[tuple[str, ...], str]:
  """Flax module path -> torchvision module name, for a ResNet of basic blocks."""
  modules = {('Conv_0',): 'conv1', ('BatchNorm_0',): 'bn1', ('Dense_0',): 'fc'}
  block = 0
  for stage, blocks in enumerate(model.stage_sizes):
    for b in range(blocks):
      for flax_name, torch_name in _BLOCK:
        modules[(f'BasicBlock_{block}', flax_name)] = f'layer{stage + 1}.{b}.{torch_name}'
      block += 1
  return modules


def _drn_modules(model: drn.DRNSeg, seg: bool) -> dict[tuple[str, ...], str]:
  """Flax module path -> the DRN authors' module name (drn.py's DRN, or segment.py's DRNSeg).

  Flax numbers the top-level convs and BNs together: Conv_0/BatchNorm_0 is the stem,
  then one pair per unit of a conv level; the classifier is the next Conv.
  """
  level = (lambda i: f'base.{i}') if seg else (lambda i: f'layer{i}')
  modules = {('Conv_0',): f'{level(0)}.0', ('BatchNorm_0',): f'{level(0)}.1'}
  conv, block = 1, 0
  for i, units in enumerate(model.layers):
    for unit in range(units):
      if i in model.residual_levels:
        for flax_name, torch_name in _BLOCK:
          modules[(f'DilatedBasicBlock_{block}', flax_name)] = (
              f'{level(i + 1)}.{unit}.{torch_name}')
        block += 1
      else:  # A Sequential of (conv, BN, ReLU) per unit.
        modules[(f'Conv_{conv}',)] = f'{level(i + 1)}.{3 * unit}'
        modules[(f'BatchNorm_{conv}',)] = f'{level(i + 1)}.{3 * unit + 1}'
        conv += 1
  modules[(f'Conv_{conv}',)] = 'seg' if seg else 'fc'
  return modules


def _is_drnseg(state: dict) -> bool:
  return any(k.startswith('base.') for k in state)


def _check_unused(path: str, model_name: str, unused: list[str]) -> None:
  if unused:
    raise ConfigError(
        f'init_checkpoint {path} holds {len(unused)} arrays {model_name} has no place for '
        f'({", ".join(sorted(unused)[:_EXAMPLES])}): it is another architecture; pass '
        f'{model_name} weights, or set --config.model to the architecture they belong to.')


def _flat(tree: dict) -> dict[str, Any]:
  """{'collection/module/.../leaf': array}."""
  return {_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _name(path: tuple) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _module(name: str) -> str:
  """The top-level module of a flat name ('params/Dense_0/kernel' -> 'Dense_0')."""
  parts = name.split('/')
  return parts[1] if len(parts) > 2 else ''


def _describe(name: str, names: Optional[dict]) -> str:
  return f'{names[name]} -> {name}' if names and name in names else name


def _quote(source: dict) -> str:
  return ', '.join(sorted(source)[:_EXAMPLES]) or 'nothing usable'
