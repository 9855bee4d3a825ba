"""Datasets, tokenizers, synthetic tasks and the step-indexed batch iterators.

One module per dataset family, each with a TFDS builder and a loader that returns train / eval
StepSources plus what a model needs to know (see docs/data.md):

  shakespeare.load(options, seq_len=..., ...)           char LM: {"inputs", "targets", "weights"}
  images.load("mnist" | "fashion_mnist" | "cifar10" | "cifar10_official", options, ...)
  sentiment.load("sst2" | "rt_polarity", options, seq_len=..., ...)
  multi30k.load(options, src_len=..., tgt_len=..., vocab_size=..., ...)
  timeseries.load("etth1" | "etth2" | "airline_passengers" | ..., options, lookback=96, ...)

``options`` is a ``builder.DataOptions`` (``DataOptions.from_config(config.data)``). Each module
also has ``from_builder(builder, ...)`` for a builder prepared elsewhere or mocked with
``tfds.testing.mock_data``. Tokenizers: text.CharTokenizer, tokenizers.WordTokenizer,
tokenizers.SentencePieceTokenizer; ``tokenizers.save_tokenizer`` / ``load_tokenizer``.
"""
