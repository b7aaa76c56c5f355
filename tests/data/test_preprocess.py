"""The one preprocessing: image kinds -> pixels, the resize, normalisation (function and module), the eval transform."""

import numpy as np
import pytest
import torch
from PIL import Image

from ssdkit.config import ModelConfig
from ssdkit.data.preprocess import (
    InputNormalizer,
    SSDEvalTransform,
    normalize,
    resize_batch,
    resize_image,
    to_image_tensor,
)
from ssdkit.errors import SSDKitError

BOXES = torch.tensor([[50.0, 60.0, 200.0, 300.0], [250.0, 100.0, 480.0, 350.0]])
LABELS = torch.tensor([3, 1])


def _image(h=375, w=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


def test_eval_transform_exact_scaling():
    t = SSDEvalTransform(300)
    img = _image(375, 500)
    out, boxes, labels, ignore = t(img, BOXES, LABELS)
    assert out.shape == (3, 300, 300) and out.dtype == torch.uint8
    assert torch.allclose(boxes, BOXES * torch.tensor([0.6, 0.8, 0.6, 0.8]))
    assert torch.equal(labels, LABELS) and ignore.tolist() == [False] * 2
    assert torch.equal(out, resize_image(img, 300))  # the eval transform is the one resize
    ref = torch.nn.functional.interpolate(img[None].float(), size=(300, 300), mode="bilinear")[0]
    assert (out.float() - ref).abs().max() <= 1.0


def test_normalize_matches_manual():
    imgs = torch.randint(0, 256, (2, 3, 8, 9), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = (imgs.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    out = normalize(imgs, mean, std)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.allclose(out, ref, atol=1e-5)
    bgr = normalize(imgs, mean, std, channel_order="bgr")
    ref_bgr = (imgs.flip(1).float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(bgr, ref_bgr, atol=1e-5)
    cl = normalize(imgs, mean, std, memory_format=torch.channels_last)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.allclose(cl, ref, atol=1e-5)
    cfg = ModelConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), channel_order="bgr")
    assert torch.allclose(InputNormalizer(cfg)(imgs), (imgs.flip(1).float() / 255 - 0.5) / 0.25, atol=1e-5)
    # the module and the function are the same arithmetic, bit for bit, for uint8 and float 0-255 input
    assert torch.equal(InputNormalizer(cfg)(imgs), normalize(imgs, cfg.mean, cfg.std, cfg.channel_order))
    assert torch.equal(InputNormalizer(cfg)(imgs.float()), normalize(imgs, cfg.mean, cfg.std, cfg.channel_order))
    floats = imgs.float()
    normalize(floats, mean, std)
    assert torch.equal(floats, imgs.float())  # the input is never modified in place
    with pytest.raises(ValueError, match="channel_order"):
        normalize(imgs, mean, std, channel_order="hsv")


def test_image_kinds_become_the_same_pixels(tmp_path):
    arr = _image(20, 30).permute(1, 2, 0).contiguous().numpy()
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    ref = torch.from_numpy(arr).permute(2, 0, 1)
    for kind in (str(path), path, Image.fromarray(arr), arr, ref):
        got = to_image_tensor(kind)
        assert got.dtype == torch.uint8 and torch.equal(got, ref)
    gray = to_image_tensor(arr[:, :, 0])
    assert gray.shape == (3, 20, 30) and torch.equal(gray[0], gray[2])
    as_float = to_image_tensor(ref.float() / 255)
    assert as_float.dtype == torch.float32 and torch.allclose(as_float, ref.float(), atol=1e-4)


@pytest.mark.parametrize("bad, match", [
    (torch.full((3, 4, 4), 2.0), "0-1"),
    (torch.full((3, 4, 4), float("nan")), "finite"),
    (torch.zeros(4, 4, 3, dtype=torch.uint8), r"Tensor\[3, H, W\]"),
    (torch.zeros(3, 4, 4, dtype=torch.int32), "uint8"),
    (np.zeros((4, 4, 2), np.uint8), "HxWx3"),
    (42, "path, PIL image"),
])
def test_unsupported_images_are_user_errors(bad, match):
    with pytest.raises(SSDKitError, match=match):
        to_image_tensor(bad)


def test_resize_keeps_dtype_and_matches_torch():
    img = _image(37, 53)
    out = resize_image(img, 30)
    assert out.dtype == torch.uint8 and out.shape == (3, 30, 30)
    ref = torch.nn.functional.interpolate(img[None].float(), size=(30, 30), mode="bilinear")[0]
    assert (out.float() - ref).abs().max() <= 1.0
    f = resize_image(img.float(), 30, 20)
    assert f.dtype == torch.float32 and f.shape == (3, 30, 20)
    assert resize_image(img, 37, 53) is img  # nothing to do: the same tensor
    batch = resize_batch([img, _image(10, 12)], 16)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.uint8
    assert torch.equal(batch[1], resize_image(_image(10, 12), 16))
    assert resize_batch([img, img.float()], 16).dtype == torch.float32
    with pytest.raises(SSDKitError, match="at least one"):
        resize_batch([], 16)


def test_resize_batch_groups_same_shape_windows_bit_exactly():
    """Windows of one image (views, same shape) are resized in one call: equal to one at a time, in order."""
    scene = _image(90, 120, seed=3)
    views = [scene[:, y:y + 40, x:x + 40] for y in (0, 25, 50) for x in (0, 40, 80)]
    mixed = views[:4] + [_image(33, 47, seed=4)] + views[4:] + [views[0].float()]
    batch = resize_batch(mixed, 16)
    assert batch.dtype == torch.float32 and batch.shape == (len(mixed), 3, 16, 16)
    for out, im in zip(batch, mixed):
        assert torch.equal(out, resize_image(im, 16).float())
    uint8 = resize_batch(views, 16)
    assert uint8.dtype == torch.uint8
    assert torch.equal(uint8, torch.stack([resize_image(v, 16) for v in views]))
