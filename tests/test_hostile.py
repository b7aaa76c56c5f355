"""A hostile corpus against every CLI command that reads user input.

Each case builds its files (generated here: no binary blobs in the repo) in a fresh folder and runs ``ssdkit`` in
this process. It must: end with the expected exit status (2 for bad input; 0 for a documented skip, whose report
must name the problem), print exactly one ``ssdkit: error:`` line for status 2, never a ``Traceback``, finish
within a time bound, and change no file outside its output folder (every input is byte-identical afterwards:
the data-loss cases are covered by that check). Adding a case is one line in ``CASES``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from ssdkit.checkpoint import save_checkpoint
from ssdkit.cli import main
from ssdkit.config import Config, ModelConfig
from ssdkit.data.shapes import write_shapes
from ssdkit.models import build_model

NAMES = ("circle", "square", "triangle")
TIME_LIMIT = 60  # seconds per case: a hang or an alias bomb would take minutes


# ------------------------------------------------------------------------------------------------ builders


def voc(root: Path) -> Path:
    if (root / "voc").is_dir():
        return root / "voc"
    return write_shapes(root / "voc", count=3, image_size=64, min_size=16, max_size=40, class_names=NAMES,
                        val_fraction=0.34, progress=False)


def ckpt(root: Path, num_classes: int = 4, width: float = 0.125, names=NAMES, weights=None) -> Path:
    cfg = ModelConfig(width_mult=width, num_classes=num_classes)
    torch.manual_seed(0)
    model = build_model(cfg)
    if weights == "nan":
        with torch.no_grad():
            model.cls_layers[0].weight.fill_(float("nan"))
    path = root / f"m{num_classes}_{width}_{weights}.pt"
    save_checkpoint(path, model, Config(model=cfg), tuple(names[: num_classes - 1]) if names else
                    tuple(f"c{i}" for i in range(num_classes - 1)))
    return path


def write(root: Path, name: str, content: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


ALIAS_BOMB = "\n".join(['a: &a ["x","x","x","x","x","x","x","x","x"]'] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]) + "\n"


class _Exploit:
    """A pickle that would create a file when unpickled: checkpoints are read with weights_only=True."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def exploit(root: Path) -> Path:
    path = root / "evil.pt"
    path.write_bytes(pickle.dumps({"model": _Exploit(root / "PWNED")}))
    return path


