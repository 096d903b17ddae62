"""Pretrained initialisation: PyTorch ResNet-18 / DRN-D-22 state dicts and Orbax checkpoints.

The PyTorch networks are written here in plain torch with torchvision's and the DRN
authors' module names (neither package can be installed here); the Flax models must
compute the same logits from the loaded weights.
"""

import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import cycle, datasets, driver, models, pretrained, rundir
from tod_jax.checkpointing import Checkpointer
from tod_jax.errors import ConfigError, MissingFileError
from tod_jax.train_state import init_variables

# Math against NumPy/PyTorch/XLA: float32 on every platform (conftest.highest_precision).
pytestmark = pytest.mark.usefixtures('highest_precision')


torch = pytest.importorskip('torch')
nn = torch.nn


def _randomise(module: 'nn.Module', head: 'nn.Module') -> None:
  """Non-trivial BatchNorm parameters and running statistics, and a head of unit-variance
  weights so that the logits are of order 1 (seeded by the caller)."""
  nn.init.normal_(head.weight)
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 2.0)


class _BasicBlock(nn.Module):
  """torchvision's and the DRN authors' BasicBlock: conv1, bn1, conv2, bn2, downsample.0/.1."""

  def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

  def forward(self, x):
    y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class _TorchResNet18(nn.Module):
  """torchvision.models.resnet18's architecture and state dict names."""

  def __init__(self, num_classes: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, width in enumerate((64, 128, 256, 512)):
      stride = 1 if i == 0 else 2
      setattr(self, f'layer{i + 1}', nn.Sequential(_BasicBlock(cin, width, stride),
                                                   _BasicBlock(width, width)))
      cin = width
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(512, num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(1, 5):
      x = getattr(self, f'layer{i}')(x)
    return self.fc(torch.flatten(self.avgpool(x), 1))


def _conv_layers(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> 'nn.Sequential':
  """One DRN-D conv level of one unit: (conv, BN, ReLU), names .0 and .1."""
  return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _TorchDRNSegD22(nn.Module):
  """The DRN authors' segment.py DRNSeg around drn.py's drn_d_22: base.0-base.8, seg.

  Upsampled with bilinear interpolation (half-pixel centres) instead of their fixed
  transposed convolution, as tod_jax's DRN does.
  """

  def __init__(self, num_classes: int):
    super().__init__()
    c = (16, 32, 64, 128, 256, 512, 512, 512)
    self.base = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, c[0], 7, 1, 3, bias=False), nn.BatchNorm2d(c[0]),
                      nn.ReLU(inplace=True)),
        _conv_layers(c[0], c[0]), _conv_layers(c[0], c[1], stride=2),
        nn.Sequential(_BasicBlock(c[1], c[2], 2), _BasicBlock(c[2], c[2])),
        nn.Sequential(_BasicBlock(c[2], c[3], 2), _BasicBlock(c[3], c[3])),
        nn.Sequential(_BasicBlock(c[3], c[4], 1, 2), _BasicBlock(c[4], c[4], 1, 2)),
        nn.Sequential(_BasicBlock(c[4], c[5], 1, 4), _BasicBlock(c[5], c[5], 1, 4)),
        _conv_layers(c[5], c[6], dilation=2), _conv_layers(c[6], c[7]))
    self.seg = nn.Conv2d(c[7], num_classes, 1)

  def forward(self, x):
    y = self.seg(self.base(x))
    return nn.functional.interpolate(y, size=x.shape[2:], mode='bilinear', align_corners=False)


