"""SSD augmentation (train) and the eval resize, joint on (image, boxes).

The training transform draws from the distribution of the SSD paper's pipeline (Caffe SSD's data layer;
amdegroot ``ssd.pytorch``; torchvision's ``RandomPhotometricDistort + RandomZoomOut + RandomIoUCrop``):

1. photometric distortion (on the original image, so the expand fill stays undistorted),
2. zoom out: with ``expand_p`` place the image on a ``fill`` canvas ``U[1, max_expand]`` times its size,
3. min-IoU random crop of the canvas (or the whole canvas),
4. horizontal flip,
5. bilinear resize (no antialiasing, as Caffe's ``cv::resize``) to ``size x size``.

It never builds the canvas: the crop rectangle is computed in canvas coordinates, only the part of the
original image that the crop covers is resized, straight into its place in the ``size x size`` output,
and the rest is filled. The image part is snapped to whole output pixels and the boxes go through the
same snapped map, so pixels and boxes agree exactly; the geometry differs from resizing the full canvas
by under half an output pixel (and not at all without zoom-out). Photometric ops are pointwise, so they
are applied to whichever of (source part, resized part) has fewer pixels.

Outputs stay ``uint8``: :func:`ssdkit.data.preprocess.normalize` turns a batch into network input on the device.
The eval transform is the one preprocessing resize (:func:`ssdkit.data.preprocess.resize_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ssdkit.data.preprocess import check_sample, check_size, resize_image

__all__ = ["SSDTrainTransform"]

# How many (mode, 50 trials) rounds the crop may take before falling back to the whole canvas. The
# reference loops forever; None is always a valid mode, so in practice a handful of rounds suffice.
_MAX_CROP_ROUNDS = 100


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``float`` in ``[0, 255]`` -> rounded ``uint8`` (via int16: torch's direct float->uint8 cast is slow on CPU)."""
    return x.add_(0.5).to(torch.int16).to(torch.uint8)


# Per-channel offsets ``n + 1`` of the HSV->RGB formula (``n`` = 5, 3, 1 for R, G, B); see _saturation_hue.
_HUE_OFFSETS = torch.tensor([6.0, 4.0, 2.0]).view(3, 1, 1)


def _saturation_hue(x: torch.Tensor, saturation: float | None, hue: float | None) -> torch.Tensor:
    """HSV saturation scaling and hue rotation of a float RGB ``Tensor[3, h, w]`` in ``[0, 255]``, without HSV.

    Both keep V (the channel max ``M``), and hue and saturation are independent HSV coordinates, so they are
    applied together. With ``m`` the channel min and chroma ``C = M - m``: saturation ``S = C / M`` is scaled
    and clipped to 1 (as Caffe's 8-bit HSV saturates), i.e. ``C' = min(f C, M)``. Without a hue change every
    channel keeps its relative place between min and max. With one, channel ``n`` is the HSV->RGB formula
    ``M - C' clamp(min(k, 4 - k), 0, 1)``, ``k = (H + n) mod 6``, written as ``M - C' + C' clamp(d - 1, 0, 1)``
    with ``d`` the circular distance of ``k`` from 2 (no mod, no branches). Matches ``colorsys`` to 1e-3.
    ``x`` may be modified in place.
    """
    r, g, b = x[0], x[1], x[2]
    big = torch.maximum(torch.maximum(r, g), b)
    chroma = big - torch.minimum(torch.minimum(r, g), b)
    new_chroma = torch.minimum(chroma * saturation, big) if saturation is not None else chroma
    safe = chroma.clamp_min(1e-6)
    if hue is None:
        return x.sub_(big).mul_(new_chroma.div_(safe)).add_(big)
    # Hue in sextants, in [-1, 5]: which channel is the max picks the formula (first max wins, as in colorsys).
    is_r = big == r
    is_g = (big == g).logical_and_(~is_r)
    is_b = ~(is_r | is_g)
    h = (g - b).mul_(is_r)
    h.addcmul_((b - r).add_(chroma, alpha=2.0), is_g).addcmul_((r - g).add_(chroma, alpha=4.0), is_b)
    h.div_(safe).add_(hue / 60.0)
    # v = H + n + 1 lies in [0, 12); the circular distance of k from 2 is min(|v - 3|, |v - 9|).
    v = h.unsqueeze(0) + _HUE_OFFSETS
    w = torch.minimum((v - 3.0).abs_(), v.sub_(9.0).abs_()).sub_(1.0).clamp_(0.0, 1.0)
    return w.mul_(new_chroma).add_(big.sub_(new_chroma))


