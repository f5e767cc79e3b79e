"""A training run killed mid-epoch (Ctrl-C or SIGKILL) resumes from its last checkpoint and finishes."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from yolo_master.data.shapes import generate
from yolo_master.engine.resume_state import FILENAME
from yolo_master.zoo import cfg_dir

pytestmark = pytest.mark.slow
KILLER = [sys.executable, str(Path(__file__).with_name("kill_at.py"))]


@pytest.mark.parametrize("signal_name,status", [("SIGINT", 130), ("SIGKILL", -9)])
def test_killed_run_resumes_from_last_checkpoint(tmp_path, signal_name, status):
    data = generate(tmp_path / "data", train=24, val=6, imgsz=64, seed=0)
    args = [
        "train",
        "model=n.yaml",
        f"data={data}",
        "epochs=3",
        "imgsz=64",
        "batch=8",
        "workers=0",
        "seed=0",
        "deterministic=True",
        "device=cpu",
        "plots=False",
        f"project={tmp_path}",
        "name=run",
    ]
    proc = run_cli(signal_name, "1", "2", *args, cwd=tmp_path, wrapper=KILLER)  # 2 batches into epoch 2
    assert proc.returncode == status, proc.stderr[-3000:]
    if signal_name == "SIGINT":
        assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    last = tmp_path / "run" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=False)  # complete and loadable: written atomically
    assert ckpt["epoch"] == 0  # the end of epoch 1
    assert not list(last.parent.glob(".*.tmp"))
    epochs_logged = {row["epoch"] for row in csv.DictReader((tmp_path / "run" / "routing.csv").open())}
    assert epochs_logged == {"1"}

    assert (last.parent / FILENAME).exists()
    if signal_name == "SIGINT":  # as from stock Ultralytics: no full-precision state, a warning, resumed all the same
        (last.parent / FILENAME).unlink()

    proc = run_cli("train", "resume=True", f"model={last}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming training" in proc.stdout + proc.stderr
    assert (f"no {FILENAME} beside it" in proc.stdout + proc.stderr) == (signal_name == "SIGINT")
    results = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert [int(float(r["epoch"])) for r in results] == [1, 2, 3]
    routing = list(csv.DictReader((tmp_path / "run" / "routing.csv").open()))
    assert sorted({r["epoch"] for r in routing}) == ["1", "2", "3"]
    assert len(routing) == 3 * (4 + 3 + 3)  # each epoch once: the interrupted epoch was not logged twice


def test_resumed_run_reaches_the_weights_of_an_uninterrupted_one(tmp_path):
    """SIGKILL mid-epoch, resume: the same raw weights, EMA, optimizer state and router biases, bit for bit."""
    data = generate(tmp_path / "data", train=16, val=4, imgsz=64, seed=0)
    model = tmp_path / "bias-n.yaml"  # bias balancing on, so the routers carry state of their own
    model.write_text((cfg_dir() / "detect/yolo-master.yaml").read_text() + "\nmoe: {balance: bias, bias_rate: 0.01}\n")
    args = [
        "train",
        f"model={model}",
        f"data={data}",
        "epochs=3",
        "close_mosaic=1",  # mosaic in epochs 1-2, closed in epoch 3
        "imgsz=64",
        "batch=8",
        "nbs=8",  # an optimizer step every batch: exact (gradient accumulation across a resume is not)
        "workers=0",
        "seed=0",
        "deterministic=True",
        "device=cpu",
        "plots=False",
        "val=False",
        f"project={tmp_path}",
    ]
    proc = run_cli(*args, "name=straight", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("SIGKILL", "1", "1", *args, "name=killed", cwd=tmp_path, wrapper=KILLER)  # 1 batch into epoch 2
    assert proc.returncode == -9, proc.stderr[-3000:]
    proc = run_cli("train", "resume=True", f"model={tmp_path / 'killed/weights/last.pt'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming training" in proc.stdout + proc.stderr and FILENAME not in proc.stdout + proc.stderr

    straight, resumed = (
        torch.load(tmp_path / run / "weights" / FILENAME, weights_only=True) for run in ("straight", "killed")
    )
    assert straight["epoch"] == resumed["epoch"] == 2 and straight["updates"] == resumed["updates"]
    for part in ("model", "ema"):
        assert straight[part].keys() == resumed[part].keys()
        for name, value in straight[part].items():
            torch.testing.assert_close(resumed[part][name], value, rtol=0, atol=0, msg=f"{part} {name} differs")
    moments = [
        (s, r)
        for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values())
        for s, r in zip(a.values(), b.values())
    ]
    assert moments and all(torch.equal(s, r) for s, r in moments)  # Adam's moments (SGD's momenta), step counts
    biases = [name for name in resumed["model"] if name.endswith("selection_bias")]
    assert len(biases) == 3 and all(resumed["model"][b].abs().sum() > 0 for b in biases)  # the bias did move
    assert all(torch.equal(resumed["ema"][b], resumed["model"][b]) for b in biases)  # the EMA holds a copy


def _train_args(data, tmp_path, name: str, epochs: int = 2) -> list[str]:
    return [
        "train", "model=n.yaml", f"data={data}", f"epochs={epochs}", "imgsz=64", "batch=8", "workers=0", "seed=0",
        "device=cpu", "plots=False", "val=False", f"project={tmp_path}", f"name={name}",
    ]  # fmt: skip


def test_resuming_a_copied_run_writes_into_the_copy(tmp_path):
    import shutil

    data = generate(tmp_path / "data", train=16, val=4, imgsz=64, seed=0)
    proc = run_cli("SIGKILL", "1", "1", *_train_args(data, tmp_path, "orig"), cwd=tmp_path, wrapper=KILLER)
    assert proc.returncode == -9, proc.stderr[-3000:]
    shutil.copytree(tmp_path / "orig", tmp_path / "orig_copy")
    before = {p.name: p.read_bytes() for p in (tmp_path / "orig" / "weights").iterdir()}
    csv_before = (tmp_path / "orig" / "results.csv").read_text()
    last = tmp_path / "orig_copy" / "weights" / "last.pt"
    proc = run_cli("train", "resume=True", f"model={last}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming into {(tmp_path / 'orig_copy').resolve()}" in proc.stdout + proc.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "orig" / "weights").iterdir()} == before  # untouched
    assert (tmp_path / "orig" / "results.csv").read_text() == csv_before
    results = list(csv.DictReader((tmp_path / "orig_copy" / "results.csv").open()))
    assert [int(float(r["epoch"])) for r in results] == [1, 2]


def test_a_second_run_into_a_folder_in_use_refuses_and_the_first_is_intact(tmp_path):
    import os
    import subprocess
    import time

    from conftest import cli_command

    data = generate(tmp_path / "data", train=16, val=4, imgsz=64, seed=0)
    args = [*_train_args(data, tmp_path, "same", epochs=3), "exist_ok=True"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pipe = subprocess.PIPE
    first = subprocess.Popen([*cli_command(), *args], cwd=tmp_path, env=env, stdout=pipe, stderr=pipe, text=True)
    lock = tmp_path / "same" / ".lock"
    for _ in range(600):
        if lock.exists() or first.poll() is not None:
            break
        time.sleep(0.1)
    second = run_cli(*args, cwd=tmp_path)
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-3000:]
    errors = [line for line in second.stderr.splitlines() if "error:" in line]
    assert second.returncode == 2 and len(errors) == 1 and f"in use by process {first.pid}" in errors[0]
    results = list(csv.DictReader((tmp_path / "same" / "results.csv").open()))
    assert [int(float(r["epoch"])) for r in results] == [1, 2, 3]  # one run's epochs, in order
    assert not lock.exists()  # released when the first run ended


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path):
    from yolo_master.engine.run_lock import RunLock

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text("999999999")  # no such process
    lock = RunLock(folder)
    lock.acquire()
    assert lock.holder() == __import__("os").getpid()
    lock.release()
    assert not (folder / ".lock").exists()
