"""Test-data-aware model selection (paper Section V, Tables III-V), without test labels.

Every method gives each candidate model a score per unlabeled test sample,
smaller = expected better:

* model level: candidates are ranked by their mean score over the test set
  (for TOD this is Eq. 10, the mean squared output discrepancy between the
  candidate and its baseline checkpoint);
* sample level: each test sample takes the prediction of the candidate with the
  smallest score on that sample.

Methods: 'tod' (Eq. 10), 'train_loss' (the candidate's final training loss, the
same for every sample), and the uncertainties of the candidate's softmax output
'least_confidence', 'margin_confidence', 'ratio_confidence', 'entropy'.
"""

import dataclasses
from typing import Callable, Optional, Sequence

import chex
import ml_collections
import numpy as np

from tod_jax import candidates as candidates_lib
from tod_jax import models, scoring, tod, uncertainty
from tod_jax.candidates import Candidate
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError
from tod_jax.scoring import Scorer
from tod_jax.sharded_map import make_mesh

# (k, candidates per draw) of Table III: "Top-k(m)" = the truly best of m is in the top k.
TOP_K_SETTINGS = ((1, 3), (1, 5), (1, 10), (3, 10))


@dataclasses.dataclass(frozen=True)
class CandidateOutputs:
  """What the methods need from one candidate on the test set."""
  logits: np.ndarray  # [n, classes], the candidate w.
  baseline_logits: np.ndarray  # [n, classes], its baseline w~.
  train_loss: float  # Mean supervised loss of its last training epoch.


def candidate_outputs(scorer: Scorer, candidate: Candidate, images: np.ndarray,
                      baseline: str) -> CandidateOutputs:
  """Runs a candidate and its baseline `baseline` (e.g. '1epoch') over `images`."""
  return CandidateOutputs(scorer.logits(candidate.variables, images),
                          scorer.logits(candidate.baseline(baseline), images),
                          float(candidate.meta['train_loss']))


def _uncertainty(measure: Callable) -> Callable:
  """A measure from tod_jax.uncertainty (larger = less sure) of the candidate's softmax."""
  return lambda c, output: np.asarray(measure(tod.model_output(c.logits, 'softmax')))


def _tod(c: CandidateOutputs, output: str) -> np.ndarray:
  return np.asarray(tod.squared_output_discrepancy(tod.model_output(c.logits, output),
                                                   tod.model_output(c.baseline_logits, output)))


def _train_loss(c: CandidateOutputs, output: str) -> np.ndarray:
  del output
  return np.full(len(c.logits), c.train_loss)


# Method name -> per-sample scores [n] of one candidate (smaller = expected better).
METHODS: dict[str, Callable[[CandidateOutputs, str], np.ndarray]] = {
    'tod': _tod,
    'train_loss': _train_loss,
    'least_confidence': _uncertainty(uncertainty.least_confidence),
    'margin_confidence': _uncertainty(lambda p: 1.0 + uncertainty.margin(p)),  # 1 - (p1 - p2).
    'ratio_confidence': _uncertainty(uncertainty.ratio_confidence),
    'entropy': _uncertainty(uncertainty.entropy),
}
# Row names of the paper's tables.
METHOD_NAMES = {'tod': 'TOD', 'train_loss': 'Train loss', 'least_confidence': 'Least-C',
                'margin_confidence': 'Margin-C', 'ratio_confidence': 'Ratio-C',
                'entropy': 'Entropy'}


def _method(name: str) -> Callable:
  if name not in METHODS:
    raise ConfigError(f'Unknown model-selection method {name!r}; use one of {sorted(METHODS)}.')
  return METHODS[name]


def sample_scores(method: str, candidates: Sequence[CandidateOutputs],
                  output: str = 'softmax') -> np.ndarray:
  """[num_candidates, n] per-sample scores; `output` is f of Eq. 10 ('softmax' or 'logits')."""
  fn = _method(method)
  return np.stack([fn(c, output) for c in candidates])


def model_scores(method: str, candidates: Sequence[CandidateOutputs],
                 output: str = 'softmax') -> np.ndarray:
  """[num_candidates] model-level scores: Eq. 10 for 'tod', else the test-set mean."""
  if method == 'tod':
    return np.array([float(tod.test_discrepancy(tod.model_output(c.logits, output),
                                                tod.model_output(c.baseline_logits, output)))
                     for c in candidates])
  return sample_scores(method, candidates, output).mean(-1)


def rank(scores: np.ndarray) -> np.ndarray:
  """Candidate indices from best (smallest score) to worst; ties keep the index order."""
  return np.argsort(np.asarray(scores), kind='stable')


def select_per_sample(scores: np.ndarray, predictions: np.ndarray) -> np.ndarray:
  """Sample-level selection: per sample, the prediction of the smallest-score candidate.

  Args:
    scores: [num_candidates, n] per-sample scores.
    predictions: [num_candidates, n] each candidate's predicted class.
  Returns:
    [n] predictions.
  """
  chex.assert_equal_shape([scores, predictions])
  best = np.argmin(scores, axis=0)
  return np.take_along_axis(predictions, best[None], axis=0)[0]


