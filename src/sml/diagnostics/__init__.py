"""Per-class diagnostics: where a network's anomaly pixels go and why SML helps or fails there.

``ClassDiagnostics`` counts, per predicted class, inlier and anomaly pixels and
histograms of their max logit and SML score from the maps an evaluation already
has; ``explain`` reads the numbers in one paragraph; ``plot_diagnostics`` draws
the per-class box plots; ``sml diagnose RUN_DIR`` does both for a run directory.
"""
from sml.diagnostics.core import MAX_LOGIT_BINS, SML_BINS, Bins, ClassDiagnostics, box_numbers
from sml.diagnostics.reading import diagnostics_table, explain, plot_diagnostics, ranked_classes

__all__ = ["ClassDiagnostics", "Bins", "MAX_LOGIT_BINS", "SML_BINS", "box_numbers", "explain",
           "diagnostics_table", "plot_diagnostics", "ranked_classes"]
