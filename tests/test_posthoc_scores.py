"""The post-hoc scores of sml-algorithm.md section 8 (RbA, EAM, GEN) against the authors' code.

``fixtures/posthoc/posthoc_scores.npz`` holds tiny inputs and what the authors' own functions return for
them (``make_fixtures.py --authors``: RbA's ``MaskFormer.forward``/``semantic_inference``/``get_RbA``,
Open-set-M2F's ``forward`` and EAM evaluator, GEN's ``generalized_entropy``, detectron2's
``sem_seg_postprocess``, each at a fixed commit, computed in float64).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import sml
from sml.errors import InputError
from sml.scores import (EAM, GEN, SCORERS, LogitContext, MaskClassificationContext, MaskClassificationOutput, RbA,
                        build_scorer, build_scorers, check_methods_apply, eam, gen, mask_class_scores, max_logit, rba)
from sml.scores import mask_classification as mc
from sml.scores.registry import APPLIES_TO, DEFAULT_METHODS, METHODS, OUTPUT_KINDS
from sml.stats import ClassStatistics

FIXTURES = np.load(Path(__file__).parent / "fixtures" / "posthoc" / "posthoc_scores.npz")
MASK_CASES = ("k4", "k19", "same")
GEN_CASES = ("c19", "c19_g05_m5", "c150")


def _case(name: str, dtype: torch.dtype = torch.float32) -> tuple[MaskClassificationOutput, dict[str, np.ndarray]]:
    f = {k.split("/", 1)[1]: FIXTURES[k] for k in FIXTURES.files if k.startswith(name + "/")}
    out = MaskClassificationOutput(torch.from_numpy(f["class_logits"]).to(dtype),
                                   torch.from_numpy(f["mask_logits"]).to(dtype),
                                   tuple(f["input_size"]), tuple(f["output_size"]))
    return out, f


def _random_output(b=2, q=7, k=5, mask=(5, 6), input_size=(20, 24), output_size=(17, 29), seed=0,
                   dtype=torch.float32, upsample="bilinear") -> MaskClassificationOutput:
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(b, q, k + 1, generator=g, dtype=torch.float64).mul(2.5).to(dtype)
    masks = torch.randn(b, q, *mask, generator=g, dtype=torch.float64).mul(4).to(dtype)
    return MaskClassificationOutput(cls, masks, input_size, output_size, upsample)


def test_fixtures_come_from_the_authors_code():
    assert str(FIXTURES["source"]) == "authors-code"


@pytest.mark.parametrize("name", MASK_CASES)
def test_class_scores_rba_and_eam_equal_the_authors(name):
    out, f = _case(name)
    s = out.class_scores()
    assert s.dtype == torch.float32 and s.shape == f["S"].shape
    np.testing.assert_allclose(s.numpy(), f["S"], rtol=1e-6, atol=1e-6)
    for got, want in ((rba(s), f["rba"]), (out.eam(), f["eam"])):
        assert got.dtype == torch.float32 and got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)
    # in float64 the arithmetic is the authors' to rounding: the same operations, in the same places
    out64, _ = _case(name, torch.float64)
    s64 = out64.class_scores()
    assert s64.dtype == torch.float64
    np.testing.assert_allclose(s64.numpy(), f["S"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(rba(s64).numpy(), f["rba"], rtol=1e-6, atol=1e-6)   # rba's map is float32
    np.testing.assert_allclose(mc._eam(out64, None).numpy(), f["eam"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", GEN_CASES)
def test_gen_equals_the_authors(name):
    f = {k.split("/", 1)[1]: FIXTURES[k] for k in FIXTURES.files if k.startswith(f"gen_{name}/")}
    m = None if int(f["m"]) < 0 else int(f["m"])
    logits = torch.from_numpy(f["logits"])
    got = gen(logits, float(f["gamma"]), m)
    assert got.dtype == torch.float32 and got.shape == f["confidence"].shape
    # the authors return a confidence (minus the generalized entropy); ours is the anomaly score
    np.testing.assert_allclose(got.numpy(), -f["confidence"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(GEN(float(f["gamma"]), m)(logits.double()).numpy(), -f["confidence"],
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("upsample", ["bilinear", "bilinear-align-corners"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunks_of_queries_give_the_unchunked_result(upsample, dtype, monkeypatch):
    out = _random_output(dtype=dtype, upsample=upsample)
    q = out.class_logits.shape[1]
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    whole_s, whole_e = out.class_scores(chunk=q), out.eam(chunk=q)
    widest = []
    real = F.interpolate

    def spy(x, *a, **kw):
        widest.append(x.shape[1])
        return real(x, *a, **kw)

    monkeypatch.setattr(mc.F, "interpolate", spy)
    for chunk in (1, 2, 3, q - 1, q + 5):
        widest.clear()
        torch.testing.assert_close(out.class_scores(chunk=chunk), whole_s, rtol=tol, atol=tol)
        torch.testing.assert_close(out.eam(chunk=chunk), whole_e, rtol=tol, atol=tol)
        assert max(w for w in widest if w != out.num_classes) <= min(chunk, q)  # never more queries at once
    # the default chunk follows the element budget: 20 x 24 input pixels x 2 images -> 3 queries per step
    monkeypatch.setattr(mc, "QUERY_BUDGET", 3 * 2 * 20 * 24)
    widest.clear()
    torch.testing.assert_close(out.class_scores(), whole_s, rtol=tol, atol=tol)
    assert max(w for w in widest if w != out.num_classes) == 3


def test_class_scores_and_eam_against_a_literal_with_align_corners():
    """``upsample="bilinear-align-corners"`` changes R only; U_q stays align_corners False (the authors')."""
    out = _random_output(dtype=torch.float64, upsample="bilinear-align-corners", output_size=(31, 13))
    p = out.class_logits.softmax(-1)[..., :-1]
    u = F.interpolate(out.mask_logits, size=out.input_size, mode="bilinear", align_corners=False)
    s = F.interpolate(torch.einsum("bqk,bqhw->bkhw", p, u.sigmoid()), size=out.output_size, mode="bilinear",
                      align_corners=True)
    m = F.interpolate(u, size=out.output_size, mode="bilinear", align_corners=True).sigmoid()
    e = 1 - torch.einsum("bq,bqhw->bhw", p.amax(-1), m)
    torch.testing.assert_close(out.class_scores(), s, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.eam(), e.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mask_class_scores(out.class_logits, out.mask_logits, out.input_size, out.output_size,
                                                 "bilinear-align-corners"), s, rtol=0, atol=1e-12)


def test_functions_equal_the_dataclass_and_default_to_the_input_size():
    out = _random_output(output_size=None)
    assert out.output_size == out.input_size
    s = mask_class_scores(out.class_logits, out.mask_logits, out.input_size)
    assert s.shape == (2, 5, 20, 24)
    assert torch.equal(s, out.class_scores())
    assert torch.equal(eam(out.class_logits, out.mask_logits, out.input_size), out.eam())


def test_half_precision_outputs_are_scored_in_float32():
    out = _random_output(dtype=torch.float32)
    half = MaskClassificationOutput(out.class_logits.bfloat16(), out.mask_logits.bfloat16(), out.input_size,
                                    out.output_size)
    ref = MaskClassificationOutput(half.class_logits.float(), half.mask_logits.float(), out.input_size,
                                   out.output_size)
    assert half.class_scores().dtype == torch.float32 and half.eam().dtype == torch.float32
    torch.testing.assert_close(half.class_scores(), ref.class_scores(), rtol=0, atol=0)
    torch.testing.assert_close(half.eam(), ref.eam(), rtol=0, atol=0)
    x = torch.randn(1, 19, 4, 5).bfloat16()
    torch.testing.assert_close(gen(x), gen(x.float()), rtol=0, atol=0)


def test_higher_is_more_anomalous():
    # one query, sure of class 0 and covering every pixel, against one that is unsure and covers little
    sure = MaskClassificationOutput(torch.tensor([[[8.0, 0, 0, 0]]]), torch.full((1, 1, 2, 2), 6.0), (4, 4))
    unsure = MaskClassificationOutput(torch.tensor([[[0.1, 0, 0, 0]]]), torch.full((1, 1, 2, 2), -1.0), (4, 4))
    assert (RbA()(unsure) > RbA()(sure)).all()
    assert (EAM()(unsure) > EAM()(sure)).all()
    confident = torch.tensor([10.0, 0, 0])[None, :, None, None]
    flat = torch.tensor([1.0, 0.9, 0.8])[None, :, None, None]
    assert float(gen(flat)) > float(gen(confident))


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("kw, match", [
    (dict(class_logits=torch.zeros(3, 5)), r"class_logits must be .* B x Q x \(K\+1\)"),
    (dict(mask_logits=torch.zeros(1, 3, 4)), r"mask_logits must be .* B x Q x h x w"),
    (dict(class_logits=torch.zeros(1, 3, 5, dtype=torch.int64)), r"floating-point"),
    (dict(class_logits=np.zeros((1, 3, 5), np.float32)), r"class_logits must be a torch.Tensor"),
    (dict(mask_logits=torch.zeros(1, 0, 2, 2)), r"non-empty"),
    (dict(mask_logits=torch.zeros(2, 3, 2, 2)), r"must agree in batch size and number of queries"),
    (dict(class_logits=torch.zeros(1, 3, 1)), r"no-object column last"),
    (dict(class_logits=torch.tensor([[[0.0, float("inf")]] * 3])), r"class_logits contain 3 NaN or infinite"),
    (dict(input_size=(4, 4, 3)), r"input_size must be \(height, width\)"),
    (dict(input_size=(4.5, 4)), r"input_size must be"),
    (dict(input_size=None), r"input_size must be"),
    (dict(output_size=(0, 7)), r"output_size must be"),
    (dict(upsample="bilinear-antialias"), r"upsample must be one of bilinear, bilinear-align-corners"),
])
def test_mask_outputs_are_checked(kw, match):
    args = dict(class_logits=torch.zeros(1, 3, 5), mask_logits=torch.zeros(1, 3, 2, 2), input_size=(4, 4))
    args.update(kw)
    with pytest.raises(InputError, match=match):
        MaskClassificationOutput(**args)
    with pytest.raises(InputError, match=match):
        mask_class_scores(**args)
    with pytest.raises(InputError, match=match):
        eam(**args)


@pytest.mark.parametrize("chunk", [0, -1, True, 2.0])
def test_bad_chunk(chunk):
    with pytest.raises(InputError, match="chunk"):
        _random_output().class_scores(chunk=chunk)


@pytest.mark.parametrize("kw, match", [
    (dict(gamma=0), "gamma must be a positive"), (dict(gamma=-0.1), "gamma must be a positive"),
    (dict(gamma=float("nan")), "gamma must be a positive"), (dict(gamma="g"), "gamma must be a positive"),
    (dict(M=0), "M .* integer >= 1"), (dict(M=1.5), "M .* integer >= 1"), (dict(M=True), "M .* integer >= 1"),
    (dict(M=20), "M=20 exceeds the 19 classes"),
])
def test_gen_settings_are_checked(kw, match):
    x = torch.randn(1, 19, 2, 2)
    with pytest.raises(InputError, match=match):
        gen(x, **kw)
    if "exceeds" not in match:  # M is checked against the classes only when logits come
        with pytest.raises(InputError, match=match):
            GEN(**kw)
    else:
        with pytest.raises(InputError, match=match):
            GEN(**kw)(x)


def test_gen_and_rba_refuse_bad_maps():
    with pytest.raises(InputError, match="logits must have shape B x C x H x W"):
        gen(torch.randn(19, 4, 4))
    with pytest.raises(InputError, match="NaN or infinite"):
        gen(torch.tensor([float("nan"), 0.0])[None, :, None, None])
    with pytest.raises(InputError, match="class scores must have shape B x C x H x W"):
        rba(torch.randn(4, 5, 5))
    with pytest.raises(InputError, match="class scores contain"):
        rba(torch.tensor([float("inf"), 0.0])[None, :, None, None])


# ----------------------------------------------------------------------------- registry and applicability

def test_registry_declares_what_each_method_needs():
    assert METHODS[:len(DEFAULT_METHODS)] == DEFAULT_METHODS
    assert set(METHODS) == set(APPLIES_TO) == set(SCORERS)
    for name, cls in SCORERS.items():
        assert cls.output_kinds == APPLIES_TO[name] and set(cls.output_kinds) <= set(OUTPUT_KINDS)
        assert cls.needs_queries == (name == "eam")
    assert GEN.output_kinds == ("logits",)
    assert RbA.output_kinds == EAM.output_kinds == ("mask-classification",)
    assert build_scorer("generalized-entropy").name == "gen" and build_scorer("Rejected-By-All").name == "rba"
    assert build_scorer("gen", gamma=0.5, M=7).settings() == {"gamma": 0.5, "M": 7}
    assert GEN().settings() == {"gamma": 0.1, "M": None}
    assert sml.GEN is GEN and sml.RbA is RbA and sml.EAM is EAM and sml.scores.gen is gen
    assert sml.scores.rba is rba and sml.scores.eam is eam and sml.MaskClassificationOutput is MaskClassificationOutput


@pytest.mark.filterwarnings("ignore:msp, entropy, energy. the model's output is mask-classification")
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_check_methods_apply(kind):
    fits = [m for m in METHODS if kind in APPLIES_TO[m]]
    check_methods_apply(fits, kind)
    assert build_scorers(["max_logit"] + [m for m in fits if m != "sml"], None, model_kind=kind)
    for m in set(METHODS) - set(fits):
        with pytest.raises(InputError, match=rf"^{m}: not applicable to this network, whose output kind is {kind}"):
            check_methods_apply(["max_logit", m.upper()], kind)
        with pytest.raises(InputError, match=f"{m}: not applicable"):
            build_scorers([m], None, model_kind=kind)
    with pytest.raises(InputError, match="unknown network output kind 'probabilities'"):
        check_methods_apply(["sml"], "probabilities")
    with pytest.raises(InputError, match="unknown scoring method 'odin'"):
        check_methods_apply(["odin"], kind)


def test_eam_needs_the_per_query_outputs():
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(InputError, match="eam needs a mask-classification network's per-query class and mask"):
        EAM().score_context(LogitContext(x))
    with pytest.raises(InputError, match="got Tensor"):
        EAM()(x)
    with pytest.raises(InputError, match="needs a MaskClassificationOutput"):
        MaskClassificationContext(x)


# ----------------------------------------------------------------------------- one frame, many methods

def test_mask_classification_context_forms_s_once_and_on_demand(monkeypatch):
    out = _random_output(seed=3)
    s, e = out.class_scores(), out.eam()
    calls = {"scores": 0, "eam": 0}
    real_s, real_e = mc._class_scores, mc._eam

    def count(key, fn):
        def wrapped(*a, **kw):
            calls[key] += 1
            return fn(*a, **kw)
        return wrapped

    monkeypatch.setattr(mc, "_class_scores", count("scores", real_s))
    monkeypatch.setattr(mc, "_eam", count("eam", real_e))
    ctx = MaskClassificationContext(out)
    assert torch.equal(build_scorer("eam").score_context(ctx), e)
    assert calls == {"scores": 0, "eam": 1}            # EAM alone never forms S
    stats = ClassStatistics(5)
    stats.update(s)
    scorers = {m: build_scorer(m, stats) for m in ("sml", "max_logit", "msp", "entropy", "energy", "rba", "eam")}
    got = {m: sc.score_context(ctx) for m, sc in scorers.items()}
    assert calls == {"scores": 1, "eam": 1}            # S once for six methods, EAM's map reused
    for m, sc in scorers.items():
        want = e if m == "eam" else sc(s)
        assert torch.equal(got[m], want), m
    assert torch.equal(got["max_logit"], max_logit(s)) and torch.equal(got["rba"], RbA()(out))


# ----------------------------------------------------------------------------- properties

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-40, 40), gamma=st.floats(0.05, 2.0), m=st.integers(1, 12))
def test_gen_is_invariant_to_a_logit_shift_and_bounded(seed, shift, gamma, m):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, 3, 4, generator=g, dtype=torch.float64).mul(3)
    offset = torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64).mul(shift)   # any per-pixel constant
    a, b = gen(x, gamma, m), gen(x + offset, gamma, m)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # each term p^g (1 - p)^g lies in [0, 4^-g]
    assert (a >= 0).all() and (a <= m * 0.25 ** gamma * (1 + 1e-6)).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.integers(0, 3), up=st.floats(0.01, 5.0))
