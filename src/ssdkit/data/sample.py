"""The annotation record every reader returns, and the dataset protocol the rest of ssdkit consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Sample:
    """One annotated image.

    Attributes:
        image_id: unique id within the dataset (file stem for VOC/YOLO/VEDAI, the id for COCO).
        image_path: path of the image file, or ``None`` for generated images (``shapes``).
        width, height: image size in pixels (after EXIF orientation).
        boxes: ``Tensor[M, 4]`` float32, ``(x_min, y_min, x_max, y_max)`` in image pixels.
        labels: ``Tensor[M]`` int64, 0-based object classes (the coder adds 1; 0 is background).
        ignore: ``Tensor[M]`` bool, objects neither matched nor penalised (VOC ``difficult``, COCO ``iscrowd``).
        class_names: names of the object classes, index = label.
    """

    image_id: str
    image_path: str | None
    width: int
    height: int
    boxes: torch.Tensor
    labels: torch.Tensor
    ignore: torch.Tensor = None  # type: ignore[assignment]
    class_names: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)
        if self.ignore is None:
            self.ignore = torch.zeros(len(self.labels), dtype=torch.bool)
        self.ignore = torch.as_tensor(self.ignore, dtype=torch.bool).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.ignore)):
            raise ValueError(
                f"Sample {self.image_id}: boxes ({len(self.boxes)}), labels ({len(self.labels)}) and "
                f"ignore ({len(self.ignore)}) differ in length"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Problem:
    """One thing wrong in a dataset: where (file, element) and what; ``fixable`` ones training repairs."""

    file: str
    element: str
    message: str
    kind: str  # missing_image | unreadable | out_of_image | degenerate | unknown_class | duplicate_id | parse_error
    fixable: bool = False

    def __str__(self) -> str:
        where = f"{self.file}: {self.element}" if self.element else self.file
        return f"{where}: {self.message}"


@runtime_checkable
class DetectionSource(Protocol):
    """What training, evaluation and analysis need from a dataset.

    ``sample(i)`` is cheap (annotations only); ``load_image(i)`` returns ``Tensor[3, H, W]`` uint8 RGB,
    EXIF orientation applied, the same ``H, W`` as ``sample(i).height/width``.
    """

    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def sample(self, index: int) -> Sample: ...

    def load_image(self, index: int) -> torch.Tensor: ...
