"""Plain-language reading of the diagnostics, the per-class table and the figure."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from sml.diagnostics.core import ClassDiagnostics
from sml.utils.figures import new_figure, save_figure
from sml.utils.tables import class_diagnostics_table

__all__ = ["ranked_classes", "explain", "diagnostics_table", "plot_diagnostics"]

# A class's anomaly pixels count as "inside" its training distribution when their median max logit
# is above mean - NEAR * std: standardizing then gives them scores no lower than a typical inlier's.
NEAR = 0.5


def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def ranked_classes(summary: dict[str, Any], top: int | None = None) -> list[dict[str, Any]]:
    """The classes of ``compute()`` / diagnostics.json that hold anomaly pixels, largest anomaly share first,
    then classes with inlier pixels only (largest first); at most ``top``."""
    cls = summary["classes"]
    with_anom = sorted((c for c in cls if c["anomaly_pixels"] > 0), key=lambda c: (-c["anomaly_pixels"], c["id"]))
    rest = sorted((c for c in cls if c["anomaly_pixels"] == 0 and c["inlier_pixels"] > 0),
                  key=lambda c: (-c["inlier_pixels"], c["id"]))
    out = with_anom + rest
    return out[:top] if top is not None else out


def _summary(diag: ClassDiagnostics | dict[str, Any]) -> dict[str, Any]:
    return diag.compute() if isinstance(diag, ClassDiagnostics) else diag


def _z(x: float) -> str:
    return f"{x:+.1f}" if round(x, 1) != 0 else "0.0"  # never "-0.0"


def _pc(x: float) -> str:
    return f"{100 * x:.0f}%"


def explain(diag: ClassDiagnostics | dict[str, Any], cover: float = 0.8, max_classes: int = 4) -> str:
    """One paragraph read from the numbers: which classes swallow the anomalies, whether their anomaly max
    logits sit above or below the class's training mean (and this data's in-distribution pixels of the
    class), and what that means for SML against max logit."""
    s = _summary(diag)
    n_anom = s["pixels"]["anomaly"]
    if n_anom == 0:
        return (f"The {s['frames']} evaluated frames hold no anomaly pixels, so nothing can be said about how "
                "the network sees anomalies.")
    main, covered = _main_classes(s, cover, max_classes)
    shares = ", ".join(f"{c['name']} ({_pc(c['anomaly_share'])})" for c in main)
    frames = s["frames"]
    out = [f"Of the {n_anom:,} anomaly pixels in {frames} frame{'s' if frames != 1 else ''}, "
           f"{_pc(covered)} are predicted as {shares if len(main) > 1 else main[0]['name']}."]
    out += [_class_sentence(c) for c in main]
    at = s["pooled"].get("at_or_above_train_mean", {})
    an_above, in_below = _f(at.get("anomaly")), 1.0 - _f(at.get("inlier"))
    if math.isfinite(an_above) and math.isfinite(in_below):
        out.append(f"Over all classes, {_pc(an_above)} of the anomaly pixels have a max logit at or above "
                   f"their predicted class's training mean (SML sees them as confident), while "
                   f"{_pc(in_below)} of the in-distribution pixels lie below theirs (SML sees them as "
                   "unusual" + (", a shift between the data of the statistics and this data" if in_below > 0.6
                                else "") + ").")
    verdict = _auroc_sentence(s, main, an_above, in_below)
    if verdict:
        out.append(verdict)
    return " ".join(out)


def _main_classes(s: dict[str, Any], cover: float, max_classes: int) -> tuple[list[dict[str, Any]], float]:
    """The classes holding the most anomaly pixels, until they hold ``cover`` of them (at most
    ``max_classes``), and the share they hold."""
    main: list[dict[str, Any]] = []
    covered = 0.0
    for c in (c for c in ranked_classes(s) if c["anomaly_pixels"] > 0):
        if len(main) >= max_classes or covered >= cover:
            break
        main.append(c)
        covered += c["anomaly_share"]
    return main, covered


def _class_sentence(c: dict[str, Any]) -> str:
    """Where one class's anomaly pixels sit against its training statistics, and what SML makes of them."""
    a = c["max_logit"]["anomaly"]
    med, mu, sd = _f(a["median"]), _f(c["train_mean"]), _f(c["train_std"])
    name = c["name"]
    if not (math.isfinite(mu) and math.isfinite(sd) and sd > 0):
        return (f"For {name} the training statistics are missing or unusable, so SML falls back to the "
                "pooled statistics there.")
    z = (med - mu) / sd
    sentence = (f"{name.capitalize()}: the anomalies' median max logit {med:.1f} lies "
                f"{'above' if med >= mu else 'below'} the class's training mean {mu:.1f} ± {sd:.1f} "
                f"(z = {_z(z)})")
    if z >= -NEAR:
        sentence += f", so standardized by the {name} statistics they look like ordinary {name} pixels to SML"
    else:
        sentence += ", so standardization makes them stand out"
    inl = c["max_logit"]["inlier"]
    if inl["pixels"]:
        zi = (_f(inl["median"]) - mu) / sd
        sentence += f" (in-distribution {name} pixels here: median {_f(inl['median']):.1f}, z = {_z(zi)})"
    return sentence + "."


