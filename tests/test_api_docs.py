"""docs/api.md's Python blocks run as written, in order, in one namespace (tiny random models,
nothing downloaded); each block asserts its own result against the peer it names."""

import re
import tempfile
import time

import pytest
from conftest import REPO

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")

BLOCK_RE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[str]:
  """The ```python fenced blocks of a markdown text, in order."""
  return BLOCK_RE.findall(text)


def test_block_extraction_sees_every_python_block():
  text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
  assert python_blocks(text) == ["x = 1\n", "y = x + 1\n"]


def test_api_doc_examples_run(tmp_path, monkeypatch):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' checkpoints go here
  blocks = python_blocks((REPO / "docs" / "api.md").read_text())
  assert len(blocks) >= 5  # load_pretrained (LM, DiT), generate, samplers, RNN weights
  namespace: dict = {"__name__": "api_docs"}
  start = time.perf_counter()
  for i, code in enumerate(blocks):
    exec(compile(code, f"docs/api.md block {i + 1}", "exec"), namespace)  # noqa: S102
  assert time.perf_counter() - start < 60  # the page promises quick examples
