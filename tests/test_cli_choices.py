"""Every command's ``--help``, and every choice the help advertises, run at toy size: a choice the CLI offers can
never be rejected again (``check-data --format list`` and ``--data shapes`` once were).

The choices are read from the parser itself, so a new flag with ``choices=`` fails
``test_every_flag_with_choices_has_a_toy_run`` until it gets a row in ``RUNS``.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from PIL import Image

from ssdkit import choices
from ssdkit.checkpoint import save_checkpoint
from ssdkit.cli import build_parser, main
from ssdkit.config import Config, ModelConfig
from ssdkit.data.readers import VEDAI_CLASSES
from ssdkit.data.shapes import write_shapes
from ssdkit.models import build_model

NAMES = ("circle", "square", "triangle")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _choice_flags() -> set[tuple[str, str]]:
    return {(cmd, a.option_strings[0]) for cmd, sp in _subparsers().items() for a in sp._actions
            if a.choices and a.option_strings}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Tiny datasets in every format (shapes classes circle/square/triangle; VEDAI its own), tiny checkpoints."""
    root = tmp_path_factory.mktemp("toy")
    data = {}
    for fmt in ("voc", "coco", "yolo", "listfile"):
        data[fmt] = write_shapes(root / fmt, format=fmt, count=3, image_size=64, min_size=16, max_size=40,
                                 class_names=NAMES, val_fraction=0.34, progress=False)
    data["coco"] = data["coco"] / "annotations" / "instances_train.json"
    data["list"] = data["listfile"] / "train.txt"
    data["listfile"] = data["list"]
    vedai = root / "vedai"
    for sub in ("Annotations512", "Vehicules512"):
        (vedai / sub).mkdir(parents=True)
    for i in range(2):  # a car (VEDAI class id 1) with its four corners
        Image.new("RGB", (64, 64), (90, 120, 30)).save(vedai / "Vehicules512" / f"0000000{i}_co.png")
        (vedai / "Annotations512" / f"0000000{i}.txt").write_text("30 30 0 1 1 0 20 40 40 20 20 20 40 40\n")
    data["vedai"] = vedai
    ckpts = {}
    for key, names in (("shapes", NAMES), ("vedai", VEDAI_CLASSES)):
        cfg = ModelConfig(width_mult=0.125, num_classes=len(names) + 1)
        torch.manual_seed(0)
        ckpts[key] = root / f"{key}.pt"
        save_checkpoint(ckpts[key], build_model(cfg).eval(), Config(model=cfg), names)
    return {"root": root, "data": data, "ckpt": ckpts}


def _weights(source: str, path):
    """A state dict of ``source``'s layout (random weights, 3 classes + background)."""
    if source == "torchvision":
        from torchvision.models.detection import ssd300_vgg16

        sd = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=4).state_dict()
    elif source == "amdegroot":
        from test_interop import _amdegroot_net

        sd = _amdegroot_net(4).state_dict()
    else:
        sd = {k: v for k, v in build_model(ModelConfig(num_classes=4)).state_dict().items()
              if k != "extractor.norm4.weight"}
    torch.save(sd, path)
    return str(path)


def _format_data(toy, fmt):
    return str(toy["data"][fmt])


def _ckpt_for(toy, fmt):
    return str(toy["ckpt"]["vedai" if fmt == "vedai" else "shapes"])