def _auroc_sentence(s: dict[str, Any], main: list[dict[str, Any]], an_above: float,
                    in_below: float) -> str | None:
    """The pooled binned AUROC of SML against max logit, and why SML trails when it does."""
    au = s["pooled"].get("binned_auroc", {})
    a_ml, a_sml = _f(au.get("max_logit")), _f(au.get("sml"))
    if not math.isfinite(a_ml):
        return None
    if not math.isfinite(a_sml):
        return (f"Pooled over all classes the max logit separates anomalies from in-distribution pixels "
                f"with AUROC ≈ {100 * a_ml:.0f}% (from the histograms).")
    verdict = ("SML trails max logit" if a_sml < a_ml - 0.01 else
               "SML beats max logit" if a_sml > a_ml + 0.01 else "SML and max logit are on par")
    text = (f"Pooled over all classes the SML score separates anomalies from in-distribution pixels with "
            f"AUROC ≈ {100 * a_sml:.0f}% and the max logit with ≈ {100 * a_ml:.0f}% (from the histograms): "
            f"{verdict} here")
    if a_sml < a_ml - 0.01:
        text += _why_sml_trails(s, main, an_above, in_below)
    return text + "."


def _why_sml_trails(s: dict[str, Any], main: list[dict[str, Any]], an_above: float, in_below: float) -> str:
    why = []
    if math.isfinite(an_above) and an_above >= 0.25:
        big = [c["name"] for c in main if _f(c["at_or_above_train_mean"]["anomaly"]) >= 0.5]
        why.append("anomalies taken for " + (", ".join(big) if big else "low-confidence classes") +
                   " are as confident as that class usually is")
    if math.isfinite(in_below) and in_below >= 0.6:
        why.append("in-distribution pixels fall below their class means and get high SML scores")
    text = ", because " + " and ".join(why) if why else ""
    confident = sorted((c for c in s["classes"] if c["inlier_pixels"] and math.isfinite(_f(c["train_mean"]))),
                       key=lambda c: -_f(c["train_mean"]))[:3]
    if confident:
        text += ("; max logit instead ranks every pixel against the classes the network is most "
                 f"confident about ({', '.join(c['name'] for c in confident)}), so low-confidence "
                 "predictions stand out whatever their class")
    return text


def diagnostics_table(diag: ClassDiagnostics | dict[str, Any], top: int | None = None) -> str:
    """A plain-text table: per class (by anomaly share) pixels, anomaly share, training mean ± std and the
    median (quartiles) max logit of inlier and anomaly pixels (:func:`sml.utils.tables.class_diagnostics_table`)."""
    return class_diagnostics_table(ranked_classes(_summary(diag), top))


