"""checkpoint.py: the file format, its checks, the one torch.load, weight transfer (init_from_checkpoint)."""

import os
import stat
from dataclasses import replace

import pytest
import torch

from ssdkit.checkpoint import (
    FORMAT,
    init_from_checkpoint,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    save_checkpoint,
    torch_load,
)
from ssdkit.config import Config, ModelConfig, config_to_dict
from ssdkit.errors import CheckpointError
from ssdkit.models import build_model
from ssdkit.models.vgg import load_vgg16_weights

CFG = Config(model=ModelConfig(width_mult=0.125, num_classes=4))
NAMES = ("cat", "dog", "bird")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(CFG.model)


def _names(cfg: Config) -> list[str]:
    return [f"c{i}" for i in range(cfg.model.num_classes - 1)]


def test_save_load_round_trip(tmp_path, model):
    path = tmp_path / "a.pt"
    save_checkpoint(path, model, CFG, NAMES, metrics={"map": 0.5}, iteration=7)
    state = load_checkpoint(path)
    assert state["format"] == FORMAT and state["version"]
    assert state["config"] == CFG and state["class_names"] == list(NAMES)
    assert state["metrics"] == {"map": 0.5} and state["iteration"] == 7
    own = model.state_dict()
    assert state["model"].keys() == own.keys() and all(torch.equal(state["model"][k], own[k]) for k in own)
    loaded, cfg, names = model_from_checkpoint(path)
    assert cfg == CFG and names == NAMES and not loaded.training
    assert all(torch.equal(v, own[k]) for k, v in loaded.state_dict().items())


def _write(path, obj):
    torch.save(obj, path)
    return path


def test_marker_entries_config_and_class_count_are_checked(tmp_path, model):
    good = {"format": FORMAT, "config": config_to_dict(CFG), "class_names": list(NAMES), "model": {}}
    with pytest.raises(CheckpointError, match=r"x.pt: not an ssdkit checkpoint \(no 'ssdkit-checkpoint' marker\)"):
        load_checkpoint(_write(tmp_path / "x.pt", {"model": {}}))
    with pytest.raises(CheckpointError, match="no 'class_names' entry"):
        load_checkpoint(_write(tmp_path / "y.pt", {k: v for k, v in good.items() if k != "class_names"}))
    bad_cfg = dict(good, config={"model": {"num_classes": 1}})
    with pytest.raises(CheckpointError, match=r"invalid config in checkpoint \(model.num_classes"):
        load_checkpoint(_write(tmp_path / "z.pt", bad_cfg))
    with pytest.raises(CheckpointError, match="2 class names but model.num_classes=4"):
        load_checkpoint(_write(tmp_path / "w.pt", dict(good, class_names=["a", "b"])))
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(CheckpointError, match=r"text.pt: not a readable checkpoint \("):
        load_checkpoint(tmp_path / "text.pt")


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    payload = _RunsCode()
    payload.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": payload}, path)
    for load in (load_checkpoint, lambda p: torch_load(p, "weights file"),
                 lambda p: load_vgg16_weights(build_model(ModelConfig()).extractor, p)):
        with pytest.raises(CheckpointError, match=r"evil.pt: not a readable (checkpoint|weights file|VGG16 weights)"):
            load(path)
    assert not (tmp_path / "pwned").exists()


def test_torch_load_names_the_file_and_what_it_should_be(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: VGG16 weights file not found"):
        torch_load(tmp_path / "nope.pth", "VGG16 weights file")
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError) as err:
        torch_load(tmp_path / "cut.pth", "weights file")
    assert str(err.value).startswith(f"{tmp_path / 'cut.pth'}: not a readable weights file (")
    assert "\n" not in str(err.value)
    assert torch_load(_write(tmp_path / "ok.pt", {"w": torch.ones(2)}))["w"].tolist() == [1.0, 1.0]


def test_load_model_state_refuses_weights_that_do_not_fit(tmp_path, model):
    other = build_model(replace(CFG.model, num_classes=6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"w.pt: weights do not fit the model \(the weights are for "
                                              r"model.num_classes=6, the model has 4; missing \[\], unexpected "
                                              r"\['extra.weight'\], other shapes: cls_layers.0.weight \[24, "):
        load_model_state(model, {**other.state_dict(), "extra.weight": torch.zeros(1)}, tmp_path / "w.pt")
    partial = {k: v for k, v in other.state_dict().items() if not k.startswith("loc_layers.")}
    with pytest.raises(CheckpointError, match=r"missing \['loc_layers.0.weight'"):
        load_model_state(model, partial, tmp_path / "w.pt")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    fresh = build_model(CFG.model)
    load_model_state(fresh, model.state_dict(), "same.pt")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_file_mode_follows_the_umask(tmp_path, model, umask, mode):
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "m.pt", model, CFG, NAMES)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == mode


def test_init_from_checkpoint_with_new_anchors_reinitialises_both_heads(tmp_path, model):
    path = tmp_path / "src.pt"
    save_checkpoint(path, model, CFG, NAMES)
    fewer = replace(CFG.model, aspect_ratios=((2,),) * 6)  # 4 boxes per location everywhere
    target = build_model(fewer)
    report = init_from_checkpoint(target, path)
    heads = {k for k in target.state_dict() if k.startswith(("cls_layers.", "loc_layers."))}
    changed = {k for k in heads if target.state_dict()[k].shape != model.state_dict()[k].shape}
    assert changed and set(report["initialised"]) == heads  # a head is never half copied
    assert not any(k in report["loaded"] for k in heads)
    assert set(report["unused"]) == heads


