"""Validation during training: mean IoU of the network on labelled frames, sharded over processes."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sml.train.frames import Frames
from sml.train.network import CITYSCAPES_EVAL_CLASSES, bn_frozen, set_train_mode, split_output
from sml.train.transforms import normalize_batch
from sml.utils import distributed as du
from sml.utils.progress import progress


@torch.no_grad()
def evaluate_miou(net: nn.Module, frames: Frames, device: torch.device, normalize: str,
                  num_classes: int, size: list[int] | None = None, max_frames: int | None = None,
                  ignore_index: int = 255, desc: str = "val") -> dict[str, Any]:
    """Mean IoU of ``net`` on ``frames`` (sharded over processes): ``{"miou", "iou", "pixel_acc", "frames"}``.

    Images are resized to ``size`` (h, w) with the normative antialiased bilinear
    resize when given; logits go back to the label size bilinearly.
    """
    was_training = net.training
    net.eval()
    k = min(num_classes, CITYSCAPES_EVAL_CLASSES) if num_classes >= CITYSCAPES_EVAL_CLASSES else num_classes
    conf = torch.zeros(k * k, dtype=torch.int64)
    n = len(frames) if max_frames is None else min(len(frames), max_frames)
    for i in progress(du.shard_indices(n), total=len(range(du.rank(), n, du.world_size())), desc=desc):
        image, labels = frames.load(i)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255).to(device)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        logits, _ = split_output(net(normalize_batch(x, normalize)))
        logits = F.interpolate(logits.float(), size=labels.shape, mode="bilinear", align_corners=False)
        pred = logits[0, :k].argmax(0).cpu().view(-1)
        lab = torch.from_numpy(labels.astype(np.int64)).view(-1)
        ok = lab < k
        conf += torch.bincount(lab[ok] * k + pred[ok], minlength=k * k)
    conf = sum(du.all_gather_object(conf))   # type: ignore[assignment]
    conf = conf.view(k, k).double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    if was_training:
        set_train_mode(net, bn_frozen(net))
    return {"miou": float(np.nanmean(iou.numpy())) if bool((union > 0).any()) else float("nan"),
            "iou": [None if math.isnan(v) else float(v) for v in iou.tolist()],
            "pixel_acc": float(tp.sum() / conf.sum().clamp_min(1)), "frames": n}
