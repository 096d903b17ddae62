"""Where labels come from: the simulated oracle (benchmarks) or a person (the ledger).

Both sources give the driver the same two things at the start of each cycle, a
labeled set of pool indices and a label array (-1 = unknown), so training,
scoring and querying run one code path. They differ only in when a queried
sample gets its label:

* `Oracle`: at once, from the dataset's ground truth; every cycle runs in one go.
* `Ledger`: when a person imports it (`python -m tod_jax.label`). The run's
  ledger, WORKDIR/labels.json, holds the pool's sample ids, the class names, every
  known label with the cycle whose query it answered (0 = seed set), and each
  cycle's query. The driver runs one cycle per call and then waits: a cycle is
  trained only when labels for the previous query have arrived. Each query is
  also written for the person as WORKDIR/queries/cycle_NNN.csv.
"""

import csv
import io
import json
import os

import numpy as np

from tod_jax import devices, files
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError, DataError, UserError

LEDGER = 'labels.json'
QUERIES = 'queries'
MODES = ('oracle', 'ledger')


class LabelImportError(UserError, ValueError):
  """A labels file cannot be imported; nothing was recorded."""


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ConfigError(f'Unknown labels source {mode!r}; set --config.labels to one of {MODES}.')


def query_csv_path(workdir: str, cycle: int) -> str:
  return os.path.join(workdir, QUERIES, f'cycle_{cycle:03d}.csv')


