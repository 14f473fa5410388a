"""Inference throughput of the built-in networks through the model contract (``predict``).

CPU: ERFNet at 1024x512 (its input size) and DeepLabV3+ R101-OS8 at a size that fits
(default 512x256), fp32, contiguous vs channels_last, measured side by side (median of
repeats); the ratios are what to compare, since absolute times on a shared machine are noisy.
GPU (when one is found): both networks at 2048x1024, fp32 vs bf16 autocast + channels_last.

    python benchmarks/bench_models.py [--repeats 5] [--deeplab-size 512x256] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import sml.models as M

SHARED = Path(os.environ.get("SML_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def make_models(device: str) -> dict[str, M.SegmentationModel]:
    weights = SHARED / "models" / "erfnet_cityscapes.pth"
    if weights.is_file():
        erfnet = M.load("erfnet", weights=weights, device=device)
    else:  # timing does not depend on the values
        erfnet = M.SegmentationModel(M.build("erfnet", num_classes=20), name="erfnet", input_size=(512, 1024),
                                     class_channels=range(19), device=device)
    torch.manual_seed(0)
    deeplab = M.SegmentationModel(M.build("deeplabv3plus_r101_os8"), name="deeplabv3plus_r101_os8",
                                  mean=M.IMAGENET_MEAN, std=M.IMAGENET_STD, num_classes=19, device=device)
    return {"erfnet": erfnet, "deeplabv3plus_r101_os8": deeplab}


def run_variants(models, sizes, variants, repeats, sync) -> list[tuple]:
    rows = []
    for name, model in models.items():
        h, w = sizes[name]
        image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        # Interleave variants per repeat round so load changes hit all of them alike.
        per = {v: [] for v in variants}
        for kw in variants.values():  # warm-up (first-call allocations, cuDNN autotuning)
            model.predict(image, **kw)
        sync()
        for _ in range(repeats):
            for v, kw in variants.items():
                t0 = time.perf_counter()
                model.predict(image, **kw)
                sync()
                per[v].append(time.perf_counter() - t0)
        base = statistics.median(per[next(iter(variants))])
        for v in variants:
            t = statistics.median(per[v])
            rows.append((name, f"{w}x{h}", v, 1 / t, base / t))
    return rows


def print_table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}")
    print(f"{'network':<24} {'image WxH':<10} {'variant':<26} {'frames/s':>9} {'speed-up':>9}")
    for name, size, v, fps, ratio in rows:
        print(f"{name:<24} {size:<10} {v:<26} {fps:9.3f} {ratio:8.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--deeplab-size", default="512x256", help="WxH of the DeepLabV3+ input on the CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dw, dh = (int(v) for v in args.deeplab_size.lower().split("x"))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, repeats {args.repeats} (median)")
    models = make_models("cpu")
    cpu_rows = run_variants(models, {"erfnet": (512, 1024), "deeplabv3plus_r101_os8": (dh, dw)},
                            {"fp32": {}, "fp32 channels_last": {"channels_last": True}}, args.repeats, lambda: None)
    print_table("CPU (predict: uint8 image in, float32 logits at image size out)", cpu_rows)
    if not torch.cuda.is_available():
        print("\nGPU: no CUDA GPU found; the GPU comparison (2048x1024, fp32 vs bf16 autocast + channels_last) "
              "was skipped.")
        return 0
    dev = torch.cuda.get_device_name(0)
    models = {k: m.to("cuda") for k, m in models.items()}
    gpu_rows = run_variants(models, {k: (1024, 2048) for k in models},
                            {"fp32": {}, "bf16 + channels_last": {"amp": True, "channels_last": True}},
                            args.repeats, torch.cuda.synchronize)
    print_table(f"GPU: {dev}", gpu_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
