"""What every entrypoint under experiments/ shares: one-line errors for bad flags, a quiet console.

``run(main)`` is ``absl.app.run(main)`` except that

* bad input on the command line -- an unknown flag, a flag value of the wrong type, a config file
  that does not exist, an unknown ``:arg``, an override of a config field that does not exist or
  with a value of the wrong type -- and a SeqgenError or ``app.UsageError`` raised by ``main``
  print one line, ``error: <what was wrong>; <what is allowed>``, to stderr and exit with status 2
  (anything else, e.g. a bug in a config file, still shows its traceback);
* INFO logs of libraries (orbax's checkpoint manager, JAX's "Unable to initialize backend", ...)
  are dropped unless ``--verbosity=1`` (absl's flag) asks for them; this project's own INFO lines
  (run summary, progress, eval and samples) and every warning still show.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging as pylogging
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from absl import app, flags, logging
from ml_collections import config_dict

import experiments
import seqgen_jax
from seqgen_jax.errors import ConfigError, SeqgenError

FLAGS = flags.FLAGS
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where this project's code lives (an installed seqgen_jax need not sit next to experiments/).
_OWN_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                  for m in (seqgen_jax, experiments))
# absl's own flags, named in the unknown-flag message after the entrypoint's.
_ABSL_FLAGS = ("verbosity", "helpfull")


def run(main: Callable[[list[str]], Any]) -> None:
  """``app.run(main)`` with one-line errors for bad input and library INFO logs off."""

  def wrapped(argv: list[str]) -> Any:
    if not verbose():
      logging.get_absl_handler().addFilter(_OwnInfoOnly())
    try:
      return main(argv)
    except (SeqgenError, app.UsageError) as e:
      fail(str(e))

  app.run(wrapped, flags_parser=parse_flags)


def verbose() -> bool:
  """Whether ``--verbosity`` asks for more than the default (INFO) level."""
  return FLAGS["verbosity"].value >= 1


def fail(message: str) -> NoReturn:
  """Prints ``error: <message>`` (one line) to stderr and exits with status 2."""
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(2)


class _OwnInfoOnly(pylogging.Filter):
  """Passes warnings and errors, and INFO lines logged from this project's own files."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.levelno >= pylogging.WARNING:
      return True
    return os.path.abspath(record.pathname).startswith(_OWN_DIRS)


