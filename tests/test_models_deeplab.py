"""DeepLabV3+: the published checkpoint layout loads name for name; dilation; output size; aux head."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sml.models as M
from sml.models.checkpoint import load_checkpoint

DTYPES = {"float32": torch.float32, "int64": torch.int64}


def read_layout(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    out = {}
    for line in path.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        dims = tuple(int(v) for v in re.findall(r"\d+", shape))
        out[name] = (dims, DTYPES[dtype])
    return out


@pytest.fixture(scope="module")
def layout(shared: Path):
    return read_layout(shared / "spec" / "deeplabv3plus_r101_os8.keys.txt")


@pytest.fixture(scope="module")
def published_ckpt(layout, tmp_path_factory):
    """A checkpoint in exactly the published layout: random values, module. prefix, numpy mean_iu."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, (shape, dtype) in layout.items():
        if dtype == torch.int64:
            sd[name] = torch.randint(0, 1000, shape, generator=g, dtype=torch.int64)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.01
    path = tmp_path_factory.mktemp("ckpt") / "r101_os8_base_cty.pth"
    torch.save({"state_dict": sd, "epoch": 63, "mean_iu": np.float64(0.803)}, path)
    return path, sd


def test_r101_os8_state_dict_matches_published_layout(layout):
    net = M.build("deeplabv3plus_r101_os8")
    ours = {"module." + k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    theirs = {k: v for k, v in layout.items() if not k.startswith("module.multi_scale.")}
    assert len(layout) == 703
    assert sorted(ours) == sorted(theirs)
    assert ours == theirs


def test_published_checkpoint_loads_from_path_alone(published_ckpt):
    path, sd = published_ckpt
    # Its NumPy mean_iu is allowed (scoped to the load): no trust flag (models.md)
    model = M.load(str(path))  # architecture read off the keys; multi_scale.* ignored
    assert model.name == "deeplabv3plus_r101_os8"
    assert model.num_classes == 19 and model.mean == M.IMAGENET_MEAN and model.input_size is None
    got = model.network.state_dict()
    for name, value in sd.items():
        key = name[len("module."):]
        if key.startswith("multi_scale."):
            assert key not in got
            continue
        assert torch.equal(got[key], value), key
    # The same through the zoo name with an explicit local path.
    model2 = M.load("deeplabv3plus_r101_os8", weights=path)
    assert torch.equal(model2.network.final2[0].weight, sd["module.final2.0.weight"])


def test_bare_state_dict_without_module_prefix_loads(published_ckpt, tmp_path):
    _, sd = published_ckpt
    bare = {k[len("module."):]: v for k, v in sd.items()}
    torch.save(bare, tmp_path / "bare.pth")
    net = M.build("deeplabv3plus_r101_os8")
    M.load_into(net, load_checkpoint(tmp_path / "bare.pth"))
    assert torch.equal(net.layer4[2].conv3.weight, sd["module.layer4.2.conv3.weight"])


@pytest.mark.parametrize("arch,os_,d3,d4", [("deeplabv3plus_r101_os8", 8, 2, 4),
                                             ("deeplabv3plus_r50_os16", 16, 1, 2)])
def test_dilation_and_output_stride(arch, os_, d3, d4):
    net = M.build(arch).eval()
    for stage, d in ((net.layer3, d3), (net.layer4, d4)):
        for i, block in enumerate(stage):
            stride = 2 if (d == 1 and i == 0) else 1
            assert block.conv2.dilation == (d, d) and block.conv2.padding == (d, d)
            assert block.conv2.stride == (stride, stride)
        assert stage[0].downsample[0].stride == ((2, 2) if d == 1 else (1, 1))
    rates = [f[0].dilation[0] for f in net.aspp.features[1:]]
    assert rates == ([12, 24, 36] if os_ == 8 else [6, 12, 18])
    feats = {}
    net.layer4.register_forward_hook(lambda m, i, o: feats.update(l4=o.shape))
    net.layer1.register_forward_hook(lambda m, i, o: feats.update(l1=o.shape))
    with torch.inference_mode():
        out = net(torch.randn(1, 3, 96, 128))
    assert out.shape == (1, 19, 96, 128)
    assert feats["l4"][2:] == (96 // os_, 128 // os_) and feats["l1"][2:] == (24, 32)


def test_aux_head_in_training_mode():
    net = M.build("deeplabv3plus_r50_os8", num_classes=7).train()
    main, aux = net(torch.randn(2, 3, 32, 48))
    assert main.shape == (2, 7, 32, 48) and aux.shape == (2, 7, 4, 6)
    (main.mean() + 0.4 * aux.mean()).backward()
    assert net.dsn[0].weight.grad is not None
    assert isinstance(net.dsn[3], torch.nn.Dropout2d) and net.dsn[3].p == 0.1
    net.eval()
    assert net(torch.randn(1, 3, 32, 48)).shape == (1, 7, 32, 48)


def test_pretrained_backbone_from_deep_stem_file(tmp_path):
    src = M.build("deeplabv3plus_r50_os8")
    trunk = {}
    stem = {"layer0.0.": "conv1.", "layer0.1.": "bn1.", "layer0.3.": "conv2.", "layer0.4.": "bn2.",
            "layer0.6.": "conv3.", "layer0.7.": "bn3."}
    for k, v in src.state_dict().items():
        for new, old in stem.items():
            if k.startswith(new):
                k = old + k[len(new):]
        if k.split(".")[0] in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "layer1", "layer2", "layer3", "layer4"):
            trunk[k] = v.clone()
    trunk["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(trunk, tmp_path / "resnet50_deep.pth")
    net = M.build("deeplabv3plus_r50_os8", pretrained_backbone=tmp_path / "resnet50_deep.pth")
    assert torch.equal(net.layer0[6].weight, src.layer0[6].weight)
    assert torch.equal(net.layer3[5].bn3.running_var, src.layer3[5].bn3.running_var)
    # A trunk of the wrong depth is named, not a PyTorch traceback.
    with pytest.raises(M.CheckpointError, match="missing"):
        M.build("deeplabv3plus_r101_os8", pretrained_backbone=tmp_path / "resnet50_deep.pth")


def test_predict_full_resolution_imagenet_normalization():
    torch.manual_seed(0)
    net = M.build("deeplabv3plus_r50_os16")
    model = M.SegmentationModel(net.eval(), name="d", mean=M.IMAGENET_MEAN, std=M.IMAGENET_STD, num_classes=19)
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = model.predict(img)
    assert out.shape == (1, 19, 40, 56) and out.dtype == torch.float32
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 - torch.tensor(M.IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(M.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        ref = net(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def literal_deeplab(sd: dict, x: torch.Tensor, depth_blocks=(3, 4, 6, 3), os_=16) -> torch.Tensor:
    """Slow functional DeepLabV3+ written from models.md's text, reading the state dict directly."""
    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    def cbr(t, conv, norm, stride=1, dil=1):
        w = sd[conv + ".weight"]
        pad = dil * (w.shape[-1] // 2)
        return F.relu(bn(F.conv2d(t, w, sd.get(conv + ".bias"), stride, pad, dil), norm))

    up = lambda t, size: F.interpolate(t, size=size, mode="bilinear", align_corners=True)  # noqa: E731
    size = x.shape[2:]
    t = cbr(x, "layer0.0", "layer0.1", stride=2)
    t = cbr(t, "layer0.3", "layer0.4")
    t = cbr(t, "layer0.6", "layer0.7")
    t = F.max_pool2d(t, 3, 2, 1)
    dil = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2)}[os_]
    strides = (1, 2, 2, 2)
    low = None
    for li, (n, d, s) in enumerate(zip(depth_blocks, dil, strides)):
        for b in range(n):
            p = f"layer{li + 1}.{b}"
            stride = s if (b == 0 and d == 1) else 1
            out = cbr(t, p + ".conv1", p + ".bn1")
            out = cbr(out, p + ".conv2", p + ".bn2", stride=stride, dil=d)
            out = bn(F.conv2d(out, sd[p + ".conv3.weight"]), p + ".bn3")
            idt = bn(F.conv2d(t, sd[p + ".downsample.0.weight"], stride=stride), p + ".downsample.1") \
                if p + ".downsample.0.weight" in sd else t
            t = F.relu(out + idt)
        if li == 0:
            low = t
    pooled = up(cbr(F.adaptive_avg_pool2d(t, 1), "aspp.img_conv.0", "aspp.img_conv.1"), t.shape[2:])
    rates = {8: (12, 24, 36), 16: (6, 12, 18)}[os_]
    branches = [pooled, cbr(t, "aspp.features.0.0", "aspp.features.0.1")]
    branches += [cbr(t, f"aspp.features.{i + 1}.0", f"aspp.features.{i + 1}.1", dil=r) for i, r in enumerate(rates)]
    a = cbr(torch.cat(branches, 1), "bot_aspp.0", "bot_aspp.1")
    dec = torch.cat([cbr(low, "bot_fine.0", "bot_fine.1"), up(a, low.shape[2:])], 1)
    dec = cbr(cbr(dec, "final1.0", "final1.1"), "final1.3", "final1.4")
    return up(F.conv2d(dec, sd["final2.0.weight"], sd["final2.0.bias"]), size)


@pytest.mark.parametrize("os_", [8, 16])
def test_forward_matches_a_literal_reading_of_the_spec(os_):
    torch.manual_seed(1)
    net = M.build(f"deeplabv3plus_r50_os{os_}", num_classes=5)
    with torch.no_grad():  # non-trivial BN statistics so that every term matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    net.eval()
    x = torch.randn(1, 3, 40, 56, dtype=torch.float64)
    sd = {k: v.double() for k, v in net.state_dict().items()}
    with torch.no_grad():
        ref = literal_deeplab(sd, x, os_=os_)
        out = net.double()(x)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
