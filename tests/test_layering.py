"""The dependency rule of seqgen_jax, checked on every import statement of the code base.

Every module belongs to one layer and may import only the layers ``ALLOWED`` lists for it:

  base        seqgen_jax/__init__, errors, registry, dtypes, fileio, caption_ids: base only
  nn          models                                   base, nn
  data        datasets, tokenizers, batching           base, data
  diffusion   schedules, samplers, SDEs, likelihood    base, diffusion
  decoding    autoregressive sampling, generate()      base, decoding
  convert     weight import from Hugging Face          base, nn, convert
  train       the training library, the Task protocol  base, data, train
  eval        FID, bits/dim                            base, nn, data, diffusion, eval
  tasks       one file per task                        everything but experiments
  experiments entrypoints, configs, benchmarks         everything

So models never import data, training or tasks; the training loop never imports a task (the
entrypoint hands it one); evaluation never imports a task. The walk is over the syntax tree of
every .py file under seqgen_jax/ and experiments/: imports inside functions count, and so do
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name. A module under
seqgen_jax/ that is in no layer, or an import of a seqgen_jax module that does not exist, is an
error too.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOTS = ("seqgen_jax", "experiments")
BASE = {"seqgen_jax", "seqgen_jax.errors", "seqgen_jax.registry", "seqgen_jax.dtypes",
        "seqgen_jax.fileio", "seqgen_jax.caption_ids"}
PACKAGE_LAYERS = {"seqgen_jax.nn": "nn", "seqgen_jax.data": "data",
                  "seqgen_jax.diffusion": "diffusion", "seqgen_jax.decoding": "decoding",
                  "seqgen_jax.generate": "decoding",
                  "seqgen_jax.convert": "convert", "seqgen_jax.train": "train",
                  "seqgen_jax.eval": "eval", "seqgen_jax.tasks": "tasks",
                  "experiments": "experiments"}
LIBRARIES = {"base", "nn", "data", "diffusion", "decoding", "convert", "train", "eval"}
ALLOWED = {
    "base": {"base"},
    "nn": {"base", "nn"},
    "data": {"base", "data"},
    "diffusion": {"base", "diffusion"},
    "decoding": {"base", "decoding"},
    "convert": {"base", "nn", "convert"},
    "train": {"base", "data", "train"},
    "eval": {"base", "nn", "data", "diffusion", "eval"},
    "tasks": LIBRARIES | {"tasks"},
    "experiments": LIBRARIES | {"tasks", "experiments"},
}


@dataclasses.dataclass(frozen=True)
class Arrow:
  """One import that breaks the rule: ``path:line`` imports ``target`` from ``source``."""

  path: str
  line: int
  source: str
  target: str
  why: str

  def __str__(self) -> str:
    return f"{self.path}:{self.line}: {self.source} -> {self.target} ({self.why})"


def layer_of(module: str) -> str | None:
  """The layer of a dotted module name; None for a module in no layer."""
  if module in BASE:
    return "base"
  for prefix, layer in PACKAGE_LAYERS.items():
    if module == prefix or module.startswith(prefix + "."):
      return layer
  return None


def module_name(path: pathlib.Path) -> str:
  """seqgen_jax/nn/rnn.py -> seqgen_jax.nn.rnn; a package's __init__.py -> the package."""
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def project_files() -> dict[str, pathlib.Path]:
  """Every module of the code base: dotted name -> file."""
  return {module_name(p): p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))}


def _is_ours(module: str) -> bool:
  return any(module == r or module.startswith(r + ".") for r in ROOTS)


def imports(source: str, module: str, is_package: bool, known: set[str]
            ) -> list[tuple[int, str]]:
  """(line, imported module) for every import of a project module in ``source``.

  ``from a.b import c`` names the module a.b.c when that is a module, else a.b; relative
  imports are resolved against ``module``.
  """
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
      for a in node.names:
        sub = f"{base}.{a.name}"
        found.append((node.lineno, sub if sub in known else base))
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and (getattr(node.func, "attr", None) == "import_module"
               or getattr(node.func, "id", None) in ("import_module", "__import__"))):
      found.append((node.lineno, node.args[0].value))
  return sorted({(line, m) for line, m in found if _is_ours(m)})  # one per line and module