def png_bomb(root: Path) -> Path:
    """A small PNG whose header declares 40000 x 40000 pixels (1.6 gigapixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = zlib.compress(b"\x00" * (40000 // 8 + 1) * 64)  # a few rows; the header is what matters
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 1, 0, 0, 0, 0)) \
        + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    return write(root, "images/bomb.png", data)


def coco(root: Path, mutate) -> Path:
    """A valid COCO instances file, then ``mutate(d)`` (returns the text to write, or None to dump ``d``)."""
    d = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "area": 200,
                          "iscrowd": 0}],
         "categories": [{"id": 1, "name": "circle"}]}
    Image.new("RGB", (64, 64)).save(root / "a.jpg")
    text = mutate(d)
    return write(root, "gt.json", text if text is not None else json.dumps(d))


def results(root: Path, rows) -> Path:
    return write(root, "dt.json", rows if isinstance(rows, str) else json.dumps(rows))


def train_cfg(root: Path, extra: str = "") -> Path:
    data = voc(root)
    return write(root, "cfg.yaml", "model: {num_classes: 4, width_mult: 0.125, batch_norm: true}\n"
                 f"data: {{train: '{data}', val: '', classes: [{', '.join(NAMES)}], train_split: train}}\n"
                 f"train: {{batch_size: 2, max_iterations: 1, eval_every: 0, output_dir: '{root.parent / 'out'}'}}\n"
                 + extra)


def _set(d, path, value):
    target = d
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value


# ---------------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    id: str
    argv: object  # (root: Path) -> list[str]; "{out}" in an argument is the case's output folder
    expect: int = 2
    says: str = ""  # a fragment the error line (or, for expect 0, the output) must contain
    env: tuple = ()  # (name, value) pairs set in the environment for the case
    strict_json: bool = False  # expect 0: stdout is one strict JSON document (no NaN / Infinity)
    creates: str = ""  # a folder under the user's root the command may create (every other file stays as it was)


CASES = [
    # make-shapes: bad numbers, bad output paths, never over an existing dataset
    Case("make-shapes count -1", lambda r: ["make-shapes", "--out", "{out}", "--count", "-1"], says="count"),
    Case("make-shapes size 10", lambda r: ["make-shapes", "--out", "{out}", "--size", "10"], says="image_size"),
    Case("make-shapes seed -1", lambda r: ["make-shapes", "--out", "{out}", "--seed", "-1"], says="seed"),
    Case("make-shapes max-objects -3", lambda r: ["make-shapes", "--out", "{out}", "--max-objects", "-3"],
         says="max_objects"),
    Case("make-shapes out is a file", lambda r: ["make-shapes", "--out", str(write(r, "f.txt", "x"))],
         says="f.txt"),
    Case("make-shapes out under a file", lambda r: ["make-shapes", "--out", str(write(r, "f.txt", "x") / "d")],
         says="f.txt"),
    Case("make-shapes over a dataset", lambda r: ["make-shapes", "--out", str(voc(r)), "--count", "2"],
         says="not empty"),
    # configs: YAML bombs, duplicate keys, non-UTF-8, bad values
    Case("describe config alias bomb", lambda r: ["describe", "--model", str(write(r, "c.yaml", ALIAS_BOMB))],
         says="alias"),
    Case("describe config duplicate key", lambda r: ["describe", "--model", str(write(
        r, "c.yaml", "model:\n  num_classes: 3\n  num_classes: 5\n"))], says="duplicate key"),
    Case("describe config not UTF-8", lambda r: ["describe", "--model", str(write(
        r, "c.yaml", "model:\n  arch: ssd300 \xe9\n".encode("latin-1")))], says="UTF-8"),
    Case("describe config malformed", lambda r: ["describe", "--model", str(write(r, "c.yaml", "model: [1, 2\n"))],
         says="invalid YAML"),
    Case("describe config python tag", lambda r: ["describe", "--model", str(write(
        r, "c.yaml", "model: !!python/object/apply:os.system ['touch PWNED']\n"))], says="invalid YAML"),
    Case("describe num-classes 1", lambda r: ["describe", "--num-classes", "1"], says="num_classes"),
    Case("describe unknown option", lambda r: ["describe", "--bogus"], says="unrecognized"),
    # check-data: unreadable files of every kind
    Case("check-data missing", lambda r: ["check-data", "--data", str(r / "nowhere")], says="no such file"),
    Case("check-data split file not UTF-8", lambda r: ["check-data", "--data", str(voc(r)), "--split", "bad"]
         if write(voc(r), "ImageSets/Main/bad.txt", b"\xff\xfe\x00bad\n") else [], says="UTF-8"),
    Case("check-data yolo yaml alias bomb", lambda r: ["check-data", "--data", str(write(r, "d.yaml", ALIAS_BOMB))],
         says="alias"),
    Case("check-data yolo yaml malformed", lambda r: ["check-data", "--data", str(write(
        r, "d.yaml", "train: [images\nnames: {0: a\n"))], says="invalid YAML"),
    Case("check-data coco bbox string", lambda r: ["check-data", "--data", str(coco(
        r, lambda d: _set(d, ["annotations", 0, "bbox"], "1234")))], says="bbox"),
    Case("check-data coco deep nesting", lambda r: ["check-data", "--data", str(coco(
        r, lambda d: '{"images": ' + "[" * 100000 + "]" * 100000 + "}"))], says="nested"),
    Case("check-data coco huge int", lambda r: ["check-data", "--data", str(coco(
        r, lambda d: json.dumps(d).replace('"id": 1,', '"id": ' + "9" * 5000 + ",", 1)))], says="digits"),
    Case("check-data coco duplicate category", lambda r: ["check-data", "--data", str(coco(
        r, lambda d: _set(d, ["categories"], [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}])))],
         says="duplicate"),
    Case("check-data list NaN label", lambda r: ["check-data", "--data", str(write(
        r, "l.txt", "a.jpg 1 2 30 40 nan\n")), "--format", "list"] if Image.new("RGB", (64, 64)).save(
        r / "a.jpg") is None else [], expect=0, says="not a non-negative integer"),
    Case("check-data yolo class 1e8", lambda r: ["check-data", "--data", str(yolo_label(r, "100000000 .5 .5 .1 .1"))],
         expect=0, says="larger than"),
    Case("check-data yolo inf box", lambda r: ["check-data", "--data", str(yolo_label(r, "0 .5 inf .1 .1"))],
         expect=0, says="non-finite"),
    Case("check-data decompression bomb", lambda r: ["check-data", "--data", str(yolo_with(r, png_bomb(r)))],
         expect=0, says="decompression bomb"),
    Case("check-data truncated jpeg", lambda r: ["check-data", "--data", str(truncated_voc(r))], expect=0,
         says="truncated JPEG"),
    Case("check-data yolo NaN class id", lambda r: ["check-data", "--data", str(yolo_label(r, "nan .5 .5 .1 .1"))],
         expect=0, says="class"),
    Case("check-data vedai inf class id", lambda r: ["check-data", "--data", str(vedai(r, "inf")), "--format",
                                                     "vedai"], expect=0, says="class"),
    Case("check-data list file not UTF-8", lambda r: ["check-data", "--data", str(write(
        r, "l.txt", "a.jpg 1 2 30 40 0 \xe9\n".encode("latin-1"))), "--format", "list"], says="UTF-8"),
    Case("check-data yolo yaml not UTF-8", lambda r: ["check-data", "--data", str(write(
        r, "d.yaml", "path: .\ntrain: images\nnames: {0: caf\xe9}\n".encode("latin-1")))], says="UTF-8"),
    Case("check-data yolo yaml duplicate key", lambda r: ["check-data", "--data", str(write(
        r, "d.yaml", "path: .\ntrain: images\ntrain: other\nnames: {0: a}\n"))], says="duplicate key"),
    Case("check-data voc entity bomb", lambda r: ["check-data", "--data", str(xml_bomb_voc(r))], expect=0,
         says="entit"),
    # anchors
    Case("anchors iou 2", lambda r: ["anchors", "--data", str(voc(r)), "--iou", "2"], says="iou"),
    Case("anchors plot is a folder", lambda r: ["anchors", "--data", str(voc(r)), "--plot", str(r / "voc")],
         says="voc"),
    Case("anchors plot under a file", lambda r: ["anchors", "--data", str(voc(r)), "--plot",
                                                 str(write(r, "f.txt", "x") / "p.png")], says="f.txt"),
    # evaluate: results files and ground truths of every shape
    Case("evaluate gt without annotations", lambda r: ["evaluate", "--gt", str(coco(
        r, lambda d: _set(d, ["annotations"], []))), "--detections", str(results(r, []))], says="annotations"),
    Case("evaluate gt duplicate image", lambda r: ["evaluate", "--gt", str(coco(
        r, lambda d: d["images"].append(dict(d["images"][0])))), "--detections", str(results(r, []))],
         says="duplicate"),
    Case("evaluate gt string iscrowd", lambda r: ["evaluate", "--gt", str(coco(
        r, lambda d: _set(d, ["annotations", 0, "iscrowd"], "no"))), "--detections", str(results(r, []))],
         says="iscrowd"),
    Case("evaluate results NaN score", lambda r: ["evaluate", "--gt", str(coco(r, lambda d: None)), "--detections",
                                                  str(results(r, '[{"image_id": 1, "category_id": 1, "bbox": '
                                                              '[1, 2, 3, 4], "score": NaN}]'))], says="score"),
    Case("evaluate results boolean box", lambda r: ["evaluate", "--gt", str(coco(r, lambda d: None)), "--detections",
                                                    str(results(r, [{"image_id": 1, "category_id": 1,
                                                                     "bbox": [True, 2, 3, 4], "score": 0.5}]))],
         says="bbox"),
    Case("evaluate pickle exploit", lambda r: ["evaluate", "--checkpoint", str(exploit(r)), "--data", str(voc(r))],
         says="evil.pt"),
    Case("evaluate truncated checkpoint", lambda r: ["evaluate", "--checkpoint", str(write(
        r, "t.pt", ckpt(r).read_bytes()[:5000])), "--data", str(voc(r))], says="t.pt"),
    Case("evaluate other num_classes", lambda r: ["evaluate", "--checkpoint", str(ckpt(r, 6, names=None)),
                                                  "--data", str(voc(r))], says="classes"),
    Case("evaluate batch 0", lambda r: ["evaluate", "--checkpoint", str(ckpt(r)), "--data", str(voc(r)),
                                        "--batch", "0"], says="batch"),
    Case("evaluate plot-dir is a file", lambda r: ["evaluate", "--checkpoint", str(ckpt(r)), "--data", str(voc(r)),
                                                   "--device", "cpu", "--plot-dir", str(write(r, "f.txt", "x"))],
         says="f.txt"),
    Case("evaluate plot-dir under a file", lambda r: ["evaluate", "--checkpoint", str(ckpt(r)), "--data",
                                                      str(voc(r)), "--device", "cpu", "--plot-dir",
                                                      str(write(r, "f.txt", "x") / "p")], says="f.txt"),
    Case("evaluate gt string area", lambda r: ["evaluate", "--gt", str(coco(
        r, lambda d: _set(d, ["annotations", 0, "area"], "200"))), "--detections", str(results(r, []))],
         says="area"),
    Case("evaluate json without NaN", lambda r: ["evaluate", "--gt", str(coco(
        r, lambda d: d["categories"].append({"id": 2, "name": "square"}))), "--detections", str(results(
            r, [{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}])), "--json"],
         expect=0, strict_json=True),
    Case("evaluate NaN weights", lambda r: ["evaluate", "--checkpoint", str(ckpt(r, weights="nan")), "--data",
                                            str(voc(r))], says="NaN"),
    # predict: never overwrite or re-read the inputs, bombs, bad checkpoints and values
    Case("predict out is the input folder", lambda r: ["predict", "--checkpoint", str(ckpt(r)), str(voc_images(r)),
                                                       "--out", str(voc_images(r)), "--device", "cpu"],
         says="out"),
    Case("predict out is a file", lambda r: ["predict", "--checkpoint", str(ckpt(r)), str(voc_images(r)),
                                             "--out", str(write(r, "f.txt", "x")), "--device", "cpu"], says="f.txt"),
    Case("predict out under a file", lambda r: ["predict", "--checkpoint", str(ckpt(r)), str(voc_images(r)),
                                                "--out", str(write(r, "f.txt", "x") / "o"), "--device", "cpu"],
         says="f.txt"),
    Case("predict decompression bomb", lambda r: ["predict", "--checkpoint", str(ckpt(r)), str(png_bomb(r)),
                                                  "--out", "{out}", "--device", "cpu"], says="decompression bomb"),
    Case("predict other width", lambda r: ["predict", "--checkpoint", str(ckpt_mismatch(r)), str(voc_images(r)),
                                           "--out", "{out}", "--device", "cpu"], says="do not fit"),
    Case("predict tile -5", lambda r: ["predict", "--checkpoint", str(ckpt(r)), str(voc_images(r)), "--out", "{out}",
                                       "--tile", "-5", "--device", "cpu"], says="tile.size"),
    Case("predict SSDKIT_MAX_PIXELS not a number", lambda r: ["predict", "--checkpoint", str(ckpt(r)),
                                                              str(voc_images(r)), "--out", "{out}", "--device", "cpu"],
         says="SSDKIT_MAX_PIXELS", env=(("SSDKIT_MAX_PIXELS", "lots"),)),
    Case("predict image over SSDKIT_MAX_PIXELS", lambda r: ["predict", "--checkpoint", str(ckpt(r)),
                                                            str(voc_images(r)), "--out", "{out}", "--device", "cpu"],
         says="decompression bomb limit of 100", env=(("SSDKIT_MAX_PIXELS", "100"),)),
    Case("predict score 2", lambda r: ["predict", "--checkpoint", str(ckpt(r)), str(voc_images(r)), "--out", "{out}",
                                       "--score", "2"], says="score"),
    Case("predict not a checkpoint", lambda r: ["predict", "--checkpoint", str(write(r, "x.pt", "hello")),
                                                str(voc_images(r)), "--out", "{out}"], says="x.pt"),
    # export
    Case("export out under a file", lambda r: ["export", "--checkpoint", str(ckpt(r)), "--format", "onnx",
                                               "--out", str(write(r, "f.txt", "x") / "m.onnx")], says="f.txt"),
    Case("export out is a folder", lambda r: ["export", "--checkpoint", str(ckpt(r)), "--format", "onnx",
                                              "--out", str(voc(r))], says="voc"),
    Case("export other width", lambda r: ["export", "--checkpoint", str(ckpt_mismatch(r)), "--format", "onnx",
                                          "--out", "{out}/m.onnx"], says="do not fit"),
    Case("export pickle exploit", lambda r: ["export", "--checkpoint", str(exploit(r)), "--format", "onnx",
                                             "--out", "{out}/m.onnx"], says="evil.pt"),
    Case("export NaN weights", lambda r: ["export", "--checkpoint", str(ckpt(r, weights="nan")), "--format", "onnx",
                                          "--out", "{out}/m.onnx"], says="NaN"),
    # import-weights
    Case("import-weights pickle exploit", lambda r: ["import-weights", "--from", "torchcv", "--weights",
                                                     str(exploit(r)), "--out", "{out}/c.pt"], says="evil.pt"),
    Case("import-weights text file", lambda r: ["import-weights", "--from", "torchvision", "--weights",
                                                str(write(r, "w.pth", "hello")), "--out", "{out}/c.pt"],
         says="w.pth"),
    Case("import-weights classes not UTF-8", lambda r: ["import-weights", "--from", "torchcv", "--weights",
                                                        str(torchcv_weights(r)), "--classes",
                                                        str(write(r, "n.txt", b"\xffa\nb\nc\n")), "--out",
                                                        "{out}/c.pt"], says="UTF-8"),
    # train: configs, output folders, resume
    Case("train config alias bomb", lambda r: ["train", str(write(r, "c.yaml", ALIAS_BOMB))], says="alias"),
    Case("train seed -1", lambda r: ["train", str(train_cfg(r)), "train.seed=-1"], says="seed"),
    Case("train unknown key", lambda r: ["train", str(train_cfg(r)), "train.lrr=0.1"], says="lrr"),
    Case("train output_dir is a file", lambda r: ["train", str(train_cfg(r)),
                                                  f"train.output_dir={write(r, 'f.txt', 'x')}"], says="output_dir"),
    Case("train resume missing", lambda r: ["train", str(train_cfg(r)), "--resume", str(r / "no.pt")],
         says="no.pt"),
    Case("train resume pickle exploit", lambda r: ["train", str(train_cfg(r)), "--resume", str(exploit(r))],
         says="evil.pt"),
    Case("train pretrained_vgg without biases", lambda r: ["train", str(train_cfg(r)), "model.width_mult=1",
                                                           "model.batch_norm=false",
                                                           f"train.pretrained_vgg={vgg_without_biases(r)}"],
         says="vgg"),
    Case("train strict with a broken XML", lambda r: ["train", str(broken_xml_cfg(r)), "data.strict=true"],
         says="data.strict"),
    Case("train into another run's folder", lambda r: ["train", str(train_cfg(r)),
                                                       f"train.output_dir={previous_run(r)}"], expect=0,
         says="prev2", creates="prev2"),  # a new numbered folder: the previous run's files stay byte-identical
    # demo
    Case("demo out is a file", lambda r: ["demo", "--quick", "--out", str(write(r, "f.txt", "x"))], says="f.txt"),
    Case("demo out under a file", lambda r: ["demo", "--quick", "--out", str(write(r, "f.txt", "x") / "d")],
         says="f.txt"),
    # unwritable output paths (/proc refuses new files even to root, which CI runs as)
    Case("predict out unwritable", lambda r: ["predict", "--checkpoint", str(ckpt(r)), str(voc_images(r)), "--out",
                                              "/proc/ssdkit-out", "--device", "cpu"], says="/proc/ssdkit-out"),
    Case("export out unwritable", lambda r: ["export", "--checkpoint", str(ckpt(r)), "--format", "onnx", "--out",
                                             "/proc/ssdkit-out/m.onnx"], says="/proc/ssdkit-out"),
    Case("train output_dir unwritable", lambda r: ["train", str(train_cfg(r)), "train.output_dir=/proc/ssdkit-out"],
         says="output_dir"),
    Case("make-shapes out unwritable", lambda r: ["make-shapes", "--out", "/proc/ssdkit-out", "--count", "2"],
         says="/proc/ssdkit-out"),
    Case("anchors plot unwritable", lambda r: ["anchors", "--data", str(voc(r)), "--plot", "/proc/ssdkit.png"],
         says="/proc/ssdkit.png"),
    # benchmark
    Case("benchmark not a checkpoint", lambda r: ["benchmark", "--checkpoint", str(write(r, "x.pt", "hello")),
                                                  "--data", str(voc(r))], says="x.pt"),
    Case("benchmark pickle exploit", lambda r: ["benchmark", "--checkpoint", str(exploit(r)), "--data", str(voc(r))],
         says="evil.pt"),
    Case("benchmark batch 0", lambda r: ["benchmark", "--checkpoint", str(ckpt(r)), "--data", str(voc(r)),
                                         "--batch", "0"], says="batch"),
]


def vedai(r: Path, class_id: str) -> Path:
    Image.new("RGB", (64, 64)).save(write(r, "v/Vehicules512/00000000_co.png", b"") or
                                    r / "v/Vehicules512/00000000_co.png")
    write(r, "v/Annotations512/00000000.txt", f"30 30 0 {class_id} 1 0 20 40 40 20 20 20 40 40\n")
    return r / "v"


def xml_bomb_voc(r: Path) -> Path:
    root = voc(r)
    xml = sorted((root / "Annotations").iterdir())[0]
    lol = "".join(f'<!ENTITY l{i + 1} "{f"&l{i};" * 10}">' for i in range(8))
    xml.write_text(f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l0 "lol">{lol}]><annotation>&l8;</annotation>')
    return root


def previous_run(r: Path) -> Path:
    prev = r / "prev"
    write(prev, "checkpoint_00000001.pt", b"a previous run's weights")
    write(prev, "history.jsonl", '{"iteration": 1, "loss": 1.0}\n')
    return prev


def voc_images(r: Path) -> Path:
    return voc(r) / "JPEGImages"


def yolo_label(r: Path, line: str) -> Path:
    Image.new("RGB", (64, 64)).save(write(r, "y/images/a.jpg", b"") or r / "y/images/a.jpg")
    write(r, "y/labels/a.txt", line + "\n")
    return r / "y"


def yolo_with(r: Path, image: Path) -> Path:
    write(r, "images/../labels/bomb.txt", "0 .5 .5 .1 .1\n")
    return image.parent.parent


def truncated_voc(r: Path) -> Path:
    root = voc(r)
    jpg = sorted((root / "JPEGImages").iterdir())[0]
    jpg.write_bytes(jpg.read_bytes()[:-200])
    return root


def broken_xml_cfg(r: Path) -> Path:
    cfg = train_cfg(r)
    xml = sorted((r / "voc" / "Annotations").iterdir())[0]
    xml.write_text(xml.read_text()[:40])
    write(r, "voc/ImageSets/Main/train.txt", "".join(f"{p.stem}\n" for p in sorted((r / "voc" /
                                                                                       "Annotations").iterdir())))
    return cfg


def ckpt_mismatch(r: Path) -> Path:
    """A checkpoint whose weights are of width 0.25 but whose config says 0.125."""
    good = torch.load(ckpt(r), weights_only=True)
    wide = build_model(ModelConfig(width_mult=0.25, num_classes=4)).state_dict()
    good["model"] = {k: v.clone() for k, v in wide.items()}
    path = r / "mismatch.pt"
    torch.save(good, path)
    return path


def torchcv_weights(r: Path) -> Path:
    sd = {k: v for k, v in build_model(ModelConfig(num_classes=4)).state_dict().items()
          if k != "extractor.norm4.weight"}
    torch.save(sd, r / "cv.pth")
    return r / "cv.pth"


def vgg_without_biases(r: Path) -> Path:
    from torchvision.models import vgg16

    sd = {k: v for k, v in vgg16().state_dict().items() if not k.endswith("bias")}
    torch.save(sd, r / "vgg.pth")
    return r / "vgg.pth"


# --------------------------------------------------------------------------------------------------- runner


class _TooSlow(BaseException):
    pass


def _snapshot(root: Path, out: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and out not in p.parents}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case, tmp_path, capsys, caplog, monkeypatch):
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    user = tmp_path / "user"
    user.mkdir()
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in case.argv(user)]
    before = _snapshot(user, out)
    capsys.readouterr()

    def too_slow(*_):
        raise _TooSlow

    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(TIME_LIMIT)
    try:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
        except _TooSlow:
            pytest.fail(f"{case.id}: took more than {TIME_LIMIT} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "Traceback" not in text, text[-2000:]
    assert code == case.expect, f"{case.id}: exit {code}, expected {case.expect}\n{text[-2000:]}"
    errors = [line for line in captured.err.splitlines() if line.startswith("ssdkit: error:")]
    if case.expect == 2:
        assert len(errors) == 1, captured.err[-2000:]
        assert case.says.lower() in errors[0].lower(), errors[0]
        rest = captured.err.split(errors[0], 1)[1]
        assert not rest.strip(), f"the error continues on more lines: {rest[:500]}"
    elif case.strict_json:
        def refuse(name):
            raise AssertionError(f"{case.id}: {name} in --json output")
        json.loads(captured.out, parse_constant=refuse)
    else:
        assert case.says.lower() in text.lower(), text[-2000:]
    after = {k: v for k, v in _snapshot(user, out).items() if not (case.creates and k.startswith(case.creates + "/"))}
    assert after == before, "an input file was changed"
    assert not (user / "PWNED").exists() and not Path("PWNED").exists(), "code from a file was executed"