class SSDTrainTransform:
    """The SSD paper's training augmentation, joint on (image, boxes).

    Args:
        size: output side; the output is ``size x size``.
        fill: RGB ``uint8`` fill of the zoom-out canvas (the dataset mean, in pixels).
        max_expand: the canvas side is ``U[1, max_expand]`` times the image side.
        expand_p: probability of zooming out.
        min_ious: crop modes, drawn uniformly per round: ``None`` keeps the whole (expanded) image; a number
            ``t`` crops a patch whose IoU with a kept ground-truth box is ``>= t`` (``0.0`` = "randomly sample
            a patch" of the paper). The default is the paper's / Caffe SSD's / torchvision's set.
        max_trials: crop samples per round (all drawn at once); a round without a valid one redraws the mode.
        min_scale: crop width and height are each ``U[min_scale, 1]`` of the canvas's.
        aspect_range: allowed crop ``w / h`` (in pixels).
        iou_rule: ``'any'`` (Caffe, torchvision): some kept box reaches the threshold; ``'all'``: every
            ground-truth box does (what ssd.pytorch meant to do).
        flip_p: probability of a horizontal flip.
        photometric: apply the photometric distortion below.
        brightness_delta, contrast_range, saturation_range, hue_delta: Caffe SSD's distortion, each applied
            with probability ``photometric_p``: add ``U[-delta, delta]``; multiply by ``U[range]``; scale HSV
            saturation by ``U[range]``; rotate HSV hue by ``U[-hue_delta, hue_delta]`` degrees. Brightness comes
            first, then contrast either before or after saturation+hue (probability 1/2 each).
        channel_swap_p: probability of a random RGB channel permutation (ssd.pytorch's "lighting noise"; off
            in Caffe SSD's recipe).
        min_box_size: boxes whose output width or height is ``<= min_box_size`` pixels are dropped.

    Call: ``(image, boxes, labels, ignore=None, generator=None, return_params=False)`` with ``image``
    ``Tensor[3, H, W]`` uint8 RGB, ``boxes`` ``Tensor[M, 4]`` float xyxy image pixels, ``labels`` ``Tensor[M]``
    int64, ``ignore`` ``Tensor[M]`` bool. Returns ``(image Tensor[3, size, size] uint8, boxes Tensor[M', 4]
    float32 xyxy output pixels, labels Tensor[M'], ignore Tensor[M'])`` plus, with ``return_params``, a dict of
    the random draws (see :meth:`__call__`). Randomness comes from ``generator`` (torch's global one if None).
    The output image keeps the input's memory layout (``H x W x 3`` storage, as decoders give, stays so; see
    :func:`ssdkit.data.loader.collate`).
    """

    def __init__(
        self,
        size: int = 300,
        fill: Sequence[int] = (123, 117, 104),
        max_expand: float = 4.0,
        min_ious: Sequence[float | None] = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
        flip_p: float = 0.5,
        photometric: bool = True,
        *,
        expand_p: float = 0.5,
        max_trials: int = 50,
        min_scale: float = 0.3,
        aspect_range: tuple[float, float] = (0.5, 2.0),
        iou_rule: str = "any",
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
        photometric_p: float = 0.5,
        channel_swap_p: float = 0.0,
        min_box_size: float = 0.0,
    ) -> None:
        size = check_size(size)
        if len(fill) != 3 or any(not 0 <= v <= 255 for v in fill):
            raise ValueError(f"fill: expected 3 values in [0, 255], got {fill!r}")
        if max_expand < 1:
            raise ValueError(f"max_expand: must be >= 1, got {max_expand!r}")
        if not min_ious:
            raise ValueError("min_ious: expected at least one mode")
        if any(t is not None and not 0 <= t <= 1 for t in min_ious):
            raise ValueError(f"min_ious: thresholds must be None or in [0, 1], got {tuple(min_ious)}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale: must be in (0, 1], got {min_scale!r}")
        if iou_rule not in ("any", "all"):
            raise ValueError(f"iou_rule: expected 'any' or 'all', got {iou_rule!r}")
        if max_trials < 1:
            raise ValueError(f"max_trials: must be >= 1, got {max_trials!r}")
        self.size = size
        self.fill = tuple(int(v) for v in fill)
        self.max_expand = float(max_expand)
        self.expand_p = float(expand_p)
        self.min_ious = tuple(min_ious)
        self.max_trials = int(max_trials)
        self.min_scale = float(min_scale)
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.iou_rule = iou_rule
        self.flip_p = float(flip_p)
        self.photometric = bool(photometric)
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = float(hue_delta)
        self.photometric_p = float(photometric_p)
        self.channel_swap_p = float(channel_swap_p)
        self.min_box_size = float(min_box_size)
        self._fill = torch.tensor(self.fill, dtype=torch.uint8).view(3, 1, 1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, fill={self.fill}, max_expand={self.max_expand}, "
            f"min_ious={self.min_ious}, flip_p={self.flip_p}, photometric={self.photometric})"
        )

    # -- random parameters -------------------------------------------------------------------------------

    def _photometric_params(self, u: np.ndarray) -> dict[str, Any]:
        """Draw Caffe SSD's distortion from 12 uniforms ``u``."""
        p = self.photometric_p
        lo, hi = self.contrast_range
        slo, shi = self.saturation_range
        return {
            "brightness": float((2 * u[1] - 1) * self.brightness_delta) if u[0] < p else None,
            "contrast": float(lo + (hi - lo) * u[3]) if u[2] < p else None,
            "contrast_first": bool(u[4] < 0.5),
            "saturation": float(slo + (shi - slo) * u[6]) if u[5] < p else None,
            "hue": float((2 * u[8] - 1) * self.hue_delta) if u[7] < p else None,
            "channel_perm": tuple(int(i) for i in np.argsort(u[10:13])) if u[9] < self.channel_swap_p else None,
        }

    def _sample_crop(
        self, canvas_w: int, canvas_h: int, boxes: np.ndarray, generator: torch.Generator | None
    ) -> tuple[tuple[int, int, int, int], float | None, int]:
        """Min-IoU crop of the canvas: ``((x0, y0, x1, y1) canvas px, chosen threshold or None, rounds used)``."""
        n_modes, trials = len(self.min_ious), self.max_trials
        cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
        cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for rounds in range(1, _MAX_CROP_ROUNDS + 1):
            u = torch.rand(1 + 4 * trials, generator=generator, dtype=torch.float64).numpy()
            mode = self.min_ious[min(int(u[0] * n_modes), n_modes - 1)]
            if mode is None:
                return (0, 0, canvas_w, canvas_h), None, rounds
            u = u[1:].reshape(4, trials)
            span = 1.0 - self.min_scale
            w = (canvas_w * (self.min_scale + span * u[0])).astype(np.int64)
            h = (canvas_h * (self.min_scale + span * u[1])).astype(np.int64)
            x0 = ((canvas_w - w) * u[2]).astype(np.int64)
            y0 = ((canvas_h - h) * u[3]).astype(np.int64)
            ok = (w > 0) & (h > 0)
            aspect = w / np.maximum(h, 1)
            ok &= (aspect >= self.aspect_range[0]) & (aspect <= self.aspect_range[1])
            if len(boxes):
                x1, y1 = x0 + w, y0 + h
                # [T, M]: centre strictly inside the crop -> the box is kept.
                inside = (
                    (cx[None] > x0[:, None])
                    & (cx[None] < x1[:, None])
                    & (cy[None] > y0[:, None])
                    & (cy[None] < y1[:, None])
                )
                iw = np.minimum(boxes[None, :, 2], x1[:, None]) - np.maximum(boxes[None, :, 0], x0[:, None])
                ih = np.minimum(boxes[None, :, 3], y1[:, None]) - np.maximum(boxes[None, :, 1], y0[:, None])
                inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
                union = areas[None] + (w * h)[:, None] - inter
                iou = inter / np.maximum(union, 1e-12)
                ok &= inside.any(1)
                if self.iou_rule == "any":
                    ok &= np.where(inside, iou, -1.0).max(1) >= mode
                else:
                    ok &= iou.min(1) >= mode
            valid = np.flatnonzero(ok)
            if len(valid):
                i = valid[0]
                return (int(x0[i]), int(y0[i]), int(x0[i] + w[i]), int(y0[i] + h[i])), float(mode), rounds
        return (0, 0, canvas_w, canvas_h), None, _MAX_CROP_ROUNDS

    # -- pixels ------------------------------------------------------------------------------------------

    def _canvas(self, channels_last: bool) -> torch.Tensor:
        """``Tensor[3, size, size]`` uint8 of ``fill``, stored ``H x W x 3`` when ``channels_last``."""
        size = self.size
        if channels_last:
            return self._fill.view(1, 1, 3).expand(size, size, 3).clone().permute(2, 0, 1)
        return self._fill.expand(3, size, size).clone()

    @staticmethod
    def _distort(image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Apply drawn photometric ``params`` to ``Tensor[3, h, w]`` uint8; clips after each op as Caffe's uint8."""
        b, c, s, h = params["brightness"], params["contrast"], params["saturation"], params["hue"]
        perm = params["channel_perm"]
        if b is None and c is None and s is None and h is None:
            return image[list(perm)] if perm is not None else image
        x = image.float()
        if b is not None:
            x.add_(b).clamp_(0.0, 255.0)
        if c is not None and params["contrast_first"]:
            x.mul_(c).clamp_(0.0, 255.0)
        if s is not None or h is not None:
            x = _saturation_hue(x, s, h)
        if c is not None and not params["contrast_first"]:
            x.mul_(c).clamp_(0.0, 255.0)
        if perm is not None:
            x = x[list(perm)]
        return _to_uint8(x)

    def __call__(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        ignore: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_params: bool = False,
    ):
        """Augment one image; see the class docstring for shapes.

        With ``return_params`` a 5th value is a dict: ``expand`` (bool), ``expand_ratio``, ``expand_offset``
        ``(left, top)`` and ``canvas_size`` ``(w, h)`` (canvas px), ``min_iou`` (the chosen threshold, None =
        whole canvas), ``crop`` ``(x0, y0, x1, y1)`` canvas px, ``crop_rounds``, ``image_rect`` ``(x0, y0, x1,
        y1)``: where the original image's visible part lands in the output (px), ``source_rect`` the same part in
        original image px, ``flip`` (bool), ``photometric`` (dict of the drawn values, None = op skipped).
        """
        boxes, labels, ignore = check_sample(image, boxes, labels, ignore)
        _, height, width = image.shape
        size = self.size
        u = torch.rand(18, generator=generator, dtype=torch.float64).numpy()
        photo = self._photometric_params(u[:13]) if self.photometric else None

        # Zoom out (canvas only in coordinates). Same draw as ssd.pytorch's Expand / torchvision's RandomZoomOut.
        expand = bool(u[13] < self.expand_p)
        if expand:
            ratio = 1.0 + (self.max_expand - 1.0) * float(u[14])
            canvas_w, canvas_h = int(width * ratio), int(height * ratio)
            left, top = int((canvas_w - width) * u[15]), int((canvas_h - height) * u[16])
        else:
            ratio, canvas_w, canvas_h, left, top = 1.0, width, height, 0, 0

        b = boxes.double().numpy()
        # Boxes outside the image would map outside the pixels that carry them.
        b[:, 0::2] = b[:, 0::2].clip(0, width)
        b[:, 1::2] = b[:, 1::2].clip(0, height)
        b += (left, top, left, top)

        (x0, y0, x1, y1), min_iou, rounds = self._sample_crop(canvas_w, canvas_h, b, generator)
        if min_iou is not None:
            cx, cy = (b[:, 0] + b[:, 2]) * 0.5, (b[:, 1] + b[:, 3]) * 0.5
            keep = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
        else:
            keep = np.ones(len(b), dtype=bool)

        # Visible part of the original image, in canvas px, then in output px (snapped to whole pixels).
        ix0, iy0 = max(x0, left), max(y0, top)
        ix1, iy1 = min(x1, left + width), min(y1, top + height)
        sx, sy = size / (x1 - x0), size / (y1 - y0)
        ox0, oy0 = round((ix0 - x0) * sx), round((iy0 - y0) * sy)
        ox1, oy1 = round((ix1 - x0) * sx), round((iy1 - y0) * sy)
        visible = ix1 > ix0 and iy1 > iy0 and ox1 > ox0 and oy1 > oy0

        if visible:
            part = image[:, iy0 - top : iy1 - top, ix0 - left : ix1 - left]
            pre = photo is not None and part.shape[1] * part.shape[2] < (ox1 - ox0) * (oy1 - oy0)
            if pre:
                part = self._distort(part, photo)
            part = resize_image(part, oy1 - oy0, ox1 - ox0)
            if photo is not None and not pre:
                part = self._distort(part, photo)
            if (ox0, oy0, ox1, oy1) == (0, 0, size, size):
                # Never hand back a view of the caller's image (no resize, no distortion happened).
                out = part.clone() if part.untyped_storage().data_ptr() == image.untyped_storage().data_ptr() else part
            else:
                out = self._canvas(channels_last=part.stride(0) == 1)
                out[:, oy0:oy1, ox0:ox1] = part
            # Same affine map as the pixels: visible canvas part -> [ox0, ox1) x [oy0, oy1).
            ax, ay = (ox1 - ox0) / (ix1 - ix0), (oy1 - oy0) / (iy1 - iy0)
        else:
            out = self._canvas(channels_last=image.stride(0) == 1)
            ax = ay = 0.0

        b = b[keep]
        b[:, 0::2] = (b[:, 0::2].clip(ix0, ix1) - ix0) * ax + ox0
        b[:, 1::2] = (b[:, 1::2].clip(iy0, iy1) - iy0) * ay + oy0

        flip = bool(u[17] < self.flip_p)
        if flip:
            out = out.flip(-1)
            b[:, 0::2] = size - b[:, 2::-2]

        b = b.clip(0.0, size)  # float round-off only
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        good = (w > self.min_box_size) & (h > self.min_box_size)
        keep_idx = torch.from_numpy(np.flatnonzero(keep)[good])
        out_boxes = torch.from_numpy(b[good]).float()
        result = (out, out_boxes, labels[keep_idx], ignore[keep_idx])
        if not return_params:
            return result
        params = {
            "expand": expand,
            "expand_ratio": ratio,
            "expand_offset": (left, top),
            "canvas_size": (canvas_w, canvas_h),
            "min_iou": min_iou,
            "crop": (x0, y0, x1, y1),
            "crop_rounds": rounds,
            "image_rect": (ox0, oy0, ox1, oy1) if visible else None,
            "source_rect": (ix0 - left, iy0 - top, ix1 - left, iy1 - top) if visible else None,
            "flip": flip,
            "photometric": photo,
        }
        return (*result, params)
