"""A person in the loop: image folder -> query -> label -> next cycle, and bad label files."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env, write_image_folder
from tod_jax import checkpointing, driver, image_folder, label, label_sources, query

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_folder_config(data_dir):
  """configs/image_folder.py cut down to seconds: 8x8 images, the small CNN, 2 epochs."""
  from configs import image_folder  # pylint: disable=import-outside-toplevel
  config = image_folder.get_config()
  config.data_dir = data_dir
  config.image_size = 8
  config.model = 'small_cnn'
  config.budget_fraction = 0.1  # 3 of the 32 pool images per query.
  config.num_epochs = 2
  config.batch_size = 8
  config.unlabeled_batch_size = 8
  config.score_chunk_size = 64
  config.progress_bar = False
  config.tensorboard = False
  return config


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


def _snapshot(workdir):
  out = {}
  for base, _, files in os.walk(workdir):
    for name in files:
      with open(os.path.join(base, name), 'rb') as f:
        out[os.path.relpath(os.path.join(base, name), workdir)] = f.read()
  return out


@pytest.fixture(scope='module')
def queried_once(tmp_path_factory):
  """A run whose cycle 1 is trained and queried, waiting for labels."""
  images = str(tmp_path_factory.mktemp('images'))
  truth = write_image_folder(images)
  workdir = str(tmp_path_factory.mktemp('run'))
  message = query.query(make_folder_config(images), workdir)
  return images, truth, workdir, message


def test_query_writes_the_ranked_csv_without_labels(queried_once):
  images, _, workdir, message = queried_once
  rows = _read_csv(os.path.join(workdir, 'queries', 'cycle_001.csv'))
  assert list(rows[0]) == ['rank', 'sample_id', 'path', 'score', 'taken']
  assert [r['rank'] for r in rows] == ['1', '2', '3']  # round(0.1 * 32) = 3.
  assert all(r['sample_id'].startswith('unlabeled/') for r in rows)
  assert all(r['path'] == os.path.join(images, r['sample_id']) and os.path.exists(r['path'])
             for r in rows)
  scores = [float(r['score']) for r in rows]
  # Cycle 1 of cod (cod_first_cycle='lowest') takes the lowest COD first.
  assert {r['taken'] for r in rows} == {'lowest'}
  assert scores == sorted(scores) and scores[0] >= 0
  assert 'Cycle 1: trained on 8 labeled samples' in message and 'cycle_001.csv' in message
  ledger = label_sources.read_ledger(workdir)
  assert ledger['classes'] == ['cat', 'dog'] and len(ledger['pool']) == 32
  assert ledger['queries'] == {'1': [r['sample_id'] for r in rows]}
  # The seed set is labeled/ (cycle 0); nothing else is labeled yet.
  assert {s: e['label'] for s, e in ledger['labels'].items()} == {
      f'labeled/{c}/{c}_{i:02d}.png': c for c in ('cat', 'dog') for i in range(4)}


def test_query_again_without_labels_trains_nothing(queried_once):
  images, _, workdir, _ = queried_once
  before = _snapshot(workdir)
  message = query.query(make_folder_config(images), workdir)
  assert 'No labels have arrived for the query of cycle 1' in message
  assert _snapshot(workdir) == before


BAD_FILES = [
    ('', 'is empty'),
    ('sample_id,label\n', 'has no labeled rows'),
    ('sample_id,label\n{q0},\n', 'has no labeled rows'),  # Blank labels only.
    ('id,class\n{q0},cat\n', 'needs a header with `sample_id` and `label`'),
    ('sample_id,label\n{q0},cat\n{q0},dog\n', r"'{q0}' appear more than once"),
    ('sample_id,label\nunlabeled/zebra.png,cat\n', "'unlabeled/zebra.png' are not samples"),
    ('sample_id,label\n{q0},cat\n{other},dog\n', r"'{other}' are not in the current query"),
    ('sample_id,label\nlabeled/cat/cat_00.png,cat\n', 'not in the current query'),
    ('sample_id,label\n{q0},cat\n{q1},zebra\n', r"'{q1}' have a label that is not a class; use "
     r"one of \['cat', 'dog'\]"),
]


@pytest.mark.parametrize('text,message', BAD_FILES)
def test_bad_label_file_gives_its_error_and_changes_nothing(queried_once, tmp_path, text,
                                                            message):
  _, _, workdir, _ = queried_once
  ledger = label_sources.read_ledger(workdir)
  query_ids = ledger['queries']['1']
  other = next(s for s in ledger['pool'] if s.startswith('unlabeled/') and s not in query_ids)
  names = {'q0': query_ids[0], 'q1': query_ids[1], 'other': other}
  before = _snapshot(workdir)
  with pytest.raises(label_sources.LabelImportError, match=message.format(**names)):
    label_sources.import_labels(workdir, _write(tmp_path / 'labels.csv', text.format(**names)))
  assert _snapshot(workdir) == before  # labels.json byte-identical, and everything else.


def test_label_before_any_query_is_a_clear_error(tmp_path):
  with pytest.raises(label_sources.LabelImportError, match='does not exist: start the run'):
    label_sources.import_labels(str(tmp_path), _write(tmp_path / 'l.csv', 'sample_id,label\na,b\n'))


def test_partial_labels_then_next_cycle_trains_on_them(queried_once, tmp_path):
  images, truth, first_dir, _ = queried_once
  workdir = str(tmp_path / 'run')
  shutil.copytree(first_dir, workdir)
  query_ids = label_sources.read_ledger(workdir)['queries']['1']

  # The person labels two of the three queried images, in the query CSV itself.
  rows = _read_csv(os.path.join(workdir, 'queries', 'cycle_001.csv'))
  text = 'rank,sample_id,path,score,label\n' + ''.join(
      f"{r['rank']},{r['sample_id']},{r['path']},{r['score']},"
      f"{truth[r['sample_id']] if i < 2 else ''}\n" for i, r in enumerate(rows))
  result = label_sources.import_labels(workdir, _write(tmp_path / 'answers.csv', text))
  assert result == {'cycle': 1, 'imported': 2, 'queried': 3, 'unlabeled': 1}
  assert 'partial labeling: 1 stay unlabeled' in label.summary(result, workdir)
  ledger_bytes = open(os.path.join(workdir, label_sources.LEDGER), 'rb').read()
  with pytest.raises(label_sources.LabelImportError, match='are already labeled'):
    label_sources.import_labels(workdir, str(tmp_path / 'answers.csv'))
  assert open(os.path.join(workdir, label_sources.LEDGER), 'rb').read() == ledger_bytes

  # What the next cycle trains on: the 8 seeds plus the 2 new labels, with their classes.
  dataset = image_folder.load_image_folder(images, 8)
  labeled, train_labels = label_sources.Ledger(workdir, dataset).labeled_set(np.zeros(0, np.int64))
  ids = label_sources.sample_ids(dataset)
  assert {ids[i]: dataset.class_names[train_labels[i]] for i in labeled} == {
      s: truth[s] for s in ids if s.startswith('labeled/') or s in query_ids[:2]}
  assert (train_labels >= 0).sum() == 10

  # The next query, from the command line with the run's saved config, trains cycle 2.
  result = subprocess.run([sys.executable, '-m', 'tod_jax.query', f'--workdir={workdir}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Cycle 2: trained on 10 labeled samples' in result.stdout
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [(r['cycle'], r['num_labeled']) for r in records] == [(1, 8), (2, 10)]
  second = [r['sample_id'] for r in _read_csv(os.path.join(workdir, 'queries', 'cycle_002.csv'))]
  assert len(second) == 3 and not set(second) & set(query_ids[:2])
  assert label_sources.read_ledger(workdir)['queries']['2'] == second
  ckpt = checkpointing.Checkpointer(workdir)
  meta = ckpt.restore_meta(2)
  ckpt.close()
  assert [ids[i] for i in meta['queried']] == second and len(meta['query_scores']) == 3


def test_label_command_line_reports_errors_and_success(queried_once, tmp_path):
  _, truth, first_dir, _ = queried_once
  workdir = str(tmp_path / 'run')
  shutil.copytree(first_dir, workdir)
  query_ids = label_sources.read_ledger(workdir)['queries']['1']
  run = lambda path: subprocess.run(
      [sys.executable, '-m', 'tod_jax.label', f'--workdir={workdir}', f'--labels={path}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=subprocess_env())
  bad = run(_write(tmp_path / 'bad.csv', f'sample_id,label\n{query_ids[0]},zebra\n'))
  assert bad.returncode == 1 and 'not a class' in bad.stderr and 'Nothing was imported' in bad.stderr
  good = run(_write(tmp_path / 'good.csv', 'sample_id,label\n' + ''.join(
      f'{s},{truth[s]}\n' for s in query_ids)))
  assert good.returncode == 0, good.stderr[-3000:]
  assert 'Recorded 3 labels for the query of cycle 1 (3 of 3' in good.stdout
  assert 'partial' not in good.stdout


def test_changed_folder_and_oracle_on_unlabeled_images_are_refused(queried_once, tmp_path):
  images, _, first_dir, _ = queried_once
  config = make_folder_config(images)
  config.labels = 'oracle'
  with pytest.raises(ValueError, match='24 pool samples without labels.*--config.labels=ledger'):
    driver.run(config, str(tmp_path / 'oracle'))
  workdir = str(tmp_path / 'run')
  shutil.copytree(first_dir, workdir)
  changed = str(tmp_path / 'images')
  shutil.copytree(images, changed)
  os.remove(os.path.join(changed, 'unlabeled', 'cat_00.png'))
  config = make_folder_config(changed)  # data_dir may change on resume; the images may not.
  with pytest.raises(ValueError, match='dataset changed since this run started'):
    driver.run(config, workdir)


def test_query_write_cut_short_by_a_crash_is_completed_on_the_next_call(queried_once, tmp_path):
  images, _, first_dir, _ = queried_once
  workdir = str(tmp_path / 'run')
  shutil.copytree(first_dir, workdir)
  expected = _snapshot(workdir)
  # As if the process died right after saving checkpoint 1: no ledger query, no CSV.
  ledger = label_sources.read_ledger(workdir)
  ledger['queries'] = {}
  _write(os.path.join(workdir, label_sources.LEDGER), json.dumps(ledger, indent=1))
  os.remove(os.path.join(workdir, 'queries', 'cycle_001.csv'))
  assert 'No labels have arrived for the query of cycle 1' in query.query(
      make_folder_config(images), workdir)
  assert _snapshot(workdir) == expected
