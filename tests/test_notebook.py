"""notebooks/tod_jax_colab.ipynb executes top to bottom on CPU (small sizes)."""

import os

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'notebooks', 'tod_jax_colab.ipynb')


def test_colab_notebook_runs_the_loop_and_a_round_trip(tmp_path, monkeypatch):
  monkeypatch.setenv('TOD_JAX_NOTEBOOK_EPOCHS', '2')
  monkeypatch.setenv('TOD_JAX_NOTEBOOK_CYCLES', '2')
  monkeypatch.setenv('TOD_JAX_NOTEBOOK_WORKDIR', str(tmp_path))
  monkeypatch.setenv('PYTHONPATH', ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  assert not any(cell.get('outputs') for cell in notebook.cells if cell.cell_type == 'code')
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': os.path.join(ROOT, 'notebooks')}})
  client.execute()  # Raises CellExecutionError, with the cell and traceback, if a cell fails.

  text = lambda cell: ''.join(o.get('text', '') for o in cell.outputs)
  images = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs
            if 'image/png' in o.get('data', {})]
  assert len(images) == 2  # The learning curve and the queried images.
  outputs = '\n'.join(text(c) for c in notebook.cells if c.cell_type == 'code')
  assert "cod ['144: " in outputs and "random ['144: " in outputs
  assert 'Cycle 1: trained on 50 labeled samples' in outputs
  assert "{'cycle': 1, 'imported': 15, 'queried': 18, 'unlabeled': 3}" in outputs
  assert 'Cycle 2: trained on 65 labeled samples' in outputs
  assert os.path.exists(os.path.join(str(tmp_path), 'my_run', 'queries', 'cycle_002.csv'))
