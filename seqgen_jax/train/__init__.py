"""The one training library every model family uses: state, step, sharding, loop, checkpoints."""
