"""Straightforward PyTorch models, the baselines the benchmarks compare with.

ResNet18: same architecture as tod_jax.models.ResNet(cifar_stem=True): 3x3 stem,
no max-pool, four stages of two basic blocks (64/128/256/512), global average
pool, linear head. SmallCNN: same as tod_jax.models.SmallCNN (for smoke runs).
"""

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):

  def __init__(self, num_classes: int = 10, in_channels: int = 3):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                              nn.BatchNorm2d(64), nn.ReLU())
    layers, cin = [], 64
    for i, width in enumerate((64, 128, 256, 512)):
      for j in range(2):
        layers.append(BasicBlock(cin, width, 2 if i > 0 and j == 0 else 1))
        cin = width
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(512, num_classes)
    self.cons = nn.Linear(512, num_classes)  # The authors' consistency head.

  def features(self, x):
    return torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)

  def forward(self, x):
    return self.fc(self.features(x))


class SmallCNN(nn.Module):

  def __init__(self, num_classes: int = 10, in_channels: int = 3):
    super().__init__()
    layers, cin = [], in_channels
    for i, width in enumerate((32, 64, 128)):
      layers += [nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
      if i == 0:
        layers.append(nn.MaxPool2d(2))
      cin = width
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, num_classes)
    self.cons = nn.Linear(cin, num_classes)  # The authors' consistency head.

  def features(self, x):
    return torch.flatten(F.adaptive_avg_pool2d(self.layers(x), 1), 1)

  def forward(self, x):
    return self.fc(self.features(x))


MODELS = {'resnet18': ResNet18, 'small_cnn': SmallCNN}  # Same names as tod_jax.models.
