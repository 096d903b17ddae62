"""Every code block of the README and docs/ runs or is checked; the site builds strictly.

Blocks run by default: Python blocks are exec'd, shell blocks' tod_jax command lines run on
the CPU, shrunk by the overrides below (one seed, two strategies, 1 epoch, 2 cycles) in a
temporary directory, one per page, blocks in page order. A comment right before a block
changes that, and says why:

  <!-- docs-test: dry: REASON -->   the block's commands are only dry-checked (flags parse,
                                    config file loads, every --config override is a real
                                    field with a valid value, driver.validate_config passes)
  <!-- docs-test: skip: REASON -->  not a command (a directory layout) or run elsewhere

Every run command is dry-checked unshrunk as well. A shell line that is neither a tod_jax
command nor one of KNOWN_PROGRAMS fails the test: each new kind of command needs a decision.
"""

import configparser
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT, subprocess_env

MARKER = re.compile(r'<!--\s*docs-test:\s*(dry|skip):\s*(\S.*?)\s*-->')
BLOCK = re.compile(r'^( *)```(\w*)\n(.*?)^\1```', re.S | re.M)
# The run shrink: appended to every --config command, and flags cut to their first items.
SHRINK = ['--config.num_epochs=1', '--config.num_cycles=2', '--config.progress_bar=False',
          '--config.tensorboard=False']
CUT = {'--seeds': 1, '--strategies': 2}
# Python blocks: source replacements that shrink them (applied where the text occurs).
PYTHON_SHRINK = {'config.num_epochs = 40': 'config.num_epochs = 1',
                 'config = digits.get_config()': 'config = digits.get_config()\n'
                                                  'config.num_epochs, config.progress_bar = 1, False',
                 "('5steps', '1epoch', '5epochs')": "('5steps', '1epoch')"}
# Programs besides tod_jax's commands, and how they are checked.
KNOWN_PROGRAMS = {
    'pip': 'the extras named exist in setup.cfg',
    'pytest': 'the suite itself',
    'mkdocs': 'test_mkdocs_build_is_strict_and_clean',
    'benchmarks': 'the script exists and defines every flag given',
    'bash': 'the script exists',
    'tfds': 'external (a machine with network): only in dry blocks',
    'python -c': 'external (a machine with network): only in dry blocks',
}


def doc_files() -> list[str]:
  """README.md and docs/**/*.md, less docs/index.md (the README's copy: test_index_is_the_readme)."""
  pages = glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'), recursive=True)
  return ['README.md'] + sorted(os.path.relpath(p, ROOT) for p in pages
                                if os.path.relpath(p, ROOT) != os.path.join('docs', 'index.md'))


def blocks() -> list[dict]:
  """Every fenced block: file, line, language, text, and its marker (mode, reason)."""
  found = []
  for name in doc_files():
    with open(os.path.join(ROOT, name)) as f:
      text = f.read()
    for match in BLOCK.finditer(text):
      before = text[:match.start()].rstrip().split('\n')
      comments = []
      while before and before[-1].strip().startswith('<!--'):
        comments.append(before.pop())
      marker = MARKER.search(' '.join(comments))
      found.append(dict(file=name, line=text[:match.start()].count('\n') + 1,
                        language=match.group(2), text=match.group(3),
                        mode=marker.group(1) if marker else 'run',
                        reason=marker.group(2) if marker else ''))
  return found


def shell_lines(text: str) -> list[list[str]]:
  """The block's commands as argv lists: continuations and quoted newlines joined, comments
  dropped, `a && b` as two commands."""
  lines, pending = [], ''
  for line in re.sub(r'\\\n\s*', ' ', text).split('\n'):
    pending += line + '\n'
    try:
      tokens = shlex.split(pending, comments=True)
    except ValueError:  # An open quote: the command goes on on the next line.
      continue
    pending = ''
    command = []
    for token in tokens + ['&&']:
      if token == '&&':
        if command:
          lines.append(command)
        command = []
      else:
        command.append(token)
  assert not pending, f'unbalanced quotes in {text!r}'
  return lines


def _extras() -> set:
  parser = configparser.ConfigParser()
  parser.read(os.path.join(ROOT, 'setup.cfg'))
  return set(parser['options.extras_require'])


