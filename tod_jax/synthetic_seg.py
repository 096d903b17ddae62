"""A small synthetic segmentation dataset: textured shapes on textured backgrounds.

Each image has 1-3 shapes (circle, square, triangle, cross; later ones occlude
earlier ones) on a striped, noisy background. A shape's colour is its class's
base colour with a random shift, so both colour and geometry identify it. The
mask holds the class per pixel (0 = background) and `IGNORE_LABEL` on a
one-pixel band along every shape outline, like the boundary band of VOC-style
annotations. Everything is drawn from one seed: the same seed gives the same
arrays.
"""

import numpy as np

from tod_jax.dataset import Dataset, pool_statistics

CLASSES = ('background', 'circle', 'square', 'triangle', 'cross')
IGNORE_LABEL = 255
_BASE_COLOURS = np.array([[0, 0, 0], [220, 60, 60], [60, 200, 60], [70, 90, 230], [230, 210, 50]],
                         np.float64)


def _signed_distance(kind: int, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
  """Approximate signed distance (pixels, < 0 inside) to a shape of size r at the origin."""
  box = lambda hy, hx: np.maximum(np.abs(dy) - hy, np.abs(dx) - hx)
  if kind == 1:
    return np.hypot(dy, dx) - r
  if kind == 2:
    return box(0.8 * r, 0.8 * r)
  if kind == 3:  # Equilateral triangle, apex up: its three edges' half-planes.
    edges = [dy, -0.5 * dy - 0.866 * dx, -0.5 * dy + 0.866 * dx]
    return np.maximum.reduce(edges) - 0.6 * r
  return np.minimum(box(r, 0.35 * r), box(0.35 * r, r))


def generate(num_images: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Images uint8 [N, size, size, 3] and masks uint8 [N, size, size]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
  images = np.empty((num_images, size, size, 3), np.uint8)
  masks = np.empty((num_images, size, size), np.uint8)
  for n in range(num_images):
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.3, 1.2)
    stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6.3))
    image = (rng.uniform(40, 200, 3) + 35 * stripes[..., None]
             + rng.normal(0, 12, (size, size, 3)))
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
      kind = int(rng.integers(1, len(CLASSES)))
      r = rng.uniform(0.15, 0.28) * size
      cy, cx = rng.uniform(r * 0.6, size - r * 0.6, 2)
      sdf = _signed_distance(kind, yy - cy, xx - cx, r)
      inside = sdf < 0
      colour = _BASE_COLOURS[kind] + rng.uniform(-35, 35, 3)
      image[inside] = colour + rng.normal(0, 10, (inside.sum(), 3))
      mask[inside] = kind
      mask[np.abs(sdf) < 0.5] = IGNORE_LABEL
    images[n] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    masks[n] = mask
  return images, masks


def load(seed: int = 0, num_train: int = 400, num_test: int = 100,
         size: int = 32) -> Dataset:
  """The 'synthetic_seg' dataset: a pool of `num_train` and a test set of `num_test`."""
  train_x, train_y = generate(num_train, size, seed)
  test_x, test_y = generate(num_test, size, seed + 1)
  return Dataset('synthetic_seg', train_x, train_y, test_x, test_y, len(CLASSES),
                 *pool_statistics(train_x), IGNORE_LABEL)