# (command, flag) -> argv for one choice; ``toy`` gives data and checkpoints, ``tmp`` a fresh folder
RUNS = {
    ("check-data", "--format"): lambda c, toy, tmp: ["check-data", "--data", _format_data(toy, c), "--format", c],
    ("anchors", "--format"): lambda c, toy, tmp: ["anchors", "--data", _format_data(toy, c), "--format", c],
    ("evaluate", "--format"): lambda c, toy, tmp: ["evaluate", "--checkpoint", _ckpt_for(toy, c), "--data",
                                                   _format_data(toy, c), "--format", c, "--device", "cpu"],
    ("evaluate", "--metric"): lambda c, toy, tmp: ["evaluate", "--checkpoint", _ckpt_for(toy, "voc"), "--data",
                                                   _format_data(toy, "voc"), "--metric", c, "--device", "cpu"],
    ("make-shapes", "--format"): lambda c, toy, tmp: ["make-shapes", "--out", str(tmp / c), "--format", c,
                                                      "--count", "2", "--size", "48"],
    ("export", "--format"): lambda c, toy, tmp: ["export", "--checkpoint", _ckpt_for(toy, "voc"), "--format", c,
                                                 "--out", str(tmp / ("m.xml" if c == "openvino" else f"m.{c}"))],
    ("predict", "--tile-merge"): lambda c, toy, tmp: ["predict", "--checkpoint", _ckpt_for(toy, "voc"),
                                                      str(toy["data"]["voc"] / "JPEGImages"), "--out", str(tmp / "p"),
                                                      "--tile", "32", "--tile-merge", c, "--device", "cpu"],
    ("predict", "--tile-match"): lambda c, toy, tmp: ["predict", "--checkpoint", _ckpt_for(toy, "voc"),
                                                      str(toy["data"]["voc"] / "JPEGImages"), "--out", str(tmp / "p"),
                                                      "--tile", "32", "--tile-match", c, "--device", "cpu"],
    ("evaluate", "--tile-merge"): lambda c, toy, tmp: ["evaluate", "--checkpoint", _ckpt_for(toy, "voc"), "--data",
                                                       _format_data(toy, "voc"), "--tile", "32", "--tile-merge", c,
                                                       "--device", "cpu"],
    ("evaluate", "--tile-match"): lambda c, toy, tmp: ["evaluate", "--checkpoint", _ckpt_for(toy, "voc"), "--data",
                                                       _format_data(toy, "voc"), "--tile", "32", "--tile-match", c,
                                                       "--device", "cpu"],
    ("predict", "--precision"): lambda c, toy, tmp: ["predict", "--checkpoint", _ckpt_for(toy, "voc"),
                                                     str(toy["data"]["voc"] / "JPEGImages"), "--out", str(tmp / "p"),
                                                     "--precision", c, "--device", "cpu"],
    ("evaluate", "--precision"): lambda c, toy, tmp: ["evaluate", "--checkpoint", _ckpt_for(toy, "voc"), "--data",
                                                      _format_data(toy, "voc"), "--precision", c, "--device", "cpu"],
    ("train", "--format"): lambda c, toy, tmp: ["train", "--data", _format_data(toy, c), "--format", c, "--epochs", "1",
                                                "--batch", "1", "--tile", "none", "model.width_mult=0.125",
                                                "model.batch_norm=false", "train.eval_every=0",
                                                f"train.output_dir={tmp / 'run'}", "--no-progress"],
    ("import-weights", "--from"): lambda c, toy, tmp: ["import-weights", "--from", c, "--weights",
                                                       _weights(c, tmp / "w.pth"), "--out", str(tmp / "ck.pt")],
}

# choices that need an optional extra: the run is skipped (not failed) when it is not installed
NEEDS = {("export", "--format", "openvino"): "openvino"}

# choices the help text advertises beyond ``choices=``: model presets and the built-in shapes data
ADVERTISED = [
    *[["describe", "--model", m] for m in choices.MODEL_PRESETS],
    *[["anchors", "--data", choices.SHAPES, "--split", "val", "--model", m] for m in choices.MODEL_PRESETS],
    ["check-data", "--data", choices.SHAPES],
    ["evaluate", "--checkpoint", "{ckpt}", "--data", choices.SHAPES, "--device", "cpu"],
]


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: ssdkit {command}")


def test_every_flag_with_choices_has_a_toy_run():
    assert _choice_flags() == set(RUNS), "give every flag with choices= a row in RUNS"


@pytest.mark.parametrize("command, flag, choice", sorted(
    (cmd, flag, c) for cmd, sp in _subparsers().items() for a in sp._actions if a.choices and a.option_strings
    for flag in a.option_strings[:1] for c in a.choices))
def test_every_advertised_choice_is_accepted(command, flag, choice, toy, tmp_path, capsys):
    if (command, flag, choice) in NEEDS:
        pytest.importorskip(NEEDS[(command, flag, choice)])
    argv = [*RUNS[(command, flag)](choice, toy, tmp_path), "--json"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, f"{' '.join(argv)} -> {code}: {err}"


@pytest.mark.parametrize("argv", ADVERTISED, ids=lambda a: " ".join(a[:5]))
def test_advertised_models_and_shapes_data_work(argv, toy, capsys):
    argv = [a.replace("{ckpt}", str(toy["ckpt"]["shapes"])) for a in argv]
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    json.loads(capsys.readouterr().out)