# ------------------------------------------------------------------------------ flag parsing


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; bad input exits through ``fail`` with a one-line message."""
  try:
    for name, value in _config_flag_values(argv):
      _check_config_file(name, value)
    return FLAGS(argv)
  except SeqgenError as e:
    fail(str(e))
  except flags.UnrecognizedFlagError as e:
    fail(_unknown_flag(e.flagname))
  except Exception as e:  # noqa: BLE001  (told apart below; anything not explained re-raises)
    message = _explain_config_error(argv)
    if message is None and isinstance(e, flags.Error):
      message = str(e).strip().splitlines()[0]
    if message is None:
      raise
    fail(message)


def _is_config_file_flag(name: str) -> bool:
  return FLAGS[name].flag_type() == "config object"  # config_flags.DEFINE_config_file


def _config_flags() -> list[str]:
  return [name for name in FLAGS if _is_config_file_flag(name)]


def _config_flag_values(argv: list[str]) -> list[tuple[str, str]]:
  """(flag name, value) of each config-file flag on the command line (``--config=path:arg``)."""
  out = []
  for name in _config_flags():
    for i, item in enumerate(argv[1:], 1):
      m = re.fullmatch(rf"--?{re.escape(name)}(=(.*))?", item, re.DOTALL)
      if m:
        value = m.group(2) if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else "")
        out.append((name, value))
  return out


def _overrides(argv: list[str], name: str) -> list[tuple[str, str | None]]:
  """(field path, raw value or None) of each ``--name.a.b=value`` on the command line."""
  out = []
  for i, item in enumerate(argv[1:], 1):
    m = re.fullmatch(rf"--?(no)?{re.escape(name)}\.([^=]+)(=(.*))?", item, re.DOTALL)
    if m:
      raw = m.group(4) if m.group(3) else None
      if raw is None and not m.group(1) and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        raw = argv[i + 1]
      out.append((m.group(2), raw))
  return out


def _check_config_file(name: str, value: str) -> None:
  """A missing config file: say which files that folder has (absl would defer the error)."""
  path = value.split(":", 1)[0]
  if os.path.isfile(path):
    return
  folder = os.path.dirname(path) or "."
  if os.path.isdir(folder):
    found = sorted(f for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")
                   and f != "common.py")
    found += sorted(f"{d}/" for d in os.listdir(folder)
                    if os.path.isfile(os.path.join(folder, d, "__init__.py")))
    allowed = f"the config files in {folder}/ are: {', '.join(found) or 'none'}"
  else:
    allowed = f"no folder {folder}; the config files are in experiments/configs/"
  raise ConfigError(f"--{name}={value}: no config file {path}; {allowed}")


def _load_config(path: str, arg: str | None):
  """The config that ``--config=path[:arg]`` gives, loaded as config_flags does."""
  spec = importlib.util.spec_from_file_location("_seqgen_cli_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def _explain_config_error(argv: list[str]) -> str | None:
  """What is wrong with the config flags on the command line, or None if nothing is."""
  for name, value in _config_flag_values(argv):
    path, _, arg = value.partition(":")
    try:
      config = _load_config(path, arg if ":" in value else None)
    except SeqgenError as e:
      return f"--{name}={value}: {e}"
    for field, raw in _overrides(argv, name):
      message = describe_missing_field(config, field)
      if message is None:
        message = _wrong_type(config, field, raw)
      if message is not None:
        return f"--{name}.{field}{'' if raw is None else '=' + raw}: {message} (in {value})"
  return None


def describe_missing_field(config: Any, field: str) -> str | None:
  """None if ``config`` has the dotted ``field``; else a message naming the fields it has."""
  node, done = config, []
  for key in field.split("."):
    if not isinstance(node, config_dict.ConfigDict):
      return f"{'.'.join(done)} is a value, not a section with fields"
    if key not in node:
      where = ".".join(done)
      close = difflib.get_close_matches(key, list(node.keys()), n=2, cutoff=0.7)
      hint = f"did you mean {' or '.join('.'.join([*done, c]) for c in close)}? " if close else ""
      section = f"{where} has" if where else "the config has"
      return (f"no field {'.'.join([*done, key])}; {hint}{section}: "
              f"{', '.join(sorted(node.keys()))}")
    node, done = node[key], [*done, key]
  return None


_TYPE_PARSERS = {int: ("an integer", flags.IntegerParser()),
                 float: ("a number", flags.FloatParser()),
                 bool: ("true or false", flags.BooleanParser())}


def _wrong_type(config: Any, field: str, raw: str | None) -> str | None:
  """A message if ``raw`` does not parse as the type of ``config.field``, else None."""
  if raw is None:
    return None
  *section, leaf = field.split(".")
  node = config
  for key in section:
    node = node[key]
  field_type = node.get_type(leaf)
  if field_type not in _TYPE_PARSERS:
    return None
  what, parser = _TYPE_PARSERS[field_type]
  try:
    parser.parse(raw)
  except ValueError:
    return f"{field} takes {what} ({field_type.__name__}), not '{raw}'; it is {node[leaf]!r}"
  return None


def _unknown_flag(name: str) -> str:
  """Names the entrypoint's own flags (and the closest to ``name``)."""
  module = os.path.abspath(sys.argv[0])
  own = sorted({f.name for mod, fl in FLAGS.flags_by_module_dict().items()
                if os.path.abspath(mod) == module or mod == "__main__" for f in fl})
  shown = [f"--{n}" + ("[.<field>]" if _is_config_file_flag(n) else "")
           for n in own]
  close = difflib.get_close_matches(name, own + list(_ABSL_FLAGS), n=1, cutoff=0.6)
  hint = f"did you mean --{close[0]}? " if close else ""
  program = os.path.relpath(module, _REPO)[:-3].replace(os.sep, ".")
  return (f"unknown flag --{name}; {hint}{program} takes {', '.join(shown)} "
          f"(and absl's --verbosity, --helpfull)")
