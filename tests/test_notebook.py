"""notebooks/tod_jax_colab.ipynb executes top to bottom on CPU (small sizes)."""

import ast
import importlib
import importlib.util
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


def test_notebook_code_compiles_and_names_only_existing_tod_jax_attributes():
  """Every code cell compiles (Colab's `!pip` lines aside), and every `tod_jax.a.b` it names
  exists, in branches the CPU run above does not take too (Colab, GPU, TPU)."""
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  for cell in notebook.cells:
    if cell.cell_type != 'code':
      continue
    source = '\n'.join(l for l in cell.source.split('\n') if not l.lstrip().startswith(('!', '%')))
    tree = ast.parse(source)
    aliases = {}  # Local name -> tod_jax module, from `import tod_jax...` and `from tod_jax...`.
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name.startswith('tod_jax'):
            importlib.import_module(alias.name)
            aliases[alias.asname or alias.name.split('.')[0]] = alias.asname and alias.name or 'tod_jax'
      elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('tod_jax'):
        module = importlib.import_module(node.module)
        for alias in node.names:
          assert hasattr(module, alias.name) or importlib.util.find_spec(
              f'{node.module}.{alias.name}'), f'{node.module}.{alias.name}'
          aliases[alias.asname or alias.name] = f'{node.module}.{alias.name}'
    for node in ast.walk(tree):
      chain = []
      while isinstance(node, ast.Attribute):
        chain.insert(0, node.attr)
        node = node.value
      if isinstance(node, ast.Name) and node.id in aliases and chain:
        obj = importlib.import_module(aliases[node.id]) if importlib.util.find_spec(
            aliases[node.id]) else None
        path = aliases[node.id]
        for name in chain[:2]:  # Module attributes; deeper ones are values' own.
          if obj is None or not hasattr(obj, name):
            obj = importlib.import_module(f'{path}.{name}')
          else:
            obj = getattr(obj, name)
          path = f'{path}.{name}'
