"""Synchronized batch norm that also works on the CPU (gloo).

``torch.nn.SyncBatchNorm`` refuses CPU tensors, but the distributed CPU run
(tests, CPU clusters) must give the same batch statistics as one process with
the global batch. :class:`GlobalBatchNorm2d` all-reduces per-channel sums and
squared sums with the autograd-aware ``torch.distributed.nn.all_reduce``, so
the backward pass also sums the statistics' gradients over processes, exactly
as SyncBatchNorm does. Parameter and buffer names are BatchNorm's, so
checkpoints are unchanged.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class GlobalBatchNorm2d(nn.modules.batchnorm._BatchNorm):
    """BatchNorm2d whose training statistics are over the batch of all processes."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected a 4D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xf = x.float()
        local_n = torch.tensor([xf.numel() // c], dtype=xf.dtype, device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), local_n])
        stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.num_batches_tracked.add_(1)   # type: ignore[union-attr]
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp_min(1)) * m)
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on accelerators; :class:`GlobalBatchNorm2d` on the CPU. Returns the module."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.BatchNorm2d):
        out = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