def wrong_arrows(path: str, source: str, module: str, known: set[str], *,
                 is_package: bool = False) -> list[Arrow]:
  """The imports of one file that break the rule (see the module docstring)."""
  layer = layer_of(module)
  if layer is None:
    return [Arrow(path, 1, module, "-", "module in no layer: add it to test_layering.py")]
  out = []
  for line, target in imports(source, module, is_package, known):
    to = layer_of(target)
    if target not in known:
      out.append(Arrow(path, line, f"{module} [{layer}]", target, "no such module"))
    elif to not in ALLOWED[layer]:
      out.append(Arrow(path, line, f"{module} [{layer}]", f"{target} [{to}]",
                       f"{layer} may import only {', '.join(sorted(ALLOWED[layer]))}"))
  return out


def test_every_import_points_down_the_layers(capsys):
  files = project_files()
  known = set(files)
  arrows = []
  for module, path in files.items():
    arrows += wrong_arrows(str(path.relative_to(REPO)), path.read_text(), module, known,
                           is_package=path.name == "__init__.py")
  with capsys.disabled():
    for arrow in arrows:
      print(arrow)
  assert not arrows, f"{len(arrows)} import(s) point the wrong way:\n" + "\n".join(
      map(str, arrows))


def test_the_checker_reports_wrong_arrows_and_only_those():
  known = set(project_files())
  bad = '''
import jax
from seqgen_jax.nn import attention

def build():
  from seqgen_jax.tasks import lm
  import seqgen_jax.train.loop
  return importlib.import_module("seqgen_jax.eval.fid")
'''
  got = wrong_arrows("seqgen_jax/nn/bad.py", bad, "seqgen_jax.nn.bad", known)
  assert imports(bad, "seqgen_jax.nn.bad", False, known)[0] == (3, "seqgen_jax.nn.attention")
  assert [(a.line, a.target) for a in got] == [
      (6, "seqgen_jax.tasks.lm [tasks]"), (7, "seqgen_jax.train.loop [train]"),
      (8, "seqgen_jax.eval.fid [eval]")]
  assert str(got[0]) == ("seqgen_jax/nn/bad.py:6: seqgen_jax.nn.bad [nn] -> seqgen_jax.tasks.lm "
                         "[tasks] (nn may import only base, nn)")
  # The loop importing the tasks (to fill the registry), eval importing a task, data importing
  # a model, a relative import from train, and a library importing the entrypoints.
  cases = [
      ("seqgen_jax.train.loop", "import seqgen_jax.tasks  # registers the tasks\n", "tasks"),
      ("seqgen_jax.eval.fid", "from seqgen_jax.tasks.image_classify import to_model_input\n",
       "tasks"),
      ("seqgen_jax.data.captions", "from seqgen_jax.nn.text_encoder import BOS_ID\n", "nn"),
      ("seqgen_jax.train.step", "from ..tasks import lm\n", "tasks"),
      ("seqgen_jax.diffusion.sde", "from experiments import main\n", "experiments"),
  ]
  for module, source, layer in cases:
    (arrow,) = wrong_arrows("x.py", source, module, known)
    assert arrow.target.endswith(f"[{layer}]"), (module, arrow)
  # Allowed arrows are not reported; stale imports and unplaced modules are.
  assert not wrong_arrows("x.py", "from seqgen_jax.train.task import Task\n"
                          "from seqgen_jax.eval import fid\n", "seqgen_jax.tasks.x", known)
  (stale,) = wrong_arrows("x.py", "from seqgen_jax.tasks.base import Task\n",
                          "seqgen_jax.tasks.x", known)
  assert stale.why == "no such module" and stale.target == "seqgen_jax.tasks.base"
  (unplaced,) = wrong_arrows("x.py", "", "seqgen_jax.utils", known)
  assert "in no layer" in unplaced.why
