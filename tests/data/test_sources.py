"""build_source: one way to open data by name or path, used by training, evaluation, check-data and anchors."""

import pytest

from ssdkit.config import DataConfig
from ssdkit.data.readers import VEDAI_CLASSES
from ssdkit.data.shapes import ShapesDataset, write_shapes
from ssdkit.data.sources import SanitizedSource, ShardSource, build_source
from ssdkit.errors import DataError


def test_shapes_spec_splits_and_classes():
    cfg = DataConfig(shapes_train_count=5, shapes_val_count=3)
    train, val = build_source("shapes", cfg, "train"), build_source("shapes", cfg, "val")
    assert isinstance(train, ShapesDataset) and (len(train), len(val)) == (5, 3)
    assert val.seed != train.seed  # held-out scenes are new images
    sub = build_source("shapes", cfg, "train", classes="circle, star")
    assert sub.class_names == ("circle", "star")
    with pytest.raises(DataError, match="shapes: class_names"):
        build_source("shapes", cfg, classes=["cat"])


def test_paths_formats_and_the_list_alias(tmp_path):
    write_shapes(tmp_path / "l", format="listfile", count=3, image_size=48, min_size=10, max_size=30,
                 val_fraction=0.0, progress=False)
    for fmt in (None, "list", "listfile"):
        src = build_source(str(tmp_path / "l" / "train.txt"), format=fmt, classes=tmp_path / "l" / "classes.txt")
        assert src.format == "listfile" and len(src) == 3
    with pytest.raises(DataError, match="no such file or folder"):
        build_source(str(tmp_path / "missing"))


def test_vedai_ignores_configured_class_lists(tmp_path):
    root = tmp_path / "VEDAI"
    (root / "Annotations512").mkdir(parents=True)
    (root / "Vehicules512").mkdir()
    src = build_source(str(root), DataConfig(classes=("a", "b")))
    assert src.class_names == VEDAI_CLASSES


def test_sanitized_and_shard_views_keep_names_and_order():
    base = ShapesDataset(6, seed=1, image_size=64, min_size=8, max_size=40)
    clean = SanitizedSource(base)
    assert clean.class_names == base.class_names and len(clean) == 6 and clean.scan() == []
    shard = ShardSource(base, range(1, 6, 2))
    assert len(shard) == 3 and shard.sample(1).image_id == base.sample(3).image_id
