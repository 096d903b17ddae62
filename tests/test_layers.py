"""Data flows one way: no module of tod_jax imports one above it in the flow, or itself back.

config -> data -> state -> train -> score -> select -> cycle -> checkpoint -> run ->
command lines. Every import counts, those inside functions too.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'tod_jax')

# Layer of each module (a module may import its own layer and those below).
LAYERS = {
    0: ('errors', 'interrupts', 'precision', 'registry', 'files', 'caches', 'metric_writers',
        'tod', 'metrics', 'compilation_cache', 'profiling',
        'ranking', 'uncertainty', 'conv', 'badge', 'checkpointing', 'configs',
        'configs.default', 'configs.segmentation', 'paired'),
    1: ('devices', 'host_pool', 'sharded_map'),
    2: ('dataset', 'datasets', 'image_folder', 'synthetic_seg', 'augment', 'batches',
        'label_noise', 'label_sources'),
    3: ('drn', 'models', 'initializers', 'loss_forms', 'loss_prediction', 'train_state',
        'pretrained', 'snapshots'),
    4: ('train', 'vaal'),
    5: ('scoring', 'kept_outputs'),
    6: ('strategies',) + tuple(f'strategies.{name}' for name in (
        'badge', 'cod', 'coreset', 'emaod', 'll4al', 'mc_dropout', 'random_sampling',
        'uncertainty_sampling', 'vaal')),
    7: ('cycle',),
    8: ('rundir',),
    9: ('driver', 'candidates', 'model_selection', 'run_rows'),
    10: ('cli', 'main', 'compare', 'select', 'query', 'label', 'launch', 'analyze', 'trials', ''),
}
LAYER = {name: layer for layer, names in LAYERS.items() for name in names}


def _modules() -> dict[str, str]:
  """{'strategies.cod': path, ...} of every module in the package ('' for __init__)."""
  out = {}
  for base, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(base, f), PACKAGE)[:-3].replace(os.sep, '.')
        out[rel.removesuffix('__init__').rstrip('.')] = os.path.join(base, f)
  return out


def _imports(path: str, modules: set[str]) -> set[str]:
  """The tod_jax modules (of `modules`; '' is the package) that `path` imports, anywhere."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] == 'tod_jax':
      module = node.module.removeprefix('tod_jax').lstrip('.')
      for alias in node.names:  # `from tod_jax.a import b`: module a.b if there is one, else a.
        name = f'{module}.{alias.name}'.lstrip('.')
        found.add(name if name in modules else module)
    elif isinstance(node, ast.Import):
      found |= {a.name.removeprefix('tod_jax').lstrip('.') for a in node.names
                if a.name.split('.')[0] == 'tod_jax'}
  return found & modules


def test_every_module_has_a_layer():
  assert set(_modules()) == set(LAYER), set(_modules()) ^ set(LAYER)


def test_no_module_imports_one_above_it():
  modules = _modules()
  upward = []
  for name, path in modules.items():
    for imported in _imports(path, set(modules)):
      if imported != name and LAYER[imported] > LAYER[name]:
        upward.append(f'{name} (layer {LAYER[name]}) imports {imported} ({LAYER[imported]})')
  # The strategies package imports its own plug-in modules to register them.
  upward = [u for u in upward if not u.startswith('strategies (')]
  assert not upward, '\n'.join(upward)


def test_no_import_cycles():
  modules = _modules()
  graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
  graph['strategies'] = {m for m in graph['strategies'] if not m.startswith('strategies.')}
  state = {}

  def visit(node, stack):
    state[node] = 'open'
    for nxt in graph[node]:
      if state.get(nxt) == 'open':
        raise AssertionError('import cycle: ' + ' -> '.join(stack + [node, nxt]))
      if nxt not in state:
        visit(nxt, stack + [node])
    state[node] = 'done'

  for node in graph:
    if node not in state:
      visit(node, [])
