"""Engine tests: tiny configs (width 1/8 SSD300, batches of 2, a few iterations) so they run in CI on a CPU."""

from __future__ import annotations

from ssdkit.config import Config, config_from_dict


def tiny_config(output_dir, **sections) -> Config:
    """A run small enough for a loaded 2-core CI machine; ``sections`` update the model/data/train dicts."""
    data = {
        "model": {"num_classes": 9, "width_mult": 0.125, "batch_norm": True},
        "data": {"shapes_train_count": 4, "shapes_val_count": 2, "shapes_image_size": 64, "augment": True},
        "train": {
            "batch_size": 2, "epochs": 2, "lr": 0.01, "warmup_iterations": 2, "log_every": 1,
            "output_dir": str(output_dir), "eval_every": 0, "device": "cpu", "seed": 3,
        },
    }
    for name, values in sections.items():
        data[name].update(values)
    return config_from_dict(data)
