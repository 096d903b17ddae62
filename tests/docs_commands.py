"""Runs or dry-checks the tod_jax command lines of the docs' code blocks, in one process.

`python tests/docs_commands.py COMMANDS.json`: a list of {"argv", "cwd", "mode"}, where argv
is `["tod_jax.<module>", *flags]` and mode is "run" (the command runs, shrunk by the test) or
"dry" (its flags parse, its config file loads, every --config override is a real field with a
valid value and driver.validate_config passes; nothing runs). The commands run as their
`python -m` lines would: the module's define_flags, cli.parse_flags, then main. Exits 1 at the
first command that fails, naming it, with its one-line error on stderr.
"""

import importlib
import json
import os
import shlex
import sys
import time

from absl import flags

from tod_jax import cli, driver

FLAGS = flags.FLAGS


def _check(argv: list, mode: str) -> None:
  """Defines the command's flags, parses argv, then validates (dry) or runs it."""
  name = argv[0].removeprefix('tod_jax.')
  module = importlib.import_module(f'tod_jax.{name}')
  before = set(FLAGS)
  sys.argv = [f'{name}.py', *argv[1:]]  # config_flags defines --config.<field> from sys.argv.
  module.define_flags()
  child = None
  try:
    args = cli.parse_flags(sys.argv)
    if name == 'launch':  # Its processes' command line (after `--`) is checked the same way.
      child = [FLAGS.module, *args[1:]]
      return
    config = FLAGS[cli.CONFIG].value if cli.CONFIG in FLAGS else None
    if config is not None:
      if mode == 'dry' and config.init_checkpoint and not os.path.exists(config.init_checkpoint):
        config = _with(config, init_checkpoint='')  # A file the block downloads first.
      driver.validate_config(config)
      for strategy in (FLAGS.strategies if name == 'compare' else []):
        driver.validate_config(_with(config, strategy=strategy))
    if mode == 'run':
      cli.setup_logging()
      module.main(args)
  finally:
    _forget(before)
    if child is not None:
      _check(child, 'dry')


def _with(config, **changes):
  """A copy of a locked config with `changes`."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.update(changes)
  return config


def _forget(before: set) -> None:
  """Removes the flags a command defined, so the next command defines its own."""
  for flag in set(FLAGS) - before:
    delattr(FLAGS, flag)
  FLAGS.unparse_flags()


def main() -> None:
  with open(sys.argv[1]) as f:
    commands = json.load(f)
  for command in commands:
    os.chdir(command['cwd'])
    start = time.perf_counter()
    line = shlex.join(['python', '-m', *command['argv']])
    try:
      _check(command['argv'], command['mode'])
    except SystemExit as e:  # cli.fail: the one line is on stderr already.
      print(f'FAILED ({command["mode"]}): {line}', flush=True)
      sys.exit(e.code or 1)
    except Exception as e:  # pylint: disable=broad-except
      print(f'FAILED ({command["mode"]}): {line}: {type(e).__name__}: {e}', flush=True)
      raise
    print(f'ok {command["mode"]} {time.perf_counter() - start:.1f}s: {line}', flush=True)


if __name__ == '__main__':
  main()
