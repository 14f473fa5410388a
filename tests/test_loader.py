"""Batches and decoding workers (sml.pipelines.loader): order, grouping by size, errors at their frame,
and `sml eval` / `sml stats` results that do not depend on --batch-size or --workers."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sml.cli.main import main
from sml.errors import DataError, InputError
from test_pipeline_fixtures import _image, interrupt_forward_after, make_cityscapes, make_model

METHODS = "sml,max_logit,msp,entropy,energy"
#: image sizes (H, W) of the mixed folder, frame by frame: batches must close where the size changes
SIZES = [(32, 48), (32, 48), (32, 48), (40, 56), (40, 56), (32, 48), (32, 48)]


def make_mixed(root: Path, sizes: list[tuple[int, int]] = SIZES, seed: int = 3) -> Path:
    """A folder: data set (images/ + labels/, values 0/1/255) whose frames have the sizes ``sizes``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(_image(rng, h, w)).save(root / "images" / f"f{i:02d}.png")
        lab = np.zeros((h, w), np.uint8)
        y, x = rng.integers(2, h - 12), rng.integers(2, w - 12)
        lab[y:y + 8, x:x + 9] = 1
        lab[:2] = 255
        Image.fromarray(lab).save(root / "labels" / f"f{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("loader")
    s = {"base": base, "model": make_model(base), "mixed": make_mixed(base / "mixed"),
         "cs": make_cityscapes(base / "cs", n=5)}
    assert main(["stats", "--model", str(s["model"]), "--data", f"cityscapes:{s['cs']}",
                 "-o", str(base / "stats.json")]) == 0
    s["stats"] = base / "stats.json"
    return s


def _open(root: Path):  # noqa: ANN202
    import sml.data

    return sml.data.open_dataset(f"folder:{root}")


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("batch_size, groups", [
    (1, [[0], [1], [2], [3], [4], [5], [6]]),
    (2, [[0, 1], [2], [3, 4], [5, 6]]),
    (8, [[0, 1, 2], [3, 4], [5, 6]]),
])
def test_batches_keep_order_and_close_at_a_size_change(setup: dict[str, Path], workers: int, batch_size: int,
                                                       groups: list[list[int]]) -> None:
    from sml.pipelines import common, loader

    ds = _open(setup["mixed"])
    timer = common.Timer()
    got = list(loader.batches(ds, list(range(len(ds))), loader.Loading(batch_size, workers), timer=timer))
    assert [b.indices for b in got] == groups
    for b in got:
        assert len({tuple(s.image.shape) for s in b.samples}) == 1 and len(b.images) == len(b)
        assert b.output_size == SIZES[b.indices[0]]
        for i, s, im in zip(b.indices, b.samples, b.images):
            want = ds[i]
            assert s.id == want.id and s.image_path == want.image_path
            np.testing.assert_array_equal(s.image, want.image)
            np.testing.assert_array_equal(np.asarray(im), want.image)
            np.testing.assert_array_equal(s.labels, want.labels)
    assert timer.seconds["decode"] > 0
    # a subset, in the order given (a torchrun shard): the same grouping rule on those frames
    sub = [b.indices for b in loader.batches(ds, [6, 0, 1, 3], loader.Loading(batch_size, workers))]
    assert sub == ([[6], [0], [1], [3]] if batch_size == 1 else [[6, 0, 1], [3]] if batch_size == 8
                   else [[6, 0], [1], [3]])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_frame_is_refused_at_its_place_naming_the_file(tmp_path: Path, workers: int) -> None:
    from sml.pipelines import loader

    root = make_mixed(tmp_path / "m", sizes=[(32, 48)] * 5)
    bad = root / "images" / "f03.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    ds = _open(root)
    it = loader.batches(ds, list(range(5)), loader.Loading(2, workers))
    assert next(it).indices == [0, 1]
    assert next(it).indices == [2]  # the frames before the broken one come first
    with pytest.raises(DataError, match=r"cannot decode .*f03\.png") as err:
        next(it)
    assert "Traceback" not in str(err.value) and "worker" not in str(err.value)


def test_eval_refuses_a_corrupt_frame_from_a_worker(setup: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`sml eval --workers 2`: one `sml: error:` paragraph naming the file, no traceback; the frames before it
    (in its batch too) were scored and saved first, as without workers."""
    root = make_mixed(tmp_path / "m", sizes=[(32, 48)] * 4)
    bad = root / "images" / "f02.png"
    bad.write_bytes(bad.read_bytes()[:600])
    args = ["eval", "--model", str(setup["model"]), "--stats", str(setup["stats"]), "--data", f"folder:{root}",
            "--method", "sml,msp", "--out", str(tmp_path / "run"), "--batch-size", "3", "--workers", "2",
            "--save-every", "1"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "sml: error:" in err and "Traceback" not in err and "worker" not in err, err
    assert re.search(r"cannot decode .*images/f02\.png.*truncated", err), err
    assert len(list((tmp_path / "run" / ".partial" / "state").glob("*.npz"))) == 2  # frames 0 and 1
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_loading_settings_are_checked() -> None:
    from sml.pipelines import loader

    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="--batch-size"):
            loader.Loading(bad)
    for bad in (-1, 0.5):
        with pytest.raises(InputError, match="--workers"):
            loader.Loading(1, bad)
    assert loader.Loading(4).resolve("cpu") == loader.Loading(4, 0)
    assert loader.default_workers("cpu") == 0


def test_split_frames_of_a_batch() -> None:
    from sml.pipelines.common import split_frames

    x = torch.arange(24.0).reshape(3, 2, 2, 2)
    parts = split_frames(x, 3)
    assert [tuple(p.shape) for p in parts] == [(1, 2, 2, 2)] * 3 and torch.equal(torch.cat(parts), x)
    assert split_frames(x, 1)[0] is x

    @dataclasses.dataclass(frozen=True)
    class Out:  # an output object, as a mask-classification network's
        a: torch.Tensor
        b: torch.Tensor
        size: tuple[int, int]

    o = Out(torch.arange(6.0).reshape(3, 2), torch.arange(3.0).reshape(3, 1, 1), (4, 5))
    frames = split_frames(o, 3)
    assert [f.a.tolist() for f in frames] == [[[0.0, 1.0]], [[2.0, 3.0]], [[4.0, 5.0]]]
    assert [f.b.item() for f in frames] == [0.0, 1.0, 2.0] and frames[2].size == (4, 5)
    with pytest.raises(TypeError, match="cannot split"):
        split_frames([x], 2)


def test_forward_of_a_batch_equals_frame_by_frame(setup: dict[str, Path]) -> None:
    """A batch's logits are each frame's own, to float rounding: oneDNN's CPU convolutions pick their
    kernels by shape, batch size included, for some shapes (the tiny network's first convolution in its
    NCHW layout, ERFNet below about 256x512); ERFNet at its own 512x1024 input is bitwise batch-invariant
    (the slow test below). Arrays and tensors (what workers decode into) give the same batch, bit for bit."""
    import sml.models
    from sml.models.erfnet import ERFNet
    from sml.pipelines.common import forward

    ds = _open(setup["mixed"])
    images = [ds[i].image for i in range(3)]
    torch.manual_seed(0)
    erf = sml.models.wrap(ERFNet(num_classes=20).eval(), input_size=(64, 96), num_classes=19,
                          cpu_channels_last=True)
    for model in (erf, sml.models.load(str(setup["model"]))):
        one = torch.cat([forward(model, im, im.shape[:2]) for im in images])
        got = forward(model, images, images[0].shape[:2])
        assert got.shape == one.shape
        torch.testing.assert_close(got, one, rtol=1e-5, atol=1e-4)
        assert torch.equal(forward(model, [torch.from_numpy(im) for im in images], images[0].shape[:2]), got)
        assert torch.equal(forward(model, [torch.from_numpy(images[1])], images[1].shape[:2]), one[1:2])
    with pytest.raises(AssertionError):  # the check above can fail: frames out of order are not close
        torch.testing.assert_close(forward(model, images[::-1], images[0].shape[:2]), one, rtol=1e-5, atol=1e-4)


def _eval(s: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(s["model"]), "--stats", str(s["stats"]), "--data", f"folder:{s['mixed']}",
                 "--out", str(out), "--method", METHODS, "--save-maps", "npy", "--frame-ap", *extra])


def _close_runs(a: Path, b: Path, tol: float) -> None:
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma["pixels"] == mb["pixels"] and set(ma["methods"]) == set(mb["methods"])
    for m, r in ma["methods"].items():
        for k in ("auroc", "ap", "fpr95"):
            assert r[k] == pytest.approx(mb["methods"][m][k], abs=tol), (m, k)
    fa, fb = (json.loads((r / "frames.json").read_text()) for r in (a, b))
    assert [f["id"] for f in fa] == [f["id"] for f in fb] == [f"f{i:02d}" for i in range(len(SIZES))]
    for f in (a / "npy").rglob("*.npy"):
        np.testing.assert_allclose(np.load(f), np.load(b / f.relative_to(a)), rtol=1e-4, atol=1e-4)


def test_eval_with_batches_and_workers_equals_frame_by_frame(setup: dict[str, Path]) -> None:
    base = setup["base"]
    assert _eval(setup, base / "b1") == 0
    assert _eval(setup, base / "b3w2", "--batch-size", "3", "--workers", "2") == 0
    _close_runs(base / "b1", base / "b3w2", 1e-4)
    # a batch of one through the workers: the same arrays, bitwise the same run
    assert _eval(setup, base / "b1w2", "--workers", "2") == 0
    for name in ("metrics.json", "frames.json", "curves.json", "diagnostics.json"):
        a, b = (json.loads((base / r / name).read_text()) for r in ("b1", "b1w2"))
        if name == "metrics.json":
            a, b = a["methods"], b["methods"]
        assert a == b, name


def test_batched_eval_resumes(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted in its third batch (frames 0-2 saved, a chunk a frame), resumed at another batch size."""
    out = setup["base"] / "cut"
    with monkeypatch.context() as m:
        interrupt_forward_after(m, 2)  # batches [0, 1], [2], then [3, 4] dies
        assert _eval(setup, out, "--batch-size", "2", "--workers", "1", "--save-every", "1") == 130
    assert len(list((out / ".partial" / "state").glob("*.npz"))) == 3
    from sml.pipelines import common

    calls = {"frames": 0}
    real = common.forward

    def counting(model, images, size, **k):  # noqa: ANN001, ANN003, ANN202
        calls["frames"] += len(images) if isinstance(images, list) else 1
        return real(model, images, size, **k)

    monkeypatch.setattr(common, "forward", counting)
    assert _eval(setup, out, "--batch-size", "4", "--resume") == 0
    assert calls["frames"] == len(SIZES) - 3
    if not (setup["base"] / "b1").exists():
        assert _eval(setup, setup["base"] / "b1") == 0
    _close_runs(setup["base"] / "b1", out, 1e-4)


def test_stats_with_batches_and_workers(setup: dict[str, Path]) -> None:
    base = setup["base"]
    assert main(["stats", "--model", str(setup["model"]), "--data", f"cityscapes:{setup['cs']}", "-o",
                 str(base / "s3.json"), "--batch-size", "3", "--workers", "2"]) == 0
    a, b = (json.loads(p.read_text()) for p in (setup["stats"], base / "s3.json"))
    assert a["count"] == b["count"] and sum(a["count"]) == 5 * 32 * 64
    for k in ("mean", "var"):  # None for a class never predicted
        x, y = (np.array([np.nan if v is None else v for v in d[k]]) for d in (a, b))
        np.testing.assert_allclose(x, y, rtol=1e-5)


@pytest.mark.slow
def test_erfnet_batches_are_bitwise_frame_by_frame(shared: Path, tmp_path: Path) -> None:
    """ERFNet (channels-last on the CPU) on three Road Anomaly frames: every map and number of a run at
    batch size 3 with a decoding worker is that of batch size 1, bit for bit; the statistics too."""
    import sml.data
    import sml.models
    from sml.pipelines.evaluate import EvalConfig, evaluate
    from sml.pipelines.stats import compute_statistics

    model = sml.models.load("erfnet", weights=shared / "models" / "erfnet_cityscapes.pth")
    ds = sml.data.open_dataset(f"road-anomaly:{shared / 'data' / 'road_anomaly' / 'RoadAnomaly_jpg'}",
                               allow_subset=True)
    stats = [compute_statistics(model, ds, limit=3, show_progress=False, batch_size=b, workers=w).stats
             for b, w in ((1, 0), (3, 1))]
    for k in ("n", "mean", "m2"):
        np.testing.assert_array_equal(stats[0].state_dict()[k], stats[1].state_dict()[k])
    runs = [evaluate(model, ds, tmp_path / f"b{b}", EvalConfig(methods=METHODS.split(","), limit=3, frame_ap=True,
                                                              save_maps=["npy"], batch_size=b, workers=w),
                     stats=stats[0], show_progress=False) for b, w in ((1, 0), (3, 1))]
    assert runs[0].metrics["methods"] == runs[1].metrics["methods"] and runs[0].frames == runs[1].frames
    maps = sorted((tmp_path / "b1" / "npy").rglob("*.npy"))
    assert len(maps) == 15
    for f in maps:
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "b3" / f.relative_to(tmp_path / "b1")))


@pytest.mark.distributed
def test_torchrun_shards_with_batches_and_workers(setup: dict[str, Path], tmp_path: Path) -> None:
    """Two processes, each batching and decoding with a worker its own frames[rank::2]: the run of one
    process frame by frame (to float rounding: the tiny network's first convolution, see above)."""
    from test_distributed_pipelines import _sml

    args = ["eval", "--model", str(setup["model"]), "--stats", str(setup["stats"]), "--data", f"folder:{setup['mixed']}",
            "--method", METHODS, "--save-maps", "npy", "--frame-ap"]
    _sml([*args, "--out", str(tmp_path / "one")], 1, tmp_path)
    _sml([*args, "--out", str(tmp_path / "two"), "--batch-size", "2", "--workers", "1", "--save-every", "1"], 2,
         tmp_path)
    _close_runs(tmp_path / "one", tmp_path / "two", 1e-4)