def _torch_logits(module: 'nn.Module', images: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    out = module.eval()(torch.from_numpy(images).permute(0, 3, 1, 2))
  return (out.permute(0, 2, 3, 1) if out.ndim == 4 else out).numpy()


@pytest.fixture(scope='module')
def resnet(tmp_path_factory):
  """(torch ResNet-18 with 10 classes, its saved state dict, its state dict, Flax init)."""
  torch.manual_seed(0)
  net = _TorchResNet18(10)
  _randomise(net, net.fc)
  path = str(tmp_path_factory.mktemp('resnet') / 'resnet18.pth')
  torch.save(net.state_dict(), path)
  model = models.create_model('resnet18_imagenet', 10)
  init = init_variables(model, jax.random.PRNGKey(0), (64, 64, 3))
  return net, path, net.state_dict(), init


def _save(tmp_path, state: dict, name: str = 'weights.pth') -> str:
  path = str(tmp_path / name)
  torch.save({k: v if torch.is_tensor(v) else torch.from_numpy(np.array(v))
              for k, v in state.items()}, path)
  return path


def test_torchvision_resnet18_gives_the_same_logits(resnet):
  net, path, state, init = resnet
  variables, fresh = pretrained.load(path, 'resnet18_imagenet', init)
  assert fresh == []
  chex.assert_trees_all_equal_shapes_and_dtypes(variables, init)
  # BatchNorm statistics come along: running_var of the last block's second BN.
  np.testing.assert_array_equal(variables['batch_stats']['BasicBlock_7']['BatchNorm_1']['var'],
                                state['layer4.1.bn2.running_var'].numpy())
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  model = models.create_model('resnet18_imagenet', 10)
  logits = jax.jit(model.apply)(variables, jnp.asarray(images))
  np.testing.assert_allclose(logits, _torch_logits(net, images), rtol=1e-4, atol=1e-4)


def test_other_class_count_keeps_the_head_fresh_and_names_it(resnet, tmp_path, caplog):
  _, _, state, init = resnet
  state = dict(state, **{'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)})
  path = _save(tmp_path, state, 'imagenet.pth')
  with caplog.at_level('INFO'):
    variables, fresh = pretrained.load(path, 'resnet18_imagenet', init)
  assert fresh == ['params/Dense_0/bias', 'params/Dense_0/kernel']
  chex.assert_trees_all_equal(variables['params']['Dense_0'], init['params']['Dense_0'])
  np.testing.assert_array_equal(variables['params']['Conv_0']['kernel'],
                                state['conv1.weight'].numpy().transpose(2, 3, 1, 0))
  lines = [r.getMessage() for r in caplog.records if 'init_checkpoint' in r.getMessage()]
  total = len(jax.tree.leaves(init))
  assert len(lines) == 1 and 'Dense_0/kernel' in lines[0], lines
  assert f'loaded {total - 2} of {total}' in lines[0], lines


def test_drn_d_22_authors_layout_gives_the_same_logits_and_round_trips(tmp_path):
  torch.manual_seed(1)
  net = _TorchDRNSegD22(5)
  _randomise(net, net.seg)
  path = str(tmp_path / 'drn_d_22_seg.pth')
  # As segment.py saves it: {'state_dict': ...} of an nn.DataParallel ('module.' prefix).
  torch.save({'epoch': 3, 'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()}},
             path)
  model = models.create_model('drn_d_22', 5)
  init = init_variables(model, jax.random.PRNGKey(0), (32, 32, 3))
  variables, fresh = pretrained.load(path, 'drn_d_22', init)
  assert fresh == []
  images = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
  logits = jax.jit(model.apply)(variables, jnp.asarray(images))
  np.testing.assert_allclose(logits, _torch_logits(net, images), rtol=1e-4, atol=1e-4)

  # drn.py's classifier layout (layer0..layer8, fc), written by to_state_dict and read back.
  state = pretrained.to_state_dict('drn_d_22', variables)
  assert {'layer0.0.weight', 'layer2.0.weight', 'layer3.0.downsample.1.running_var',
          'layer6.1.conv2.weight', 'layer8.1.running_mean', 'fc.weight'} <= set(state)
  assert state['fc.weight'].shape == (5, 512, 1, 1)
  reloaded, fresh = pretrained.load(_save(tmp_path, state, 'drn_d_22.pth'), 'drn_d_22', init)
  assert fresh == []
  chex.assert_trees_all_close(reloaded, variables)


def test_orbax_checkpoint_of_a_run_loads_into_a_new_run(tiny_config, tmp_path):
  config = tiny_config
  config.num_cycles, config.num_epochs, config.strategy = 1, 1, 'random'
  workdir = str(tmp_path / 'run')
  driver.run(config, workdir)
  checkpointer = Checkpointer(workdir)
  try:
    saved, _, _ = checkpointer.restore(1, None)
  finally:
    checkpointer.close()

  dataset = datasets.load_dataset(config)
  new = tiny_config
  new.seed, new.init_checkpoint = 7, f'{workdir}/checkpoints/1'
  model = models.create_model(new.model, dataset.num_classes)
  variables, _ = cycle.initial_variables(new, model, dataset)
  expected = {'params': saved['params'], 'batch_stats': saved['batch_stats']}
  chex.assert_trees_all_close(variables, expected)
  # The run directory stands for its latest checkpoint.
  chex.assert_trees_all_close(pretrained.load(workdir, new.model, variables)[0], expected)
  assert rundir.ADDED_FIELDS['init_checkpoint'] == ''


def test_missing_file_is_one_clear_error(resnet, tmp_path, tiny_config):
  with pytest.raises(MissingFileError, match='does not exist; set --config.init_checkpoint'):
    pretrained.load(str(tmp_path / 'nope.pth'), 'resnet18_imagenet', resnet[3])
  tiny_config.init_checkpoint = str(tmp_path / 'nope.pth')
  with pytest.raises(MissingFileError, match='nope.pth does not exist'):  # Before any data.
    driver.validate_config(tiny_config)


def test_state_dict_of_another_architecture_is_refused(resnet, tmp_path):
  path = _save(tmp_path, {'features.0.weight': np.zeros((64, 3, 3, 3), np.float32),
                          'classifier.6.weight': np.zeros((1000, 4096), np.float32)})
  with pytest.raises(ConfigError, match='another architecture.*set --config.model'):
    pretrained.load(path, 'resnet18_imagenet', resnet[3])


def test_backbone_shape_or_array_missing_is_refused(resnet, tmp_path):
  state = dict(resnet[2], **{'layer1.0.conv1.weight': torch.zeros(32, 64, 3, 3)})
  with pytest.raises(ConfigError, match=r'layer1.0.conv1.weight -> params/BasicBlock_0/Conv_0/'
                     r'kernel: \(3, 3, 64, 32\) there.*pass weights of the same architecture'):
    pretrained.load(_save(tmp_path, state), 'resnet18_imagenet', resnet[3])
  state = {k: v for k, v in resnet[2].items() if k != 'layer4.1.bn2.running_var'}
  with pytest.raises(ConfigError, match='lacks 1 .* backbone arrays.*complete'):
    pretrained.load(_save(tmp_path, state), 'resnet18_imagenet', resnet[3])


def test_pth_without_torch_names_the_extra(resnet, monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(ConfigError, match=r"needs torch; install it with pip install "
                     r"'tod_jax\[pretrained\]'"):
    pretrained.load(resnet[1], 'resnet18_imagenet', resnet[3])
