"""seqgen_jax: recurrent networks, Transformers and diffusion models on one JAX training library."""

__version__ = "0.1.0"
