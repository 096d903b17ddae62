"""Caltech-101, Table VIII: resize 256, centre crop 224, lr 0.01, 50 epochs, batch 64."""

from tod_jax.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'caltech101'
  config.model = 'resnet18_imagenet'
  config.crop_padding = 0
  config.learning_rate = 0.01
  config.num_epochs = 50
  config.batch_size = 64
  config.unlabeled_batch_size = 64
  config.score_chunk_size = 256
  # The paper starts from ImageNet-pretrained ResNet-18 (it cannot be downloaded here). On a
  # machine with network save torchvision's weights, e.g.
  #   torch.save(torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict(), 'r18.pth')
  # and pass --config.init_checkpoint=r18.pth (needs the 'pretrained' extra, torch); the
  # 1000-class fc stays freshly initialised for the 102 classes. '' = random initialisation.
  config.init_checkpoint = ''
  return config
