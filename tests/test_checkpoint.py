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
    with pytest.raises(CheckpointError, match=r"w.pt: weights do not fit the model \(missing \[\], unexpected "
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