def top_k_hit(scores: np.ndarray, accuracies: np.ndarray, k: int) -> bool:
  """Whether a truly best candidate (highest accuracy; ties all count) is among the k best-scored."""
  chex.assert_equal_shape([scores, accuracies])
  best = np.flatnonzero(accuracies == np.max(accuracies))
  return bool(np.isin(rank(scores)[:k], best).any())


def top_k_hit_rate(scores: np.ndarray, accuracies: np.ndarray, k: int, subset_size: int,
                   num_draws: int, rng: np.random.Generator) -> float:
  """Mean top-k hit over `num_draws` random subsets of `subset_size` candidates (Table III)."""
  scores, accuracies = np.asarray(scores), np.asarray(accuracies)
  if subset_size > len(scores):
    raise ConfigError(f'Top-{k}({subset_size}) needs at least {subset_size} candidates; got '
                     f'{len(scores)}.')
  hits = [top_k_hit(scores[s], accuracies[s], k) for s in (
      rng.choice(len(scores), subset_size, replace=False) for _ in range(num_draws))]
  return float(np.mean(hits))


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Labeled evaluation of all methods on one candidate pool."""
  accuracies: np.ndarray  # [num_candidates] test accuracy of each single model.
  model_scores: dict  # method -> [num_candidates].
  top_k: dict  # method -> {(k, m): hit rate}, only settings with m <= num_candidates.
  sample_accuracy: dict  # method -> accuracy of sample-level selection.


def evaluate(candidates: Sequence[CandidateOutputs], labels: np.ndarray,
             methods: Optional[Sequence[str]] = None, output: str = 'softmax',
             num_draws: int = 1000, seed: int = 0) -> Evaluation:
  """Tables III and IV for `methods` (default: all) on labeled test data."""
  methods = list(methods or METHODS)
  predictions = np.stack([np.argmax(c.logits, -1) for c in candidates])
  accuracies = np.mean(predictions == labels[None], axis=-1)
  scores, top_k, sample_acc = {}, {}, {}
  for method in methods:
    scores[method] = model_scores(method, candidates, output)
    rng = np.random.default_rng(seed)  # The same subsets for every method.
    top_k[method] = {(k, m): top_k_hit_rate(scores[method], accuracies, k, m, num_draws, rng)
                     for k, m in TOP_K_SETTINGS if m <= len(candidates)}
    selected = select_per_sample(sample_scores(method, candidates, output), predictions)
    sample_acc[method] = float(np.mean(selected == labels))
  return Evaluation(accuracies, scores, top_k, sample_acc)


def load_outputs(directories: Sequence[str], config: ml_collections.ConfigDict, dataset: Dataset,
                 baseline: str) -> list[CandidateOutputs]:
  """Test-set outputs of saved candidates and their baselines, through one sharded Scorer.

  `config` gives the model (it must be the candidates'), f of Eq. 10 (score_output)
  and the chunk size.
  """
  # Test-set outputs from a float32 model, as the scorer of a run (cycle.setup).
  model = models.create_model(config.model, dataset.num_classes, config.dropout_rate)
  scorer = scoring.shared_scorer(model, tuple(dataset.mean), tuple(dataset.std),
                                 config.score_output, config.score_chunk_size, make_mesh(),
                                 config.precision.score, config.precision.evaluate)
  outputs = []
  for directory in directories:
    candidate = candidates_lib.load_candidate(directory)
    trained = candidate.meta['config']
    if (trained['model'], trained['dataset']) != (config.model, config.dataset):
      raise ConfigError(f'{directory} holds a {trained["model"]} trained on '
                       f'{trained["dataset"]} but --config has {config.model} on '
                       f'{config.dataset}; pass the config the candidates were trained with.')
    outputs.append(candidate_outputs(scorer, candidate, dataset.test_images, baseline))
  return outputs


def _pct(x: float) -> str:
  return f'{100 * x:.1f}'


def markdown_tables(names: Sequence[str], evaluation: Evaluation) -> str:
  """Table III (top-k hit rates, %) and Table IV (sample-level accuracy, %) as markdown."""
  settings = sorted({s for top_k in evaluation.top_k.values() for s in top_k})
  lines = []
  if settings:  # Table III needs at least 3 candidates.
    lines += ['| method | ' + ' | '.join(f'Top-{k}({m})' for k, m in settings) + ' |',
              '|---|' + '---|' * len(settings)]
    lines += [f'| {METHOD_NAMES.get(method, method)} | ' +
              ' | '.join(_pct(top_k[s]) for s in settings) + ' |'
              for method, top_k in evaluation.top_k.items()]
    lines.append('')
  acc = evaluation.accuracies
  lines += [f'| sample-level selection from {len(names)} candidates | test accuracy (%) |',
            '|---|---|', f'| min single model | {100 * acc.min():.2f} |',
            f'| mean single model | {100 * acc.mean():.2f} |',
            f'| max single model | {100 * acc.max():.2f} |']
  lines += [f'| {METHOD_NAMES.get(m, m)} | {100 * a:.2f} |'
            for m, a in evaluation.sample_accuracy.items()]
  return '\n'.join(lines)
