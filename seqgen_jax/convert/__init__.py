"""Weight import from Hugging Face transformers / diffusers checkpoints on local disk."""