def _static_check(argv: list[str], mode: str, where: str) -> None:
  """Commands other than tod_jax's: checked as KNOWN_PROGRAMS says."""
  env = [a for a in argv if re.fullmatch(r'[A-Z_]+=\S*', a)]
  argv = argv[len(env):]
  program = argv[0]
  if program == 'pip':
    for extra in re.findall(r'\.\[([\w,]+)\]', ' '.join(argv)):
      assert set(extra.split(',')) <= _extras(), f'{where}: unknown extra in {argv}'
  elif program == 'python' and argv[1:3] == ['-m', 'pytest']:
    pass
  elif program == 'mkdocs':
    assert argv[1] in ('build', 'serve'), where
  elif program == 'bash':
    assert os.path.isfile(os.path.join(ROOT, argv[1])), f'{where}: no {argv[1]}'
  elif program == 'python' and argv[1].startswith('benchmarks/'):
    script = os.path.join(ROOT, argv[1])
    assert os.path.isfile(script), f'{where}: no {argv[1]}'
    with open(script) as f, open(os.path.join(ROOT, 'benchmarks', 'bench_utils.py')) as g:
      source = f.read() + g.read()  # absl's DEFINE_*('name' or argparse's '--name'.
    defined = set(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", source) + re.findall(r"'--(\w+)'", source))
    from tod_jax import configs  # pylint: disable=import-outside-toplevel
    for arg in argv[2:]:
      name = re.match(r'--(?:no)?([\w.]+)', arg).group(1)
      if name.startswith('config.'):
        assert name[len('config.'):] in configs.known_fields(), f'{where}: {arg}'
      else:
        assert name in defined, f'{where}: {argv[1]} has no flag --{name}'
  else:
    assert mode == 'dry' and (program == 'tfds' or argv[:2] == ['python', '-c']), (
        f'{where}: {shlex.join(argv)} is no tod_jax command; mark its block '
        '<!-- docs-test: dry: REASON --> if it is external, or check it here.')


def _shrunk(argv: list[str], summarized: set) -> list[str]:
  """argv cut to one seed and two strategies (all of them where a later `compare --summarize`
  reads the runs: `summarized` holds those workdirs), 1 epoch and 2 cycles."""
  out = []
  keep_strategies = any(a.removeprefix('--workdir=') in summarized for a in argv)
  for arg in argv:
    flag, _, value = arg.partition('=')
    if flag in CUT and not (flag == '--strategies' and keep_strategies):
      arg = f'{flag}={",".join(value.split(",")[:CUT[flag]])}'
    out.append(arg)
  if any(a.startswith('--config=') for a in argv):
    out += SHRINK
  if argv[0] == 'tod_jax.compare' and not any(a.startswith('--parallel') for a in argv):
    out.append('--parallel=1')
  return out


def _unwrap(argv: list[str]) -> list[list[str]]:
  """gcloud's `--command="cd DIR && python -m tod_jax..."` as the commands it runs there."""
  if argv[0] != 'gcloud':
    return [argv]
  inner = [a.removeprefix('--command=') for a in argv if a.startswith('--command=')]
  return [a for a in shell_lines(inner[0]) if a[0] != 'cd']


def plan(tmp_path) -> tuple[list[dict], list[tuple]]:
  """(tod_jax commands for tests/docs_commands.py, Python blocks to exec)."""
  commands, python = [], []
  for block in blocks():
    where = f'{block["file"]}:{block["line"]}'
    cwd = tmp_path / re.sub(r'\W', '_', block['file'])
    cwd.mkdir(exist_ok=True)
    if block['mode'] == 'skip':
      continue
    if block['language'] == 'python':
      assert block['mode'] == 'run', f'{where}: a Python block runs'
      python.append((where, block['text'], str(cwd)))
      continue
    assert block['language'] == 'bash', f'{where}: mark a non-shell block docs-test: skip'
    lines = shell_lines(block['text'])
    summarized = {a.removeprefix('--workdir=') for argv in lines if '--summarize' in argv
                  for a in argv if a.startswith('--workdir=')}
    for argv in [inner for argv in lines for inner in _unwrap(argv)]:
      program = [a for a in argv if not re.fullmatch(r'[A-Z_]+=\S*', a)]
      if program[:2] == ['python', '-m'] and program[2].startswith('tod_jax.'):
        args = [re.sub(r'^--config=configs/', f'--config={ROOT}/configs/', a) for a in program[2:]]
        commands.append(dict(argv=args, cwd=str(cwd), mode='dry', where=where))
        if block['mode'] == 'run':
          commands.append(dict(argv=_shrunk(args, summarized), cwd=str(cwd), mode='run', where=where))
      else:
        _static_check(argv, block['mode'], where)
  return commands, python


def test_markers_are_few_and_give_reasons():
  marked = [b for b in blocks() if b['mode'] != 'run']
  for block in marked:
    print(f'{block["file"]}:{block["line"]} {block["mode"]}: {block["reason"]}')
  assert all(len(b['reason']) > 10 for b in marked)
  assert len([b for b in marked if b['mode'] == 'dry']) <= 16  # Explicit and short.


def test_every_documented_command_runs_or_parses(tmp_path):
  commands, python = plan(tmp_path)
  assert any(c['mode'] == 'run' for c in commands) and python
  for where, code, cwd in python:  # Python blocks first: later shell blocks may use their files.
    for old, new in PYTHON_SHRINK.items():
      code = code.replace(old, new)
    os.chdir(cwd)
    try:
      exec(compile(code, where, 'exec'), {'__name__': 'docs'})  # pylint: disable=exec-used
    finally:
      os.chdir(ROOT)
  path = tmp_path / 'commands.json'
  path.write_text(json.dumps(commands))
  result = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'docs_commands.py'),
                           str(path)], env=subprocess_env(JAX_PLATFORMS='cpu'),
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
  print(result.stdout)  # One line per command with its seconds (pytest -s shows them).
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_index_is_the_readme():
  with open(os.path.join(ROOT, 'README.md')) as f, \
      open(os.path.join(ROOT, 'docs', 'index.md')) as g:
    assert g.read() == f.read().replace('](docs/', ']('), 'docs/index.md: copy README.md over'


def test_every_module_has_an_api_page():
  documented = set()
  for page in glob.glob(os.path.join(ROOT, 'docs', 'api', '*.md')):
    with open(page) as f:
      documented |= set(re.findall(r'^::: (\S+)', f.read(), re.M))
  modules = {'tod_jax'}
  for path in glob.glob(os.path.join(ROOT, 'tod_jax', '**', '*.py'), recursive=True):
    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.').removesuffix('.__init__')
    modules.add(name)
  assert modules - documented == set(), 'add these to a docs/api page'


def test_mkdocs_build_is_strict_and_clean(tmp_path):
  pytest.importorskip('mkdocstrings')
  result = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--site-dir',
                           str(tmp_path / 'site')], env=subprocess_env(NO_MKDOCS_2_WARNING='1'),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'WARNING' not in result.stderr, result.stderr