def test_rba_falls_when_any_class_score_rises(seed, c, up):
    s = torch.rand(2, 4, 3, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3 - 1
    more = s.clone()
    more[:, c] += up
    assert (rba(more) < rba(s)).all()
    assert (rba(s).abs() <= 4).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_scores_do_not_depend_on_the_order_of_queries(seed, data):
    out = _random_output(b=1, q=5, k=3, mask=(3, 4), input_size=(6, 8), output_size=(5, 9), seed=seed,
                         dtype=torch.float64)
    order = torch.tensor(data.draw(st.permutations(range(5))))
    shuffled = MaskClassificationOutput(out.class_logits[:, order], out.mask_logits[:, order], out.input_size,
                                        out.output_size)
    torch.testing.assert_close(shuffled.class_scores(), out.class_scores(), rtol=0, atol=1e-12)
    torch.testing.assert_close(shuffled.eam(), out.eam(), rtol=1e-6, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), q=st.integers(0, 4), up=st.floats(0.01, 5.0))
def test_eam_falls_where_a_mask_grows(seed, q, up):
    out = _random_output(b=1, q=5, k=3, mask=(3, 4), input_size=(6, 8), output_size=(6, 8), seed=seed,
                         dtype=torch.float64)
    masks = out.mask_logits.clone()
    masks[:, q] += up
    grown = MaskClassificationOutput(out.class_logits, masks, out.input_size, out.output_size)
    assert (grown.eam() < out.eam()).all()