def test_init_from_refuses_a_trunk_that_does_not_fit_and_warns_on_preprocessing(tmp_path):
    cfg = Config(model=replace(CFG.model, batch_norm=True))
    path = tmp_path / "src.pt"
    save_checkpoint(path, build_model(cfg.model), cfg, _names(cfg))
    wider = build_model(replace(cfg.model, width_mult=cfg.model.width_mult * 2))
    with pytest.raises(CheckpointError, match="trunk tensor"):  # (BatchNorm step counters fit, the rest not)
        init_from_checkpoint(wider, path)
    other_norm = build_model(replace(cfg.model, mean=(0.5, 0.5, 0.5)))
    report = init_from_checkpoint(other_norm, path)
    assert any("model.mean" in w for w in report["warnings"])


def test_init_from_a_checkpoint_of_another_architecture(tmp_path, model):
    path = tmp_path / "src.pt"
    save_checkpoint(path, torch.nn.Linear(2, 2), CFG, NAMES)
    with pytest.raises(CheckpointError, match="no tensor of the checkpoint fits the model"):
        init_from_checkpoint(model, path)


def test_a_checkpoint_of_another_width_or_class_count_is_one_line_naming_the_field(tmp_path, model):
    """model_from_checkpoint (predict / evaluate / export load through it) on weights that do not fit their own
    config: one line naming the config field, not load_state_dict's size-mismatch dump."""
    wide = build_model(replace(CFG.model, width_mult=0.25))
    path = tmp_path / "wide.pt"
    save_checkpoint(path, wide, CFG, NAMES)  # the config says width 0.125
    with pytest.raises(CheckpointError) as err:
        model_from_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: weights do not fit the model (the weights are for another width")
    assert "model.width_mult" in msg and "\n" not in msg and "size mismatch" not in msg
    voc = tmp_path / "voc.pt"
    save_checkpoint(voc, build_model(replace(CFG.model, num_classes=21)), CFG, NAMES)
    with pytest.raises(CheckpointError, match=r"voc.pt: .*model.num_classes=21, the model has 4"):
        model_from_checkpoint(voc)


def test_nan_or_inf_weights_are_refused_naming_the_file_and_tensor(tmp_path, model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["loc_layers.2.bias"][1] = float("nan")
    state["cls_layers.0.weight"][0, 0, 0, 0] = float("inf")
    path = tmp_path / "nan.pt"
    torch.save({"format": FORMAT, "config": config_to_dict(CFG), "class_names": list(NAMES), "model": state}, path)
    first = next(k for k in state if k in ("loc_layers.2.bias", "cls_layers.0.weight"))
    pattern = rf"nan.pt: tensor {first} has 1 NaN/inf value\(s\) of \d+; these weights cannot be used"
    with pytest.raises(CheckpointError, match=pattern):
        model_from_checkpoint(path)  # predict, evaluate, export
    with pytest.raises(CheckpointError, match=pattern):
        init_from_checkpoint(build_model(CFG.model), path)  # train.init_from
    with pytest.raises(CheckpointError, match=pattern):
        load_model_state(build_model(CFG.model), state, path)


def _vgg_state(**changes):
    state = {}
    for idx, (cin, cout) in zip([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
                                [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                                 (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]):
        state[f"features.{idx}.weight"] = torch.zeros(cout, cin, 3, 3)
        state[f"features.{idx}.bias"] = torch.zeros(cout)
    state.update({"classifier.0.weight": torch.zeros(4096, 25088), "classifier.0.bias": torch.zeros(4096),
                  "classifier.3.weight": torch.zeros(4096, 4096), "classifier.3.bias": torch.zeros(4096)})
    for k, v in changes.items():
        if v is None:
            del state[k]
        else:
            state[k] = v
    return state


def test_pretrained_vgg_without_biases_or_with_wrong_shapes_is_one_line(tmp_path):
    extractor = build_model(ModelConfig(num_classes=4)).extractor
    before = extractor.conv6.weight.detach().clone()
    cases = [
        ({"features.0.bias": None}, r"no_bias.pth: not a torchvision vgg16 state dict \(missing features.0.bias\)"),
        ({"features.2.weight": torch.zeros(32, 64, 3, 3)},
         r"shape.pth: features.2.weight has shape \[32, 64, 3, 3\], expected \[64, 64, 3, 3\]"),
        ({"classifier.0.weight": torch.zeros(10, 10)}, r"fc.pth: classifier.0.weight has shape \[10, 10\]"),
        ({"features.5.bias": torch.full((128,), float("nan"))}, r"nan.pth: tensor features.5.bias has 128 NaN/inf"),
    ]
    for (changes, match), name in zip(cases, ("no_bias", "shape", "fc", "nan")):
        path = tmp_path / f"{name}.pth"
        torch.save(_vgg_state(**changes), path)
        with pytest.raises(CheckpointError, match=match) as err:
            load_vgg16_weights(extractor, path)
        assert "\n" not in str(err.value)
    assert torch.equal(extractor.conv6.weight, before)  # nothing copied from a bad file
    path = tmp_path / "good.pth"
    torch.save(_vgg_state(), path)
    assert "classifier.0 -> conv6" in load_vgg16_weights(extractor, path)