def _short(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else f"{n:,}"


INLIER_COLOUR = "#3b75af"
ANOMALY_COLOUR = "#e1812c"


def _bxp_stats(b: dict[str, Any], label: str) -> dict[str, Any] | None:
    if not b["pixels"]:
        return None
    vals = [_f(b[k]) for k in ("p05", "q1", "median", "q3", "p95")]
    # under/overflow quantiles are infinite: draw them at the range end
    from sml.diagnostics.core import MAX_LOGIT_BINS as B

    vals = [min(max(v, B.lo), B.hi) for v in vals]
    return {"whislo": vals[0], "q1": vals[1], "med": vals[2], "q3": vals[3], "whishi": vals[4],
            "fliers": [], "label": label}


def _draw_shares(ax, xs: list[int], classes: list[dict[str, Any]]) -> None:
    """Top row: each class's share of the anomaly pixels, labelled in percent."""
    shares = [100 * _f(c["anomaly_share"]) if math.isfinite(_f(c["anomaly_share"])) else 0.0 for c in classes]
    ax.bar(xs, shares, color=ANOMALY_COLOUR, width=0.6)
    for x, v in zip(xs, shares):
        ax.text(x, v, f"{v:.0f}%" if v >= 1 or v == 0 else "<1%", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("share of\nanomaly px %")
    ax.set_ylim(0, max(shares + [1.0]) * 1.25)
    ax.spines[["top", "right"]].set_visible(False)


def _draw_boxes(ax, xs: list[int], classes: list[dict[str, Any]]) -> None:
    """Main row: per class the training mean ± std band and the inlier / anomaly box plots; the y range
    fits them all."""
    from matplotlib.patches import Rectangle

    lo_all, hi_all = math.inf, -math.inf
    for x, c in zip(xs, classes):
        mu, sd = _f(c["train_mean"]), _f(c["train_std"])
        if math.isfinite(mu) and math.isfinite(sd):
            ax.add_patch(Rectangle((x - 0.45, mu - sd), 0.9, 2 * sd, color="0.85", zorder=0, lw=0))
            ax.plot([x - 0.45, x + 0.45], [mu, mu], color="black", lw=1.6, zorder=3)
            lo_all, hi_all = min(lo_all, mu - sd), max(hi_all, mu + sd)
        for dx, key, colour in ((-0.2, "inlier", INLIER_COLOUR), (0.2, "anomaly", ANOMALY_COLOUR)):
            st = _bxp_stats(c["max_logit"][key], key)
            if st is None:
                continue
            lo_all, hi_all = min(lo_all, st["whislo"]), max(hi_all, st["whishi"])
            ax.bxp([st], positions=[x + dx], widths=0.32, showfliers=False, patch_artist=True,
                   boxprops={"facecolor": colour, "edgecolor": "0.2", "alpha": 0.9},
                   medianprops={"color": "white", "lw": 1.8}, whiskerprops={"color": "0.3"},
                   capprops={"color": "0.3"}, manage_ticks=False)
    if math.isfinite(lo_all):
        pad = 0.05 * (hi_all - lo_all + 1e-9)
        ax.set_ylim(lo_all - pad, hi_all + pad)


def plot_diagnostics(diag: ClassDiagnostics | dict[str, Any], out_stem: str | Path, top: int = 10,
                     title: str = "", formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Per class (largest anomaly share first, at most ``top``): box plots of the max logit of inlier and
    anomaly pixels, the training mean ± std, and the class's share of anomaly pixels. Returns the files."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    s = _summary(diag)
    classes = ranked_classes(s, top)
    n = max(1, len(classes))
    fig = new_figure((max(6.0, 1.0 * n + 2.0), 5.6), layout="constrained")
    ax_share, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 3.2]})
    xs = list(range(len(classes)))
    _draw_shares(ax_share, xs, classes)
    _draw_boxes(ax, xs, classes)
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{c['name']}\n{_short(c['anomaly_pixels'])} / {_short(c['inlier_pixels'])}"
                        for c in classes], fontsize=8)
    ax.set_xlabel("predicted class (anomaly px / in-distribution px)")
    pooled_in = _f(s["pooled"]["max_logit"]["inlier"]["median"])
    handles = [Patch(facecolor=INLIER_COLOUR, label="in-distribution pixels"),
               Patch(facecolor=ANOMALY_COLOUR, label="anomaly pixels"),
               Line2D([], [], color="black", lw=1.6, label="training mean of the class"),
               Patch(facecolor="0.85", label="training mean ± std")]
    if math.isfinite(pooled_in):
        ax.axhline(pooled_in, color=INLIER_COLOUR, ls="--", lw=1, zorder=1)
        handles.append(Line2D([], [], color=INLIER_COLOUR, ls="--", lw=1,
                              label="median of all in-distribution pixels"))
    ax.set_ylabel("max logit")
    ax.grid(axis="y", color="0.92")
    ax.spines[["top", "right"]].set_visible(False)
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=len(handles), frameon=False)
    frames = s.get("frames", "?")
    fig.suptitle(title or f"Max logit per predicted class ({frames} frame{'s' if frames != 1 else ''})\n"
                          "boxes: quartiles and median; whiskers: 5th-95th percentile", fontsize=10)
    return save_figure(fig, out_stem, formats)
