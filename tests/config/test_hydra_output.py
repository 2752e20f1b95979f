"""The driver's own .hydra/ files: redacted, and never written over an earlier command's."""

from __future__ import annotations

import threading

import yaml
from omegaconf import OmegaConf

from launchers.jobs.job_runner import hydra_files
from orchestrator.config.hydra_output import write_hydra_files
from orchestrator.redaction import Redactor


def _write(folder, lr: float, token: str = "hf_0123456789abcdefghij"):
    task = OmegaConf.create({"optim": {"lr": lr}, "token": token})
    return write_hydra_files(
        folder,
        task,
        OmegaConf.create({"run": {"dir": str(folder)}}),
        [f"optim.lr={lr}"],
        Redactor.of({"token": token}, [], {}),
    )


def test_a_second_command_in_the_same_output_directory_keeps_the_first_ones_files(tmp_path):
    first, second, third = _write(tmp_path, 0.1), _write(tmp_path, 0.2), _write(tmp_path, 0.3)
    assert [first.name, second.name, third.name] == [".hydra", ".hydra.2", ".hydra.3"]
    for folder, lr in [(first, 0.1), (second, 0.2), (third, 0.3)]:
        assert yaml.safe_load((folder / "overrides.yaml").read_text()) == [f"optim.lr={lr}"]
        config = (folder / "config.yaml").read_text()
        assert f"lr: {lr}" in config and "hf_0123456789" not in config
        assert [path.name for path in hydra_files(str(folder))] == ["config.yaml", "hydra.yaml", "overrides.yaml"]


def test_commands_writing_at_the_same_moment_each_get_a_folder(tmp_path):
    folders, start = [], threading.Barrier(8)

    def write(lr):
        start.wait()
        folders.append(_write(tmp_path, lr))

    threads = [threading.Thread(target=write, args=(index / 10,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({folder.name for folder in folders}) == 8
    written = sorted(yaml.safe_load((folder / "overrides.yaml").read_text())[0] for folder in folders)
    assert written == sorted(f"optim.lr={index / 10}" for index in range(8))
