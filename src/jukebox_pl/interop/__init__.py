"""Import of the reference implementation's checkpoints (OpenAI's `openai/jukebox` layout)."""
