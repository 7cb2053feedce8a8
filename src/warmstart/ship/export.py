"""`warmstart export`: a finished run's model as a folder of its own, to ship or serve.

Without `merge` the run's `model/` folder is copied as it is; for a lora/ia3 run that is
peft's adapter layout (`adapter_config.json`, `adapter_model.safetensors` with the head),
small, which needs the base model to load. With `merge` the adapters are folded into the base
weights (peft's `merge_and_unload`) and the result is saved the way the base model saves
itself: a Hugging Face `save_pretrained` folder with the tokenizer and label map, or
safetensors with `warmstart_model.json` for the CNNs. Either folder loads with
`warmstart.models.load_adapter`; a merged one needs neither peft nor the base model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from warmstart.errors import WarmstartError
from warmstart.files import atomic_dir, commit_dir
from warmstart.models.base import read_model_file
from warmstart.models.peft import merged
from warmstart.training.checkpoint import is_finished


def export(run_dir: str | Path, out_dir: str | Path, merge: bool = False) -> Path:
    """Write the model of the finished run `run_dir` to the new folder `out_dir`.

    Args:
        run_dir: a run directory with a saved model (`output.save_model=true`).
        out_dir: where to write; it must not exist yet, or be empty.
        merge: fold lora/ia3 adapters into the base weights and write a plain model.

    Returns:
        The folder written.

    Raises:
        WarmstartError: the run is unfinished or has no model, `out_dir` holds files, or
            `merge` was asked of a run that trained no adapters.
    """
    run, out = Path(run_dir), Path(out_dir)
    model_dir = run / "model"
    if not is_finished(run) and (run / "checkpoints").is_dir():
        raise WarmstartError(f"{run} holds an unfinished run (it was stopped); finish it "
                             f"with `warmstart train --resume {run}`, then export it")
    if not is_finished(run) or not model_dir.is_dir():
        raise WarmstartError(f"{str(run)!r} holds no finished run with a saved model; pass "
                             "a run directory trained with output.save_model=true")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WarmstartError(f"{str(out)!r} already exists and is not an empty folder; "
                             "choose a new output folder")
    meta = read_model_file(model_dir)
    if merge and meta.get("source") != "peft":
        raise WarmstartError(f"{str(run)!r} trained no adapters (its model is already a plain "
                             "model): export it without --merge")
    try:
        tmp = atomic_dir(out)  # written beside `out`, renamed into place when complete
    except OSError as e:
        raise WarmstartError(f"cannot write export folder {str(out)!r}: {e.strerror or e}; "
                             "choose a writable place") from None
    try:
        if merge:
            merged(model_dir, meta).save(tmp, list(meta["labels"]))
        else:
            shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, out)
    return out
