"""The checkpoint format: `LoopState` is typed and versioned, and a checkpoint of another
version is refused with one line instead of being resumed into a wrong state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_rows, write_csv

from warmstart.cli import main
from warmstart.errors import WarmstartError
from warmstart.training.checkpoint import LOOP_STATE_VERSION, Checkpointer, LoopState

TINY = ["model.name=tiny-bert", "train.epochs=1", "train.batch_size=8", "optim.lr=1e-2",
        "model.max_length=16", "output.save_model=false", "--quiet"]


def test_loop_state_round_trips_and_checks_its_version():
    state = LoopState(epoch=2, step=40, history=[{"epoch": 1, "val_accuracy": 0.5}],
                      best_value=0.5, best_epoch=1, step_size=16)
    assert LoopState.from_dict(state.to_dict(), Path("ck")) == state
    for version in (LOOP_STATE_VERSION + 1, None):
        data = {**state.to_dict(), "version": version}
        with pytest.raises(WarmstartError, match=r"checkpoint 'ck' has loop-state version"):
            LoopState.from_dict(data, Path("ck"))


def test_resuming_a_checkpoint_of_another_version_is_one_line(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", make_rows(12))
    args = [*TINY, f"data.name={data}", f"output.dir={tmp_path}", "output.name=r"]
    assert main(["train", *args]) == 0
    run = tmp_path / "r"
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    checkpoint = Checkpointer(run, 0, 1).latest()
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    state["loop"]["version"] = LOOP_STATE_VERSION + 1
    torch.save(state, checkpoint / "state.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "loop-state version" in err and "--overwrite" in err, err


def test_a_full_disk_mid_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    import warmstart.training.checkpoint as ck

    keeper = Checkpointer(tmp_path / "run", every_steps=1, keep_last=2)
    weights = {"w": torch.ones(3)}
    first = keeper.save(weights, {}, LoopState(step=1), [torch.get_rng_state()])

    def full(tensors, path):
        Path(path).write_bytes(b"\0" * 100)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(WarmstartError, match=r"cannot write checkpoint .*step-00000002.*No "
                       r"space left.*--resume .*run` continues from step-00000001"):
        keeper.save(weights, {}, LoopState(step=2), [torch.get_rng_state()])
    assert keeper.latest() == first  # still the resume point, and no half folder is left
    assert [p.name for p in keeper.dir.iterdir()] == [first.name]
    assert ck.load_checkpoint(first).loop.step == 1
