"""Anomaly scores (spec 1) and the SML scorer against float64 NumPy / literal references."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.special import logsumexp, softmax

import sml
from sml.errors import InputError
from sml.scores import METHODS, SCORERS, SML, build_scorer, energy, entropy, max_and_argmax, max_logit, msp
from sml.scores.registry import DEFAULT_METHODS
from sml.scores import postprocess
from sml.scores.reference import literal_sml
from sml.stats import ClassStatistics

from test_postprocess import lit_smoothing, lit_suppression


def _logits(b=2, c=5, h=9, w=11, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g, dtype=torch.float64).mul(scale).float()


def _stats(c=5, seed=0):
    st_ = ClassStatistics(c)
    st_.update(_logits(4, c, 16, 16, seed=seed + 100))
    return st_


def test_plain_scores_match_float64_numpy():
    x = _logits()
    x64 = x.double().numpy()
    p = softmax(x64, axis=1)
    np.testing.assert_allclose(msp(x).numpy(), -p.max(1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(max_logit(x).numpy(), -x64.max(1), rtol=0, atol=0)
    np.testing.assert_allclose(entropy(x).numpy(), -(p * np.log(p)).sum(1), rtol=1e-5, atol=1e-6)
    for t in (1.0, 0.5, 3.0):
        np.testing.assert_allclose(energy(x, temperature=t).numpy(), -t * logsumexp(x64 / t, axis=1),
                                   rtol=1e-6, atol=1e-6)
    for f in (msp, max_logit, entropy, energy):
        out = f(x)
        assert out.dtype == torch.float32 and out.shape == (2, 9, 11)


def test_higher_is_more_anomalous():
    confident = torch.tensor([10.0, 0, 0])[None, :, None, None]
    unsure = torch.tensor([1.0, 0.9, 0.8])[None, :, None, None]
    for f in (msp, max_logit, entropy, energy):
        assert float(f(unsure)) > float(f(confident)), f.__name__


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    x = _logits().to(dtype)
    up = x.double()
    p = softmax(up.numpy(), axis=1)
    for f, want in ((msp, -p.max(1)), (entropy, -(p * np.log(p)).sum(1)), (max_logit, -up.numpy().max(1))):
        out = f(x)
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)
    stats = _stats()
    got = SML(stats)(x)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), SML(stats)(x.float()).numpy(), rtol=1e-5, atol=1e-5)


def test_extreme_logits_stay_finite():
    x = torch.tensor([1e4, -1e4, 0.0])[None, :, None, None]
    for f in (msp, entropy, energy, max_logit):
        assert torch.isfinite(f(x)).all()
    assert float(entropy(x)) == pytest.approx(0.0, abs=1e-6)


def test_max_and_argmax_equals_torch_max_including_ties():
    x = torch.randint(0, 3, (2, 7, 13, 17)).float()  # many ties
    v, i = max_and_argmax(x)
    tv, ti = torch.max(x, dim=1)
    assert torch.equal(v, tv) and torch.equal(i.long(), ti)
    np.testing.assert_array_equal(i.numpy(), np.argmax(x.numpy(), axis=1))  # first index on ties
    x = _logits(1, 300, 3, 4)
    v, i = max_and_argmax(x)
    assert i.dtype == torch.int64 and torch.equal(i, torch.max(x, 1).indices)


def test_invalid_logits():
    stats = _stats()
    for f in (msp, max_logit, entropy, energy, SML(stats)):
        with pytest.raises(InputError, match="B x C x H x W"):
            f(torch.randn(5, 4, 4))
        with pytest.raises(InputError, match="floating"):
            f(torch.zeros(1, 5, 2, 2, dtype=torch.long))
        for bad in (math.nan, math.inf, -math.inf):
            x = torch.randn(1, 5, 3, 3)
            x[0, 2, 1, 1] = bad
            with pytest.raises(InputError, match="NaN or infinite"):
                f(x)
    with pytest.raises(InputError, match="6 classes.*5"):
        SML(stats)(torch.randn(1, 6, 3, 3))
    with pytest.raises(InputError, match="temperature"):
        energy(torch.randn(1, 2, 2, 2), temperature=0)
    with pytest.raises(InputError, match="ClassStatistics"):
        SML({"mean": 1})


def test_large_finite_logits_are_not_flagged():
    x = torch.full((1, 3, 64, 64), 3e36)  # the float32 sum overflows, the values do not
    assert torch.isfinite(max_logit(x)).all()


# ----------------------------------------------------------------------------- SML

def _literal_sml_numpy(x: torch.Tensor, stats: ClassStatistics, width=4, iterations=4, k=7, d=6, sigma=1.0,
                       border="reference", suppression=True, smoothing=True) -> np.ndarray:
    mean, std = (t.numpy() for t in stats.scoring_tensors())
    x64 = x.double().numpy()
    out = []
    for img in x64:
        pred = img.argmax(0)
        s = (img.max(0) - mean[pred]) / std[pred]
        if suppression:
            s = lit_suppression(s, pred, width, iterations, border)
        if smoothing:
            s = lit_smoothing(s, k, d, sigma)
        out.append(-s)
    return np.stack(out)


SML_SETTINGS = [dict(), dict(border="ignore"), dict(suppression=False), dict(smoothing=False),
                dict(suppression=False, smoothing=False), dict(boundary_width=2, boundary_iterations=1,
                                                                smoothing_kernel=3, smoothing_dilation=2,
                                                                smoothing_sigma=0.7)]


@pytest.mark.parametrize("kw", SML_SETTINGS)
def test_sml_matches_literal(kw):
    stats = _stats()
    lowres = _logits(2, 5, 4, 5, seed=7)
    x = torch.nn.functional.interpolate(lowres, size=(13, 15), mode="bilinear", align_corners=True)
    got = SML(stats, **kw)(x)
    names = dict(boundary_width="width", boundary_iterations="iterations", smoothing_kernel="k",
                 smoothing_dilation="d", smoothing_sigma="sigma")
    want = _literal_sml_numpy(x, stats, **{names.get(k, k): v for k, v in kw.items()})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    mean, std = stats.scoring_tensors()
    np.testing.assert_allclose(got.numpy(), literal_sml(x, mean, std, **kw).numpy(), rtol=1e-5, atol=1e-5)


def test_plain_standardized_max_logit_is_bit_identical_to_reference_arithmetic():
    stats = _stats()
    x = _logits(1, 5, 20, 20, seed=3)
    got = SML(stats, suppression=False, smoothing=False)(x)
    v, p = torch.max(x, 1)
    mean, std = stats.scoring_tensors()
    want = torch.empty_like(v)
    for c in range(5):  # the reference: float32 tensor op with a Python float
        want = torch.where(p == c, (v - float(mean[c])) / float(np.sqrt(stats.var[c])), want)
    assert torch.equal(got, -want)


def test_score_from_shares_max_and_argmax():
    stats = _stats()
    x = _logits(2, 5, 12, 10)
    v, p = torch.max(x, 1)
    for name in ("sml", "max_logit"):
        scorer = build_scorer(name, stats)
        assert scorer.uses_max_only
        assert torch.equal(scorer.score_from(v, p), scorer(x))
    assert torch.equal(v, torch.max(x, 1).values)  # inputs untouched
    with pytest.raises(InputError, match="full logits"):
        build_scorer("msp").score_from(v, p)
    with pytest.raises(InputError, match="outside"):
        SML(stats).score_from(v, p + 5)


class _SyncCounter:
    """Counts conversions of a tensor to a Python value (each one a host sync on CUDA)."""

    def __init__(self, monkeypatch):
        self.n = 0
        for name in ("__bool__", "item", "__int__", "__float__", "tolist"):
            orig = getattr(torch.Tensor, name)

            def counted(t, *a, _orig=orig, **k):
                self.n += 1
                return _orig(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_score_from_any_integer_class_dtype_same_result_one_sync(dtype, monkeypatch):
    """Every integer dtype of the classes gives the uint8 result; the only host sync is the result's
    finiteness test (classes are checked through it, not on their own)."""
    stats = _stats()
    x = _logits(2, 5, 24, 20, seed=4)
    v, p = torch.max(x, 1)
    scorer = SML(stats)
    want = scorer(x)
    # as on CUDA: suppression processes every band instead of reading row levels to the host
    monkeypatch.setattr(postprocess, "_skip_bands", lambda device: False)
    counter = _SyncCounter(monkeypatch)
    got = scorer.score_from(v, p.to(dtype))
    assert counter.n == 1
    assert torch.equal(got, want) and got.dtype == torch.float32
    monkeypatch.undo()
    for bad in (-1, 5, 200, 300):
        if torch.iinfo(dtype).min <= bad <= torch.iinfo(dtype).max:
            q = p.clone().to(dtype)
            q[1, 3, 4] = bad
            with pytest.raises(InputError, match="outside 0..4"):
                scorer.score_from(v, q)
    nan = v.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="max_logit contains NaN"):
        scorer.score_from(nan, p.to(dtype))


def test_score_from_with_more_than_255_classes():
    rng = np.random.default_rng(7)
    stats = ClassStatistics(300)
    stats.update_from_predictions(np.arange(300).repeat(4), rng.normal(5, 1, 1200).astype(np.float32))
    v = torch.from_numpy(rng.normal(5, 1, (1, 6, 7)).astype(np.float32))
    p = torch.from_numpy(rng.integers(0, 300, (1, 6, 7)))
    scorer = SML(stats, suppression=False, smoothing=False)
    mean, std = stats.scoring_tensors(dtype=torch.float32)
    assert torch.equal(scorer.score_from(v, p), -((v - mean[p]) / std[p]))
    for bad in (-1, 300, 1000):
        q = p.clone()
        q[0, 2, 3] = bad
        with pytest.raises(InputError, match="outside 0..299"):
            scorer.score_from(v, q)


def test_context_scores_check_the_max_once(monkeypatch):
    """Five methods from one LogitContext: one sync for the max map, one for the softmax terms."""
    from sml.scores import LogitContext

    stats = _stats()
    x = _logits(1, 5, 16, 16, seed=5)
    scorers = {m: build_scorer(m, stats) for m in DEFAULT_METHODS}
    want = {m: sc(x) for m, sc in scorers.items()}
    monkeypatch.setattr(postprocess, "_skip_bands", lambda device: False)
    counter = _SyncCounter(monkeypatch)
    ctx = LogitContext(x)
    got = {m: sc.score_context(ctx) for m, sc in scorers.items()}
    assert counter.n == 2
    monkeypatch.undo()
    for m in DEFAULT_METHODS:
        assert got[m].device == x.device and got[m].dtype == torch.float32
        torch.testing.assert_close(got[m], want[m], rtol=1e-6, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(shift=st.floats(-50, 50), seed=st.integers(0, 1000), sigma=st.floats(0.3, 4.0))
def test_logit_shift_moves_sml_by_known_amount(shift, seed, sigma):
    """Shifting every logit by k moves SML by -k/sigma when all classes share sigma (the post-processing
    is affine and keeps constants), and not at all when the class means move by k too."""
    c = 4
    x = _logits(1, c, 11, 12, seed=seed).double()
    base = ClassStatistics.from_dict({"num_classes": c, "count": [100] * c, "mean": [0.5, -1.0, 2.0, 0.0],
                                      "var": [sigma ** 2] * c})
    moved = ClassStatistics.from_dict({"num_classes": c, "count": [100] * c,
                                       "mean": [m + shift for m in (0.5, -1.0, 2.0, 0.0)], "var": [sigma ** 2] * c})
    a = SML(base)(x)
    b = SML(base)(x + shift)
    np.testing.assert_allclose((b - a).numpy(), -shift / sigma, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(SML(moved)(x + shift).numpy(), a.numpy(), rtol=1e-5, atol=1e-4)


def test_unusable_class_falls_back_to_pooled_statistics():
    stats = ClassStatistics(3)
    pred = torch.tensor([[0, 0, 0, 1, 1, 1, 2]])
    vals = torch.tensor([[1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 9.0]])
    stats.update_from_predictions(pred, vals)  # class 1: zero variance, class 2: one pixel
    assert stats.usable.tolist() == [True, False, False]
    allv = vals.double().numpy().ravel()
    pm, ps = allv.mean(), allv.std(ddof=1)
    x = torch.zeros(1, 3, 1, 3)
    x[0, 0, 0, 0], x[0, 1, 0, 1], x[0, 2, 0, 2] = 2.5, 4.0, 7.0
    got = SML(stats, suppression=False, smoothing=False)(x)
    want = -np.array([(2.5 - 2.0) / 1.0, (4.0 - pm) / ps, (7.0 - pm) / ps])
    np.testing.assert_allclose(got.numpy()[0, 0], want, rtol=1e-6)
    assert torch.isfinite(SML(stats)(x)).all()
    with pytest.raises(InputError, match="no usable class"):
        SML(ClassStatistics(3))


def test_registry_and_settings():
    stats = _stats()
    assert set(SCORERS) == {"msp", "max_logit", "entropy", "energy", "sml", "gen", "rba", "eam"} == set(METHODS)
    for name in SCORERS:
        scorer = build_scorer(name, stats)
        assert scorer.name == name and scorer.needs_stats == (name == "sml")
        json.dumps(scorer.settings())
        rebuilt = build_scorer(name, stats, **scorer.settings())
        assert rebuilt.settings() == scorer.settings()
        if "logits" in scorer.output_kinds:
            assert scorer(_logits()).shape == (2, 9, 11)
    assert build_scorer("Max-Logit").name == "max_logit"
    assert build_scorer("energy", temperature=2.0).settings() == {"temperature": 2.0}
    assert SML(stats).settings() == dict(boundary_width=4, boundary_iterations=4, smoothing_kernel=7,
                                         smoothing_dilation=6, smoothing_sigma=1.0, border="reference",
                                         suppression=True, smoothing=True)
    with pytest.raises(InputError, match="unknown scoring method"):
        build_scorer("odin")
    with pytest.raises(InputError, match="needs class statistics"):
        build_scorer("sml")
    with pytest.raises(InputError, match="no setting.*kernel_size"):
        build_scorer("sml", stats, kernel_size=7)
    with pytest.raises(InputError, match="multiple"):
        build_scorer("sml", stats, boundary_width=3)
    with pytest.raises(InputError, match="True or False"):
        SML(stats, smoothing="no")
    assert sml.SML is SML and sml.scores.msp is msp


def test_five_line_usage_with_reference_statistics(shared):
    """Read the published statistics, score logits with SML: the spec's numbers (literal reference)."""
    ref = shared / "reference"
    stats = sml.ClassStatistics.from_reference_npy(ref / "cityscapes_mean.npy", ref / "cityscapes_var.npy")
    logits = torch.nn.functional.interpolate(_logits(1, 19, 6, 8, seed=11) + 8, size=(24, 40),
                                             mode="bilinear", align_corners=True)
    anomaly = sml.SML(stats)(logits)
    np.testing.assert_allclose(anomaly.numpy(), _literal_sml_numpy(logits, stats), rtol=1e-5, atol=1e-5)


