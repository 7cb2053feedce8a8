"""Knowledge distillation: a student trained on a finished run's outputs (`warmstart distill`).

`teacher.py` reads the teacher and makes the soft targets (and a layer-dropped student),
`run.py` runs the distillation through the one training loop, `compare.py` measures teacher
and student side by side, `args.py` holds the verb's command-line arguments. The loss itself
is `training/distill_loss.py`. Nothing is imported here, so the CLI can read `args.py`
without loading torch.
"""