class Oracle:
  """Simulated oracle: a queried sample's label is its ground truth."""

  def __init__(self, dataset: Dataset):
    if (dataset.train_labels < 0).any():
      raise DataError(
          f'Dataset {dataset.name!r} has {int((dataset.train_labels < 0).sum())} pool samples '
          'without labels, so no oracle can label them; set --config.labels=ledger and label '
          'queries with `python -m tod_jax.query` / `python -m tod_jax.label`.')
    self._dataset = dataset
    self.num_initial = None  # Drawn at random: config.initial_fraction of the pool.

  def start(self) -> None:
    """Nothing to write: the oracle keeps no files."""

  def initial_labeled(self, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(self._dataset.pool_size, size,
                                                      replace=False))

  def cycles(self, first: int, last: int) -> range:
    return range(first, last + 1)

  def labeled_set(self, labeled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return labeled, self._dataset.train_labels

  def record_query(self, cycle: int, meta: dict) -> None:
    del cycle, meta  # The oracle answers at once: next cycle's labeled set is in `meta`.


class Ledger:
  """Labels from a person, kept in WORKDIR/labels.json (see the module docstring).

  The constructor only checks (the ledger against the dataset); `start` writes a new
  run's ledger, once every check of the run has passed.
  """

  def __init__(self, workdir: str, dataset: Dataset):
    self.workdir, self._dataset = workdir, dataset
    self.path = os.path.join(workdir, LEDGER)
    ids = sample_ids(dataset)
    classes = list(dataset.class_names) or [str(c) for c in range(dataset.num_classes)]
    self._new = not os.path.exists(self.path)
    if not self._new:
      data = read_ledger(workdir)
      if data['pool'] != ids or data['classes'] != classes:
        raise DataError(
            f'The dataset changed since this run started ({len(data["pool"])} pool samples and '
            f'classes {data["classes"]} then, {len(ids)} and {classes} now); restore the '
            'folder as it was, or start a new --workdir.')
    else:
      known = np.flatnonzero(dataset.train_labels >= 0)
      data = {'classes': classes, 'pool': ids, 'queries': {},
              'labels': {ids[i]: {'label': classes[dataset.train_labels[i]], 'cycle': 0}
                         for i in known}}
      if len(known) == dataset.pool_size:
        raise DataError(f'Every pool sample of {dataset.name!r} is labeled; a person has '
                         'nothing to label. Use --config.labels=oracle for a benchmark.')
    self._data = data
    self.num_initial = sum(1 for e in data['labels'].values() if e['cycle'] == 0)

  def start(self) -> None:
    """Writes a new run's ledger (process 0); every process reads the ledger from then on."""
    if self._new and devices.is_writer():
      os.makedirs(self.workdir, exist_ok=True)
      files.write_atomic(self.path, json.dumps(self._data, indent=1))
    devices.barrier('tod_jax:ledger')

  def initial_labeled(self, size: int, seed: int) -> np.ndarray:
    del size, seed  # The seed set is whatever the ledger knows (labeled/ of an image folder).
    return _known_labels(self._data)[0]

  def cycles(self, first: int, last: int) -> range:
    """Trains cycle `first` only if it is the first or labels answered the last query."""
    answered = any(e['cycle'] == first - 1 for e in read_ledger(self.workdir)['labels'].values())
    return range(first, min(first, last) + 1) if first == 1 or answered else range(0)

  def labeled_set(self, labeled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    del labeled  # Queried samples are labeled only once a person has answered.
    return _known_labels(read_ledger(self.workdir))

  def record_query(self, cycle: int, meta: dict) -> None:
    """Adds cycle `cycle`'s query (from its checkpoint meta) to the ledger and writes its
    CSV. Idempotent: the driver calls it again on resume to finish an interrupted write."""
    data = read_ledger(self.workdir)
    ids = sample_ids(self._dataset)
    queried = [ids[i] for i in meta['queried']]
    if data['queries'].get(str(cycle)) != queried:
      data['queries'][str(cycle)] = queried
      files.write_atomic(self.path, json.dumps(data, indent=1))
    path = query_csv_path(self.workdir, cycle)
    if not os.path.exists(path):
      scores = meta.get('query_scores') or [None] * len(queried)
      # 'lowest': the query took the lowest scores (a cod query in cycle 1, strategies/cod.py).
      order = meta.get('query_order', 'highest') if meta.get('query_scores') else ''
      out = io.StringIO()
      writer = csv.writer(out, lineterminator='\n')
      writer.writerow(['rank', 'sample_id', 'path', 'score', 'taken'])
      for rank, (sample_id, score) in enumerate(zip(queried, scores), 1):
        file_path = os.path.join(self._dataset.root, sample_id) if self._dataset.root else ''
        writer.writerow([rank, sample_id, file_path, '' if score is None else f'{score:.6g}',
                         order])
      os.makedirs(os.path.dirname(path), exist_ok=True)
      files.write_atomic(path, out.getvalue())


def _known_labels(data: dict) -> tuple[np.ndarray, np.ndarray]:
  """(pool indices with a label, the pool's label array with -1 for unknown) of a ledger."""
  index = {sample_id: i for i, sample_id in enumerate(data['pool'])}
  labels = np.full(len(data['pool']), -1, np.int32)
  for sample_id, entry in data['labels'].items():
    labels[index[sample_id]] = data['classes'].index(entry['label'])
  return np.flatnonzero(labels >= 0).astype(np.int64), labels


def keeps_files(config) -> bool:
  """Whether config.labels's source writes files of its own (the ledger and query CSVs), which
  a later call completes if a crash cut them short."""
  check_mode(config.labels)
  return config.labels == 'ledger'


def make_source(config, dataset: Dataset, workdir: str):
  """The label source named by config.labels (checked; its files are written by `start`)."""
  check_mode(config.labels)
  return Oracle(dataset) if config.labels == 'oracle' else Ledger(workdir, dataset)


def sample_ids(dataset: Dataset) -> list[str]:
  """Sample ids of the pool: file paths for folder datasets, else the pool index."""
  if dataset.sample_ids is not None:
    return [str(s) for s in dataset.sample_ids]
  return [str(i) for i in range(dataset.pool_size)]


def read_ledger(workdir: str) -> dict:
  path = os.path.join(workdir, LEDGER)
  if not os.path.exists(path):
    raise LabelImportError(f'{path} does not exist: start the run with `python -m '
                           'tod_jax.query --config=configs/image_folder.py --workdir=...` first.')
  with open(path) as f:
    return json.load(f)


def current_query(data: dict) -> tuple[int, list[str]]:
  """(cycle, sample ids) of the latest query in a ledger; cycle 0 if none yet."""
  if not data['queries']:
    return 0, []
  cycle = max(int(c) for c in data['queries'])
  return cycle, data['queries'][str(cycle)]


def _examples(ids, limit: int = 5) -> str:
  ids = sorted(ids)
  return ', '.join(repr(i) for i in ids[:limit]) + (f' and {len(ids) - limit} more'
                                                    if len(ids) > limit else '')


def _read_rows(labels_csv: str) -> list[tuple[str, str]]:
  """(sample_id, label) rows with a non-empty label; rows with an empty label are skipped."""
  with open(labels_csv, newline='') as f:
    reader = csv.DictReader(f)
    if reader.fieldnames is None:
      raise LabelImportError(f'{labels_csv} is empty; write a header `sample_id,label` and one '
                             'row per labeled sample.')
    fields = [name.strip() for name in reader.fieldnames]
    if 'sample_id' not in fields or 'label' not in fields:
      raise LabelImportError(f'{labels_csv} has columns {fields}; it needs a header with '
                             '`sample_id` and `label` (other columns are ignored).')
    reader.fieldnames = fields
    rows = [((r['sample_id'] or '').strip(), (r['label'] or '').strip()) for r in reader]
  rows = [r for r in rows if r[1]]
  if not rows:
    raise LabelImportError(f'{labels_csv} has no labeled rows; fill the `label` column of at '
                           'least one queried sample.')
  return rows


def import_labels(workdir: str, labels_csv: str) -> dict:
  """Validates `sample_id,label` rows against the current query and records them.

  Any problem (empty file, duplicate id, unknown id, id outside the current query,
  id already labeled, unknown class) raises LabelImportError and leaves the ledger
  untouched; otherwise the ledger is replaced atomically. Labeling only part of the
  query is allowed: the rest go back to the pool.

  Returns:
    {'cycle', 'imported', 'queried', 'unlabeled'}: the query's cycle, how many labels
    were recorded, the query size, and how many of its samples still have no label.
  """
  data = read_ledger(workdir)
  cycle, query = current_query(data)
  if not query:
    raise LabelImportError(f'{workdir} has no query yet; run `python -m tod_jax.query '
                           f'--workdir={workdir}` first.')
  rows = _read_rows(labels_csv)
  seen, duplicates = set(), set()
  for sample_id, _ in rows:
    (duplicates if sample_id in seen else seen).add(sample_id)
  csv_name = os.path.basename(query_csv_path(workdir, cycle))
  checks = [
      (duplicates, 'appear more than once; keep one row per sample'),
      (seen - set(data['pool']), 'are not samples of this run; use the sample_id column of '
       f'{QUERIES}/{csv_name}'),
      (seen - set(query), f'are not in the current query (cycle {cycle}, {QUERIES}/{csv_name}); '
       'only the current query can be labeled'),
      (seen & set(data['labels']), 'are already labeled; remove their rows'),
      ({s for s, label in rows if label not in data['classes']},
       f'have a label that is not a class; use one of {data["classes"]}'),
  ]
  for bad, problem in checks:
    if bad:
      raise LabelImportError(f'{labels_csv}: sample(s) {_examples(bad)} {problem}. Nothing '
                             'was imported.')
  for sample_id, label in rows:
    data['labels'][sample_id] = {'label': label, 'cycle': cycle}
  files.write_atomic(os.path.join(workdir, LEDGER), json.dumps(data, indent=1))
  unlabeled = sum(1 for s in query if s not in data['labels'])
  return {'cycle': cycle, 'imported': len(rows), 'queried': len(query), 'unlabeled': unlabeled}
