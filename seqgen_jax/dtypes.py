"""Compute dtypes by name, and casting a parameter tree to one (shared by train/ and tasks/)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from seqgen_jax.errors import ConfigError

PyTree = Any
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype_from_name(name: str) -> jnp.dtype:
  """The jnp dtype called ``name`` in a config (``train.compute_dtype``); ConfigError if unknown."""
  if name not in DTYPES:
    raise ConfigError(f"unknown compute dtype '{name}'; choose one of: {', '.join(DTYPES)}")
  return DTYPES[name]


def cast_floating(tree: PyTree, dtype: jnp.dtype) -> PyTree:
  """Casts floating-point leaves to ``dtype`` (integers and keys untouched)."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