def test_sml_batch_with_small_bands_equals_per_image(monkeypatch):
    """Banded standardization / post-processing with B > 1 and ragged last bands."""
    import sml.scores.functional as fn

    stats = _stats()
    x = torch.nn.functional.interpolate(_logits(3, 5, 5, 4, seed=5), size=(17, 13), mode="bilinear",
                                        align_corners=True)
    full = SML(stats)(x)
    monkeypatch.setattr(fn, "_BAND_ELEMENTS", 100)  # 2-3 rows per band
    np.testing.assert_array_equal(SML(stats)(x).numpy(), full.numpy())
    per_image = torch.cat([SML(stats)(x[i:i + 1]) for i in range(3)])
    np.testing.assert_array_equal(per_image.numpy(), full.numpy())


def test_logit_context_shares_work_and_equals_each_scorer():
    """One LogitContext serves every method; each result equals the scorer's own call, bit for bit."""
    from sml.scores import LogitContext

    x = _logits(2, 5, 13, 17, seed=3)
    stats = _stats()
    scorers = [build_scorer(m, stats=stats) for m in ("sml", "max_logit", "msp", "entropy", "energy")]
    scorers += [build_scorer("energy", temperature=2.5), SML(stats, suppression=False, smoothing=False)]
    ctx = LogitContext(x)
    for sc in scorers:
        assert torch.equal(sc.score_context(ctx), sc(x)), sc
    # the shared terms are computed once and reused
    assert ctx.softmax_terms()[0] is ctx.softmax_terms()[0]
    # and the context path stays within the float64 tolerances
    p = softmax(x.double().numpy(), axis=1)
    np.testing.assert_allclose(build_scorer("entropy").score_context(LogitContext(x)).numpy(),
                               -(p * np.log(p)).sum(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_logit_context_rejects_non_finite_logits(bad):
    from sml.scores import LogitContext

    x = _logits(1, 4, 5, 6)
    x[0, 2, 3, 4] = bad
    for m in ("msp", "entropy", "energy"):
        with pytest.raises(InputError, match="NaN or infinite"):
            build_scorer(m).score_context(LogitContext(x))


def test_logit_methods_warn_on_mask_classification_scores():
    from sml.scores import build_scorers

    stats = _stats()
    with pytest.warns(UserWarning, match=r"^msp, energy: the model's output is mask-classification"):
        build_scorers(["msp", "sml", "energy", "msp"], stats, model_kind="mask-classification")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_scorers(["msp", "entropy", "energy"], stats)                       # logits: nothing to say
        build_scorers(["sml", "max_logit"], stats, model_kind="mask-classification")
