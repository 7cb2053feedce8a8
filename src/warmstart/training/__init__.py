"""Training: the one loop and what it needs (optimizer and schedules, caching of frozen
layers, checkpoints, callbacks, regularisers, several processes), and the run that puts a
config through it (`session.setup`, `run.train`)."""
