"""The training loss: cross entropy over valid pixels (+ the auxiliary head's), exact under DDP."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sml.utils import distributed as du


def segmentation_loss(main: torch.Tensor, aux: torch.Tensor | None, labels: torch.Tensor, aux_weight: float,
                      ignore_index: int, valid_total: torch.Tensor | None = None) -> torch.Tensor:
    """Cross entropy (+ ``aux_weight`` x the auxiliary head's, labels resized nearest to its size).

    Each term is a sum over valid pixels divided by ``valid_total`` (this batch's
    count of valid pixels over *all* processes, default: the local count), so
    that averaging gradients over processes gives exactly the global-batch mean.
    """
    def term(logits: torch.Tensor, lab: torch.Tensor, total: torch.Tensor | None) -> torch.Tensor:
        if logits.shape[-2:] != lab.shape[-2:]:
            logits = F.interpolate(logits, size=lab.shape[-2:], mode="bilinear", align_corners=False)
        s = F.cross_entropy(logits.float(), lab, ignore_index=ignore_index, reduction="sum")
        n = total if total is not None else (lab != ignore_index).sum()
        return s / n.clamp_min(1).to(s.dtype)

    loss = term(main, labels, valid_total)
    if aux is not None and aux_weight > 0:
        aux_lab = F.interpolate(labels[:, None].float(), size=aux.shape[-2:], mode="nearest")[:, 0].long()
        aux_total = None
        if valid_total is not None:   # the aux labels have their own global valid count
            aux_total = global_sum((aux_lab != ignore_index).sum())
        loss = loss + aux_weight * term(aux, aux_lab, aux_total)
    return loss


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over all processes (``t`` itself on one process)."""
    if du.is_distributed():
        t = t.clone()
        torch.distributed.all_reduce(t)
    return t
