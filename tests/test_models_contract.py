"""The model contract: input forms, resizing in and out (models.md), channels, sliding windows, wrapping."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import sml.models as M
from sml.errors import InputError


def rng_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class Identity3(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def pointwise(seed: int = 0, k: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, k, 1))


def test_identity_network_returns_the_image_in_unit_range():
    model = M.wrap(Identity3(), class_names=["r", "g", "b"])
    img = rng_image(13, 17)
    out = model.predict(img)
    expected = img.astype(np.float64).transpose(2, 0, 1)[None] / 255.0
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)


def test_resize_in_before_normalization_and_out_bilinear():
    net = pointwise()
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    model = M.wrap(net, input_size=(24, 40), mean=mean, std=std, num_classes=5)
    img = rng_image(50, 70)
    out = model.predict(img)
    # Literal models.md: float [0,1] -> antialiased bilinear to input size -> normalize -> net -> bilinear up.
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
    x = F.interpolate(x, size=(24, 40), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        y = copy.deepcopy(net).double()(x)
    ref = F.interpolate(y, size=(50, 70), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)
    # output_size picks the resolution of the returned logits.
    assert model.predict(img, output_size=(25, 35)).shape == (1, 5, 25, 35)


def test_class_channels_select_and_order():
    model = M.wrap(Identity3(), class_channels=[2, 0], class_names=["blue", "red"])
    img = rng_image(8, 9)
    out = model.predict(img).numpy()[0]
    np.testing.assert_allclose(out[0], img[..., 2] / 255.0, atol=1e-6)
    np.testing.assert_allclose(out[1], img[..., 0] / 255.0, atol=1e-6)
    assert model.num_classes == 2 and model.class_names == ["blue", "red"]
    bad = M.wrap(Identity3(), class_channels=[0, 5])
    with pytest.raises(InputError, match="class_channels"):
        bad.predict(img)


def test_input_forms_agree():
    model = M.wrap(pointwise(), num_classes=5)
    imgs = [rng_image(20, 30, s) for s in range(3)]
    ref = torch.cat([model.predict(i) for i in imgs])
    stacked = np.stack(imgs)
    for form in (stacked, imgs, torch.from_numpy(stacked), torch.from_numpy(stacked).permute(0, 3, 1, 2)):
        torch.testing.assert_close(model.predict(form, batch_size=2), ref)
    assert model.predict(imgs[0]).shape == (1, 5, 20, 30)


def test_mixed_sizes_need_output_size():
    model = M.wrap(pointwise(), input_size=(16, 16), num_classes=5)
    imgs = [rng_image(20, 30), rng_image(40, 24, 1)]
    with pytest.raises(InputError, match="output_size"):
        model.predict(imgs)
    out = model.predict(imgs, output_size=(10, 12))
    torch.testing.assert_close(out[1:], model.predict(imgs[1], output_size=(10, 12)))


def test_bad_inputs_are_named():
    model = M.wrap(pointwise(), num_classes=5)
    with pytest.raises(InputError, match="uint8"):
        model.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InputError, match="H x W x 3"):
        model.predict(np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="CUDA"):
        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        model.to("cuda")
    with pytest.raises(InputError):
        M.wrap(pointwise(), mean=(0.5, 0.5, 0.5), num_classes=5)


def test_batch_size_amp_channels_last():
    model = M.wrap(pointwise(), input_size=(32, 32), num_classes=5)
    imgs = np.stack([rng_image(40, 48, s) for s in range(5)])
    ref = model.predict(imgs, batch_size=5)
    torch.testing.assert_close(model.predict(imgs, batch_size=2), ref)
    torch.testing.assert_close(model.predict(imgs, channels_last=True), ref, rtol=1e-5, atol=1e-5)
    out = model.predict(imgs[:1])
    out.add_(1)  # an ordinary tensor, not an inference tensor
    assert not out.requires_grad
    amp = model.predict(imgs, amp=True)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, ref, rtol=0.05, atol=0.05)  # bf16 has ~3 significant digits


def test_sliding_window_equals_whole_image_for_a_pointwise_network():
    model = M.wrap(pointwise(), num_classes=5)
    img = rng_image(50, 77)
    whole = model.predict(img)
    slid = model.predict(img, sliding_window=True, window=(20, 32), overlap=0.5, batch_size=3)
    torch.testing.assert_close(slid, whole, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="window"):
        model.predict(img, sliding_window=True)


def test_sliding_window_averages_overlaps():
    class Ones(nn.Module):  # every window contributes 1 + its own mean; the average is checked literally
        def forward(self, x):
            return torch.ones_like(x[:, :1]) + x.mean(dim=(1, 2, 3), keepdim=True)

    model = M.wrap(Ones(), input_size=(10, 10), num_classes=1)
    img = rng_image(10, 25)
    out = model.predict(img, sliding_window=True, overlap=0.5)[0, 0].numpy()
    x = img.astype(np.float64) / 255
    acc = np.zeros((10, 25)); cnt = np.zeros((10, 25))
    for s in (0, 5, 10, 15):  # stride 5 and the last window aligned to the end
        acc[:, s:s + 10] += 1 + x[:, s:s + 10].mean(); cnt[:, s:s + 10] += 1
    np.testing.assert_allclose(out, acc / cnt, rtol=1e-5)


def test_logits_allows_gradients_for_training_reuse():
    net = pointwise()
    model = M.wrap(net, num_classes=5)
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    model.logits(x).sum().backward()
    assert x.grad is not None
    assert all(p.requires_grad and p.grad is not None for p in net.parameters())  # wrapping froze nothing


def test_preprocess_matches_contract():
    model = M.wrap(Identity3(), input_size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=3)
    x = model.preprocess(np.full((16, 16, 3), 255, np.uint8))
    assert x.shape == (1, 3, 8, 8) and torch.allclose(x, torch.ones_like(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_file_wraps_and_loads(tmp_path):
    net = pointwise()
    torch.jit.trace(net.eval(), torch.zeros(1, 3, 16, 16)).save(str(tmp_path / "net.pt"))
    img = rng_image(16, 24)
    ref = M.wrap(net, num_classes=5).predict(img)
    ts = M.wrap(tmp_path / "net.pt", input_size=(16, 24))
    assert ts.num_classes == 5 and ts.name == "net"
    torch.testing.assert_close(ts.predict(img), ref)
    with pytest.raises(InputError, match="model card"):  # a file model needs a card in load()
        M.load(str(tmp_path / "net.pt"))


def test_onnx_file_wraps(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 3, 1, 1)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model_proto.ir_version = 8
    onnx.save(model_proto, tmp_path / "conv.onnx")
    model = M.wrap(tmp_path / "conv.onnx", class_names=list("abcd"))
    img = rng_image(12, 14)
    out = model.predict(img).numpy()
    x = img.astype(np.float64).transpose(2, 0, 1) / 255
    ref = np.einsum("oc,chw->ohw", w[:, :, 0, 0].astype(np.float64), x) + b[:, None, None]
    np.testing.assert_allclose(out[0], ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="sml models card"):
        M.load(str(tmp_path / "conv.onnx"))


def test_registry_and_user_models():
    assert {"erfnet", "deeplabv3plus_r50_os8", "deeplabv3plus_r50_os16", "deeplabv3plus_r101_os8",
            "deeplabv3plus_r101_os16"} <= set(M.list_models())
    M.register_model("tiny_test_net", lambda num_classes=19: nn.Conv2d(3, num_classes, 1),
                     {"input_size": (8, 8)}, description="test")
    assert M.get_config("tiny_test_net").input_size == (8, 8)
    assert isinstance(M.build("tiny_test_net", num_classes=3), nn.Conv2d)
    with pytest.raises(InputError, match="unknown model"):
        M.build("no_such_net")
    with pytest.raises(InputError, match="weights"):
        M.load("tiny_test_net")


def test_exported_program_wraps(tmp_path):
    net = pointwise().eval()
    ep = torch.export.export(net, (torch.zeros(1, 3, 16, 16),))
    torch.export.save(ep, str(tmp_path / "net.pt2"))
    img = rng_image(16, 16)
    torch.testing.assert_close(M.wrap(tmp_path / "net.pt2").predict(img), M.wrap(net, num_classes=5).predict(img))


def test_wrapped_modules_keep_their_layout_registry_networks_run_channels_last_on_cpu():
    """wrap() leaves the caller's module alone; built-in networks default to channels-last on the CPU."""
    net = pointwise()
    model = M.wrap(net, num_classes=5)
    assert not model.cpu_channels_last
    model.predict(rng_image(20, 24))
    assert all(p.is_contiguous() for p in net.parameters())  # the caller's module, untouched
    torch.manual_seed(0)
    conv3 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1))
    built = M.SegmentationModel(conv3, num_classes=5, cpu_channels_last=True)
    img = rng_image(20, 24)
    out = built.predict(img)
    conv = built.network[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert out.is_contiguous()  # callers get the standard layout either way
    assert torch.equal(out, built.predict(img, channels_last=True))
    torch.testing.assert_close(out, built.predict(img, channels_last=False), rtol=1e-5, atol=1e-5)
    assert built.network[0].weight.is_contiguous()  # an explicit False switches back


@pytest.mark.parametrize("resize,flt", [("pil-bilinear", Image.Resampling.BILINEAR),
                                        ("pil-bicubic", Image.Resampling.BICUBIC)])
@pytest.mark.parametrize("size", [(24, 40), (70, 90), (31, 120)])  # down, up, and down in one axis up in the other
def test_pil_resize_is_pils_own_filter_bit_for_bit(resize, flt, size):
    img = rng_image(50, 70, seed=3)
    expected = np.asarray(Image.fromarray(img).resize((size[1], size[0]), flt))
    for scale in (1, 255):
        model = M.wrap(Identity3(), input_size=size, class_names=["r", "g", "b"], resize=resize, scale=scale)
        x = model.preprocess(img)[0].permute(1, 2, 0).numpy()
        got = x * 255 if scale == 1 else x
        np.testing.assert_array_equal(np.rint(got).astype(np.uint8), expected)
        assert np.abs(got - np.rint(got)).max() < 1e-4  # whole grey levels: nothing resized after PIL
    # BGR reorders after PIL's resize, on PIL's pixels
    bgr = M.wrap(Identity3(), input_size=size, class_names=["b", "g", "r"], resize=resize, scale=255,
                 channel_order="BGR")
    np.testing.assert_array_equal(bgr.preprocess(img)[0].permute(1, 2, 0).numpy().astype(np.uint8),
                                  expected[..., ::-1])
    # torch's own bilinear differs from PIL's (models.md): the control that the modes are distinct
    torch_model = M.wrap(Identity3(), input_size=size, class_names=["r", "g", "b"], scale=255)
    assert not np.array_equal(np.rint(torch_model.preprocess(img)[0].permute(1, 2, 0).numpy()), expected)


def test_zero_pixel_images_and_empty_batches_are_refused():
    model = M.wrap(Identity3(), class_names=["r", "g", "b"])
    for images, shape in ((np.zeros((0, 7, 3), np.uint8), r"\(0, 7, 3\) has 0x7"),
                          ([rng_image(4, 4), np.zeros((5, 0, 3), np.uint8)], r"\(5, 0, 3\) has 5x0"),
                          (torch.zeros(2, 3, 6, 0, dtype=torch.uint8), r"\(2, 3, 6, 0\) has 6x0")):
        with pytest.raises(InputError, match=shape + r" \(HxW\) pixels"):
            model.predict(images)
        with pytest.raises(InputError, match=shape):
            model.preprocess(images)
    with pytest.raises(InputError, match=r"a batch of shape \(0, 4, 4, 3\) holds no image"):
        model.predict(np.zeros((0, 4, 4, 3), np.uint8))


def test_mean_std_outside_the_scale_are_refused_by_the_contract():
    with pytest.raises(InputError, match=r"net: mean is \[123\.675, 116\.28, 103\.53\] but scale is 1"):
        M.wrap(Identity3(), name="net", num_classes=3, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    with pytest.raises(InputError, match=r"std is \[0\.229, 0\.224, 0\.225\] but scale is 255"):
        M.wrap(Identity3(), num_classes=3, scale=255, mean=(0, 0, 0), std=(0.229, 0.224, 0.225))
    assert M.wrap(Identity3(), num_classes=3, scale=255, mean=(0, 0, 0), std=(1, 1, 1)).std == (1, 1, 1)
