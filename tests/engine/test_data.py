"""build_loaders / set_loader_position: the batches a run trains and validates on."""

import pytest
import torch

from ssdkit.config import config_from_dict
from ssdkit.data.shapes import write_shapes
from ssdkit.engine.data import build_loaders, set_loader_position, train_fill
from ssdkit.errors import ConfigError


def _cfg(**train):
    return config_from_dict({
        "model": {"num_classes": 4, "width_mult": 0.125},
        "data": {"classes": ["circle", "square", "star"], "shapes_train_count": 10, "shapes_val_count": 3,
                 "shapes_image_size": 64, "shapes_min_size": 10, "shapes_max_size": 40, "augment": False},
        "train": {"batch_size": 4, **train},
    })


def test_loaders_of_a_run():
    loaders = build_loaders(_cfg())
    assert loaders.class_names == ("circle", "square", "star") and loaders.per_process_batch_size == 4
    assert len(loaders.train_loader) == 2  # 10 images, batch 4, drop_last: equal batches only
    images, targets = next(iter(loaders.train_loader))
    assert images.shape == (4, 3, 300, 300) and images.dtype == torch.uint8 and len(targets) == 4
    assert sum(len(b[0]) for b in loaders.val_loader) == 3  # validation keeps every image
    assert len(loaders.val_source) == 3


def test_a_pass_can_start_at_any_batch_of_any_epoch():
    loader = build_loaders(_cfg(), with_val=False).train_loader
    set_loader_position(loader, epoch=2)
    full = [[t["index"] for t in targets] for _, targets in loader]
    set_loader_position(loader, epoch=2, skip_batches=1)
    assert [[t["index"] for t in targets] for _, targets in loader] == full[1:]
    set_loader_position(loader, epoch=3)
    assert [[t["index"] for t in targets] for _, targets in loader] != full  # a new shuffle per epoch


def test_data_that_does_not_fit_the_config_is_named(tmp_path):
    with pytest.raises(ConfigError, match="model.num_classes: 4 but the training data"):
        build_loaders(config_from_dict({"model": {"num_classes": 4}, "data": {"shapes_train_count": 4}}))
    with pytest.raises(ConfigError, match="train.batch_size: 16"):
        build_loaders(_cfg(batch_size=16))
    # a validation set is read with the training class names (its other classes are reported, not trained on)
    other = write_shapes(tmp_path / "other", count=2, image_size=48, min_size=10, max_size=30,
                         class_names=("circle", "hexagon"), progress=False)
    val = build_loaders(config_from_dict({"model": {"num_classes": 4, "width_mult": 0.125},
                                          "data": {"classes": ["circle", "square", "star"], "shapes_train_count": 4,
                                                   "val": str(other), "val_split": None},
                                          "train": {"batch_size": 2}})).val_source
    assert val.class_names == ("circle", "square", "star")
    assert all(int(lab) == 0 for i in range(len(val)) for lab in val.sample(i).labels)


def test_zoom_out_fill_is_the_input_mean():
    assert train_fill(_cfg()) == (124, 116, 104)
    bgr = config_from_dict({"model": {"channel_order": "bgr", "mean": [0.1, 0.2, 0.3]}})
    assert train_fill(bgr) == (76, 51, 26)


def test_holdout_validates_on_a_seeded_share_of_the_training_images():
    cfg = config_from_dict({"model": {"num_classes": 4, "width_mult": 0.125},
                            "data": {"classes": ["circle", "square", "star"], "shapes_train_count": 10,
                                     "holdout_fraction": 0.2, "val": None},
                            "train": {"batch_size": 2}})
    loaders = build_loaders(cfg)
    held = {loaders.val_source.sample(i).image_id for i in range(len(loaders.val_source))}
    trained = {loaders.train_source.sample(i).image_id for i in range(len(loaders.train_source))}
    assert len(held) == 2 and len(trained) == 8 and not held & trained
    again = build_loaders(cfg).val_source
    assert {again.sample(i).image_id for i in range(len(again))} == held  # seeded: the same split every run


def test_tiled_training_reads_windows_and_validates_tiled():
    cfg = config_from_dict({"model": {"num_classes": 4, "width_mult": 0.125},
                            "data": {"classes": ["circle", "square", "star"], "shapes_train_count": 3,
                                     "shapes_val_count": 2, "shapes_image_size": 600, "shapes_min_size": 10,
                                     "shapes_max_size": 30, "shapes_max_objects": 12, "augment": False,
                                     "tile_size": 200},
                            "train": {"batch_size": 2}})
    loaders = build_loaders(cfg)
    assert loaders.tile is not None and loaders.tile.size == 200
    assert len(loaders.train_source) > 3  # windows, not images
    images, targets = next(iter(loaders.train_loader))
    assert images.shape == (2, 3, 300, 300)
    for t in targets:  # a 200 px window resized to 300: objects keep 1.5x their native size, never shrink
        wh = t["boxes"][:, 2:] - t["boxes"][:, :2]
        assert len(wh) == 0 or float(wh.max()) <= 30 * 1.5 + 1e-3
    val_images, _ = next(iter(loaders.val_loader))
    assert isinstance(val_images, list) and val_images[0].shape == (3, 600, 600)  # whole images, tiled later
