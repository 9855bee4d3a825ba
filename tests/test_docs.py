"""The user docs (README.md, docs/*.md, launch/README.md) name only things that exist.

For every doc: each repo path it names (``seqgen_jax/...``, ``experiments/...``, ``tests/...``,
``launch/...``, ``docs/...``, ``results/...``; globs and ``{a,b}`` lists expanded) exists; each
backticked file name (``state.py``, ``nn/unet.py``) is a file somewhere in the repository; each
``python -m`` module and dotted ``seqgen_jax.x.y`` name resolves; each
``--config=experiments/configs/X.py[:args]`` (and each backticked ``X.py:args`` of a config)
names a config whose arguments load, with every ``--config.<field>`` override of that command a
field of that config; any other ``--config.<field>`` / ``--set=<field>`` is a field of some
config; links to ``#anchors`` find their heading. The README's layout tree matches the tree,
and no doc or source file refers to issue numbers or work sessions ("stop N"). The checker is
shown to report each kind of problem on a synthetic doc.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import re
from pathlib import Path

import pytest
from conftest import REPO

from seqgen_jax.errors import ConfigError

DOCS = sorted([REPO / "README.md", REPO / "launch" / "README.md",
               *(REPO / "docs").glob("*.md")])
PATH_ROOTS = ("seqgen_jax", "experiments", "tests", "launch", "docs", "results")
CONFIG_DIR = REPO / "experiments" / "configs"

# A path segment: word characters, dots, dashes, globs, <placeholders>, {a,b} lists.
_SEG = r"(?:[\w.*<>-]|\{[\w.,-]+\})+"
PATH_RE = re.compile(rf"(?<![\w./~$<>:-])((?:{'|'.join(PATH_ROOTS)})/(?:{_SEG}/)*(?:{_SEG})?)")
CONFIG_RE = re.compile(r"--config=experiments/configs/([\w/]+\.py)(?::([\w=,|.-]+))?")
OVERRIDE_RE = re.compile(r"--config\.([\w.]+)=")
SET_RE = re.compile(r"--set=([\w.]+)=")
MODULE_RE = re.compile(r"python3? -m ((?:seqgen_jax|experiments)\b[\w.]*)")
DOTTED_RE = re.compile(r"`((?:seqgen_jax|experiments)\.[\w.]+)(?:\([^`]*\))?`")
CODE_SPAN_RE = re.compile(r"`([^`\n]+)`")
BARE_FILE_RE = re.compile(r"^([\w./-]+\.(?:py|sh))(?::([\w=,|.-]+))?$")
# References to the project's own issue tracker or work log, which mean nothing to a reader.
FORBIDDEN = [re.compile(p, re.IGNORECASE) for p in (
    r"\bstops?\s+\d+\b", r"\bissues?\s*#\s*\d+", r"\bissue\s+\d+\b", r"\bthe issue'?s?\b",
    r"(?<![\w&])#\d+\b")]


# ------------------------------------------------------------------------------ the checker


def _repo_files() -> list[str]:
  """Every file under the directories docs may name, relative to the repository."""
  out = [p.name for p in REPO.iterdir() if p.is_file()]
  for root in PATH_ROOTS:
    if (REPO / root).is_dir():
      out += [str(p.relative_to(REPO)) for p in (REPO / root).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts]
  return out


REPO_FILES = _repo_files()


def _expand_braces(path: str) -> list[str]:
  m = re.search(r"\{([^{}]*)\}", path)
  if not m:
    return [path]
  return [q for alt in m.group(1).split(",")
          for q in _expand_braces(path[:m.start()] + alt + path[m.end():])]


def _expand_args(arg: str | None) -> list[str | None]:
  """``model=lstm|transformer,cpu`` -> every combination the ``|`` alternatives spell."""
  if not arg:
    return [arg]
  items = []
  for item in arg.split(","):
    key, eq, values = item.partition("=")
    items.append([f"{key}={v}" for v in values.split("|")] if eq else [item])
  return [",".join(combo) for combo in itertools.product(*items)]


def _config_module(rel: str):
  return importlib.import_module("experiments.configs." + rel[:-3].replace("/", "."))


@functools.cache
def load_config(rel: str, arg: str | None):
  """The config ``experiments/configs/<rel>`` with ``arg``, or the reason it does not load."""
  if not (CONFIG_DIR / rel).is_file() or rel in ("common.py", "__init__.py"):
    return f"no config file experiments/configs/{rel}"
  try:
    return _config_module(rel).get_config(arg)
  except ConfigError as e:
    return f"experiments/configs/{rel}{':' + arg if arg else ''}: {e}"


def _has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not (hasattr(node, "keys") and part in node.keys()):
      return False
    node = node[part]
  return True


def _flat_keys(c, prefix: str = "") -> set[str]:
  out = set()
  for k in c.keys():
    if hasattr(c[k], "keys") and hasattr(c[k], "lock"):
      out |= _flat_keys(c[k], f"{prefix}{k}.")
    out.add(f"{prefix}{k}")
  return out


@functools.cache
def every_field() -> frozenset[str]:
  """Every field (and section) of every config file under every documented argument."""
  keys: set[str] = set()
  for path in CONFIG_DIR.rglob("*.py"):
    rel = str(path.relative_to(CONFIG_DIR))
    if path.name in ("__init__.py", "common.py"):
      continue
    for arg in _config_module(rel).ARGS.documented():
      keys |= _flat_keys(load_config(rel, arg or None))
  return frozenset(keys)


def _check_path(path: str) -> str | None:
  path = path.rstrip(".")
  if "<" in path or ">" in path or "..." in path:
    return None  # a placeholder such as <workdir>
  for p in _expand_braces(path):
    if "*" in p:
      if not list(REPO.glob(p)):
        return f"no file matches {p}"
    elif not (REPO / p).exists():
      return f"no such path: {p}"
  return None


def _check_module(name: str) -> str | None:
  """``experiments.bench.mfu`` or ``seqgen_jax.tasks.build_task``: a module, or an attribute of
  one that its source defines or imports."""
  node = REPO
  parts = name.rstrip(".").split(".")
  for i, part in enumerate(parts):
    if (node / part).is_dir() and (node / part / "__init__.py").exists():
      node = node / part
    elif (node / f"{part}.py").is_file():
      rest = parts[i + 1:]
      text = (node / f"{part}.py").read_text()
      if rest and not re.search(rf"\b{re.escape(rest[0])}\b", text):
        return f"{'.'.join(parts[:i + 1])} has no {rest[0]}"
      return None
    elif i >= 1:  # an attribute of a package: its __init__.py must name it
      if re.search(rf"\b{re.escape(part)}\b", (node / "__init__.py").read_text()):
        return None
      return f"no module or attribute {'.'.join(parts[:i + 1])}"
    else:
      return f"no module {name}"
  return None


def _logical_lines(text: str) -> list[str]:
  """Lines with backslash continuations joined, so a command is one line."""
  return re.sub(r"\\\n\s*", " ", text).splitlines()


def _check_command_line(line: str) -> list[str]:
  """Config files, arguments and overrides of the commands on one logical line."""
  problems = []
  configs = list(CONFIG_RE.finditer(line))
  for m in OVERRIDE_RE.finditer(line):
    owner = [c for c in configs if c.start() < m.start()]
    field = m.group(1)
    if owner:
      rel, arg = owner[-1].group(1), owner[-1].group(2)
      for a in _expand_args(arg):
        c = load_config(rel, a)
        if not isinstance(c, str) and not _has_field(c, field):
          problems.append(f"--config.{field}: no such field in experiments/configs/{rel}"
                          + (f":{a}" if a else ""))
    elif field not in every_field():
      problems.append(f"--config.{field}: no config has this field")
  for m in SET_RE.finditer(line):
    if m.group(1) not in every_field():
      problems.append(f"--set={m.group(1)}: no config has this field")
  for m in configs:
    for a in _expand_args(m.group(2)):
      c = load_config(m.group(1), a)
      if isinstance(c, str):
        problems.append(c)
  return problems


def _check_code_span(span: str) -> list[str]:
  """A backticked file name: it exists somewhere; with ``:args``, it is a config that takes them.
  (Paths from the repository root are checked by PATH_RE.)"""
  m = BARE_FILE_RE.match(span.strip())
  if not m or span.startswith(("/", "~", "<", ".")):
    return []
  name, arg = m.groups()
  rooted = name.split("/")[0] in PATH_ROOTS
  if arg is not None:
    rel = name.removeprefix("experiments/configs/")
    if not (CONFIG_DIR / rel).is_file():
      return [f"`{span}`: arguments given to a file that is not a config"]
    return [c for a in _expand_args(arg) if isinstance(c := load_config(rel, a), str)]
  if not rooted and not any(f == name or f.endswith("/" + name) for f in REPO_FILES):
    return [f"`{span}`: no such file in the repository"]
  return []


def forbidden_references(text: str) -> list[str]:
  """Mentions of issue numbers or work sessions."""
  return [f"refers to '{m.group(0)}'" for rx in FORBIDDEN for m in rx.finditer(text)]


def _without_output_blocks(text: str) -> str:
  """The text less its ```text blocks: printed output (error messages quoting bad input), not
  commands to check."""
  return re.sub(r"^```text\n.*?^```$", "", text, flags=re.S | re.M)


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchor_problems(text: str) -> list[str]:
  """Links to ``#anchors`` of the same doc that no heading makes."""
  slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
  return [f"no heading for the link #{a}" for a in re.findall(r"\]\(#([\w-]+)\)", text)
          if a not in slugs]


def _without_outputs(text: str) -> str:
  """The text less what commands create (``--out=``, ``--workdir=``, ``> file``): those paths
  need not exist yet."""
  return re.sub(r"--(?:out|workdir)=\S+|\s>\s+\S+", " ", text)


def table_pipe_problems(text: str) -> list[str]:
  """A ``|`` inside a code span of a table row ends the cell on GitHub unless written ``\\|``."""
  rows = [line for line in _without_fences(text).splitlines() if line.startswith("|")]
  return [f"unescaped | in a table cell: `{span}`" for row in rows
          for span in CODE_SPAN_RE.findall(row) if re.search(r"(?<!\\)\|", span)]


def _without_fences(text: str) -> str:
  return re.sub(r"^```.*?^```$", "", text, flags=re.S | re.M)


def problems(text: str) -> list[str]:
  """Everything wrong with one doc's text, one line each."""
  out = forbidden_references(text) + anchor_problems(text) + table_pipe_problems(text)
  text = _without_output_blocks(text).replace("\\|", "|")
  for m in PATH_RE.finditer(_without_outputs(text)):
    if (p := _check_path(m.group(1))) is not None:
      out.append(p)
  for line in _logical_lines(text):
    out += _check_command_line(line)
  for m in MODULE_RE.finditer(text):
    if (p := _check_module(m.group(1))) is not None:
      out.append(f"python -m {m.group(1)}: {p}")
  for m in DOTTED_RE.finditer(text):
    if (p := _check_module(m.group(1))) is not None:
      out.append(f"`{m.group(1)}`: {p}")
  for m in CODE_SPAN_RE.finditer(text):
    out += _check_code_span(m.group(1))
  return sorted(set(out))


def layout_problems(readme: str) -> list[str]:
  """The README's layout tree (between the layout markers) against the repository."""
  m = re.search(r"<!-- layout:begin -->\s*```\n(.*?)```\s*<!-- layout:end -->", readme, re.S)
  if not m:
    return ["no layout tree between <!-- layout:begin --> and <!-- layout:end -->"]
  out, stack, listed = [], [], set()
  for line in m.group(1).splitlines():
    indent = len(line) - len(line.lstrip())
    if not line.strip() or indent >= 16:  # blank, or a description wrapped onto its own line
      continue
    depth = indent // 2
    name = line.split()[0]
    stack = stack[:depth] + [name.rstrip("/")]
    path = "/".join(stack)
    listed.add(path)
    if not (REPO / path).exists() or name.endswith("/") != (REPO / path).is_dir():
      out.append(f"layout: {path}{'/' if name.endswith('/') else ''} is not in the repository")
  # Every package directory, and every top-level directory of code or docs, is listed.
  expected = {p.name for p in REPO.iterdir() if p.is_dir() and p.name in PATH_ROOTS}
  for pkg in ("seqgen_jax", "experiments"):
    expected |= {str(p.parent.relative_to(REPO)) for p in (REPO / pkg).glob("*/__init__.py")}
  expected |= {str(p.parent.relative_to(REPO))
               for p in (REPO / "experiments" / "configs").glob("*/__init__.py")}
  out += [f"layout: {d}/ is missing from the tree" for d in sorted(expected - listed)]
  return out


# ------------------------------------------------------------------------------ the real docs


def test_the_docs_are_found():
  names = {str(p.relative_to(REPO)) for p in DOCS}
  assert {"README.md", "launch/README.md", "docs/results.md"} <= names, names
  assert len(names) >= 10


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_module_config_and_field_a_doc_names_exists(doc):
  assert problems(doc.read_text()) == []


def test_readme_layout_matches_the_tree():
  assert layout_problems((REPO / "README.md").read_text()) == []


def test_readme_marks_the_showdown_summary_and_shows_the_test_command():
  readme = (REPO / "README.md").read_text()
  begin, end = "<!-- showdown-summary:begin -->", "<!-- showdown-summary:end -->"
  assert readme.count(begin) == 1 and readme.count(end) == 1
  summary = readme[readme.index(begin):readme.index(end)]
  assert "| model |" in summary and "experiments/configs/showdown/quick.py" in summary
  assert 'pip install -e ".[test]" && python -m pytest' in readme
  assert len(readme.splitlines()) <= 300  # a five-minute read


def test_no_source_file_refers_to_issue_numbers_or_sessions():
  sources = [p for root in ("seqgen_jax", "experiments", "tests", "launch")
             for p in (REPO / root).rglob("*") if p.suffix in (".py", ".sh")
             and p.name != Path(__file__).name]  # this file quotes the patterns it looks for
  found = [f"{p.relative_to(REPO)}: {r}" for p in sources
           for r in forbidden_references(p.read_text())]
  assert found == []


# ------------------------------------------------------------------------------ the checker fails


BAD_DOC = """
See `seqgen_jax/nn/no_such_model.py` and seqgen_jax/tasks/missing/ and `tests/test_nothing_*.py`.
    python -m experiments.main --config=experiments/configs/mnist_vit.py --workdir=/tmp/x
    python -m experiments.main --config=experiments/configs/copy.py:model=transformer
    python -m experiments.main --config=experiments/configs/copy.py:runlocal \\
        --workdir=/tmp/x --config.train.num_stpes=3
    python -m experiments.no_such_entrypoint --flag
    python -m experiments.diffusion_eval --workdir=/tmp/x --set=eval.fid_num_smaples=10
The overrides `--config.optimizer.lrr=1e-3`; the config `sst2.py:model=gru`; the file `gone.py`;
`seqgen_jax.registry.NoSuchThing`, `experiments/configs/dit.py:dataset=svhn`.
Measured in stop 12, as the issue's goals say; see [the table](#no-such-heading).

| config | arguments |
|---|---|
| `copy.py` | `model=gpt|mingru` |
"""

GOOD_DOC = """
## Bits/dim, FID (10k)
[see](#bitsdim-fid-10k)
```text
error: --config=experiments/configs/copy.py:fast: unknown config argument 'fast'
```
`seqgen_jax/nn/gpt.py`, tests/test_docs.py, `tests/test_diffusion_*.py`, docs/ and
`tests/test_task_{classify,mlm}.py`; placeholders `<workdir>/samples/x.png`, /tmp/seqgen/copy,
/work/runs/a, ~/seqgen_data, gs://b/r; `state.py`, `nn/unet.py`, `dit.py:cpu,dataset=cifar10`,
`ddpm_unet.py:dataset=mnist|fashion_mnist`; `seqgen_jax.registry.MODELS`; `--config.model.name=x`.

| config | arguments |
|---|---|
| `copy.py:model=gpt\\|mingru` | `model=gpt\\|mingru` |
    python -m experiments.main --config=experiments/configs/copy.py:model=mingru,runlocal \\
        --workdir=/tmp/x --config.train.num_steps=3
    python -m experiments.showdown --config=experiments/configs/showdown/quick.py:task=copy \\
        --config.seeds=1 --out=results/showdown/copy
    python -m experiments.bench.tables /tmp/accel > docs/speed.md
"""


def test_the_checker_reports_each_kind_of_problem():
  found = "\n".join(problems(BAD_DOC))
  for expected in ["no such path: seqgen_jax/nn/no_such_model.py",
                   "no such path: seqgen_jax/tasks/missing/",
                   "no file matches tests/test_nothing_*.py",
                   "no config file experiments/configs/mnist_vit.py",
                   "copy.py:model=transformer: config argument model=transformer",
                   "--config.train.num_stpes: no such field in experiments/configs/copy.py",
                   "python -m experiments.no_such_entrypoint: no module",
                   "--set=eval.fid_num_smaples: no config has this field",
                   "--config.optimizer.lrr: no config has this field",
                   "sst2.py:model=gru: config argument model=gru",
                   "`gone.py`: no such file",
                   "seqgen_jax.registry has no NoSuchThing",
                   "dit.py:dataset=svhn: config argument dataset=svhn",
                   "refers to 'stop 12'", "refers to 'the issue's'",
                   "no heading for the link #no-such-heading",
                   "unescaped | in a table cell: `model=gpt|mingru`"]:
    assert expected in found, (expected, found)


def test_the_checker_accepts_what_exists_and_skips_placeholders():
  assert problems(GOOD_DOC) == []


def test_the_layout_check_reports_a_missing_and_an_unlisted_entry():
  readme = (REPO / "README.md").read_text()
  broken = readme.replace("  nn/ ", "  nnn/ ", 1)
  found = layout_problems(broken)
  assert "layout: seqgen_jax/nnn/ is not in the repository" in found
  assert "layout: seqgen_jax/nn/ is missing from the tree" in found
