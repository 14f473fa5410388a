"""`sml compare`: one table of several run directories, for a paper.

Data first: :func:`compare_runs` reads the runs (refusing damaged or foreign
folders) into a :class:`Comparison` (rows: network + method + the settings that
set a row apart; columns: data set x protocol, each with AUROC / AP / FPR@95).
Then views: :meth:`~Comparison.to_markdown`, :meth:`~Comparison.to_csv`,
:meth:`~Comparison.to_latex` (booktabs), :meth:`~Comparison.to_html`, and
:meth:`~Comparison.write`, which replaces only the files its own manifest
(``compare.json``) lists.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from sml.errors import InputError
from sml.report import compare_views as views
from sml.report.compare_views import ABSENT, METRICS, NA
from sml.utils.run_folder import run_files
from sml.utils.run_layout import CURVES, FRAMES, LOCK, MANIFEST as RUN_MANIFEST, METRICS as METRICS_JSON, PARTIAL, STATS
from sml.utils.run_layout import safe_name

__all__ = ["compare_runs", "Comparison", "ComparedRun", "Column", "Row", "Cell", "METRICS"]

#: run-level settings of the network side: runs that differ in one of them give separate rows
ROW_SETTINGS = ("network", "weights", "stats", "inference")
#: metrics.json keys that are results, not settings
_NOT_SETTINGS = ("methods", "pixels", "notes")


# ----------------------------------------------------------------------------- data

@dataclass
class ComparedRun:
    """One run directory: its name in the tables, metrics.json, curves.json and its settings (display strings)."""

    root: Path
    name: str
    metrics: dict[str, Any]
    curves: dict[str, Any] | None
    settings: dict[str, str]   # run level ("model", "stats", ...) and per method ("sml.boundary_width")
    frame_set: str             # identity of the frames evaluated

    @property
    def protocol(self) -> str:
        return str(self.metrics.get("protocol", "exact"))


@dataclass(frozen=True)
class Column:
    """A data set (kind and frame set) under one protocol."""

    dataset: str
    frame_set: str
    protocol: str
    label: str = field(compare=False)


@dataclass(frozen=True)
class Row:
    """A network and method; ``variant`` names the settings that set this row apart ("" when none)."""

    network: str
    method: str
    variant: str = ""

    @property
    def label(self) -> str:
        return f"{self.network} / {self.method}" + (f" [{self.variant}]" if self.variant else "")


@dataclass
class Cell:
    """The numbers of one method of one run."""

    run: ComparedRun
    method: str

    def value(self, key: str) -> float:
        """The metric as a fraction; NaN when the run could not compute it."""
        v = self.run.metrics["methods"][self.method].get(key)
        return math.nan if v is None else float(v)

    def curve(self) -> dict[str, Any] | None:
        c = (self.run.curves or {}).get(self.method)
        return {**c, "auroc": self.value("auroc"), "ap": self.value("ap")} if isinstance(c, dict) else None


@dataclass
class Comparison:
    """Every run's methods in one table: ``cells[(row, column)]``, rows and columns in table order."""

    runs: list[ComparedRun]
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[Row, Column], Cell]
    notes: list[str]
    differing: list[str]   # settings keys whose values differ between runs

    # -- numbers shared by the views
    def shown(self, row: Row, column: Column, key: str) -> str:
        """The cell as printed: percent with 2 decimals, ``n/a`` (NaN) or ``-`` (not evaluated)."""
        cell = self.cells.get((row, column))
        if cell is None:
            return ABSENT
        v = cell.value(key)
        return f"{100 * v:.2f}" if math.isfinite(v) else NA

    def best(self, column: Column, key: str) -> set[Row]:
        """Rows holding the best shown value of the column (ties at the printed precision all count)."""
        values = {r: float(s) for r in self.rows if (s := self.shown(r, column, key)) not in (ABSENT, NA)}
        if not values:
            return set()
        goal = {k: b for k, _, b in METRICS}[key]
        target = max(values.values()) if goal == "max" else min(values.values())
        return {r for r, v in values.items() if v == target}

    def grid(self) -> list[list[tuple[str, bool]]]:
        """Per row: every (column, metric) cell as (text, bold)."""
        best = {(c, k): self.best(c, k) for c in self.columns for k, _, _ in METRICS}
        return [[(self.shown(r, c, k), r in best[(c, k)]) for c in self.columns for k, _, _ in METRICS]
                for r in self.rows]

    def lead(self) -> list[str]:
        """The row-label columns: network, method and, when some row has one, its distinguishing settings."""
        return ["network", "method"] + (["settings"] if any(r.variant for r in self.rows) else [])

    def lead_cells(self, row: Row) -> list[str]:
        return [row.network, row.method, row.variant][:len(self.lead())]

    def setting(self, run: ComparedRun, key: str, method: str | None = None) -> str:
        """``run``'s value of a settings key ("" where it does not apply: another method's setting)."""
        if not _applies(run, key, method):
            return ""
        return run.settings.get(key, ABSENT)

    # -- views
    def to_markdown(self) -> str:
        """The table, its notes and the settings that differ, as Markdown."""
        return views.markdown(self)

    def to_csv(self) -> str:
        """Long form: one line per run and method, metrics as fractions (as in metrics.csv), differing settings."""
        return views.csv_text(self)

    def to_latex(self) -> str:
        """A booktabs ``tabular`` (``\\usepackage{booktabs}``), names escaped, best per column in bold."""
        return views.latex(self)

    def to_html(self, figures: Mapping[Column, tuple[str, str]] | None = None) -> str:
        """One offline page: the table, notes, settings that differ and the figures (relative file names)."""
        return views.html_page(self, figures or {})

    def figure_stems(self) -> dict[Column, str]:
        """The file stem of each column's ROC / PR figure (columns whose runs kept curves.json)."""
        return {c: f"compare-{i + 1}-{safe_name(c.label, 60)}" for i, c in enumerate(self.columns)
                if any(cell.curve() for (_, col), cell in self.cells.items() if col == c)}

    def write(self, out: str | Path) -> list[Path]:
        """Write compare.md/.csv/.tex/.html, the figures and compare.json to ``out``; returns the files.

        Files of ``out`` that the manifest of an earlier ``sml compare`` does not list are
        never replaced: such a file in the way is refused before anything is written.
        """
        return views.write(self, Path(out))


def compare_runs(run_dirs: Iterable[str | Path]) -> Comparison:
    """Read run directories written by ``sml eval --out`` into one :class:`Comparison`.

    Refuses (:class:`InputError`, naming the folder and the fix) folders that are not
    finished runs of sml: missing, locked (being written), interrupted, without
    run.json, with a damaged or foreign metrics.json, an unknown protocol, or given twice.
    """
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise InputError("no run directory given; pass the folders written by `sml eval --out DIR`")
    _refuse_repeats(paths)
    names = _short_names([str(p) for p in paths], lambda s: Path(s).name)
    runs = [_read_run(p, n) for p, n in zip(paths, names)]
    columns = _columns(runs)
    rows = _rows(runs, columns)
    cells = {(rows[(r.name, m)], columns[r.name]): Cell(r, m) for r in runs for m in r.metrics["methods"]}
    ordered_rows = _row_order(list(dict.fromkeys(rows.values())))
    ordered_cols = list(dict.fromkeys(columns[r.name] for r in runs))
    comparison = Comparison(runs, ordered_rows, ordered_cols, cells, [], _differing(runs))
    comparison.notes = _notes(comparison)
    return comparison


# ----------------------------------------------------------------------------- reading and checking runs

def _refuse_repeats(paths: list[Path]) -> None:
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise InputError(f"run directory {p} is given twice (also as {seen[key]}); give each run once")
        seen[key] = p


def _read_run(path: Path, name: str) -> ComparedRun:
    """metrics.json, curves.json and frames.json's ids of a finished run (stats.json only hashed: it may be a
    copy of the reference code's .npy statistics)."""
    _check_folder(path)
    metrics = _read_json(path / METRICS_JSON)
    _check_metrics(path / METRICS_JSON, metrics)
    curves = _optional_json(path / CURVES, dict, "an object of curves per method")
    _check_curves(path / CURVES, curves or {})
    frames = _optional_json(path / FRAMES, list, "a list of frames")
    if frames is not None and not all(isinstance(f, dict) and "id" in f for f in frames):
        raise InputError(f"{path / 'frames.json'} must be a list of objects with an 'id'; evaluate again with "
                         f"`sml eval ... --out {path} --overwrite`")
    return ComparedRun(path, name, metrics, curves, _run_settings(path, metrics), _frame_set(metrics, frames))


def _optional_json(path: Path, kind: type, what: str) -> Any:
    if not path.is_file():
        return None
    data = _read_json(path)
    if not isinstance(data, kind):
        raise InputError(f"{path} must hold {what} (docs/design.md, Run directory); evaluate again with "
                         f"`sml eval ... --out {path.parent} --overwrite`")
    return data


_CURVE_KEYS = {"roc": ("fpr", "tpr"), "pr": ("precision", "recall")}


def _check_curves(path: Path, curves: dict[str, Any]) -> None:
    """Each curve is a pair of equal-length lists: a broken one is refused before any figure is drawn."""
    for method, c in curves.items():
        for kind, (x, y) in _CURVE_KEYS.items():
            pts = c.get(kind) if isinstance(c, dict) else None
            if isinstance(c, dict) and pts is None:
                continue  # a curve the run did not record is simply not drawn
            ok = isinstance(pts, dict) and isinstance(pts.get(x), list) and isinstance(pts.get(y), list)
            if not ok or len(pts[x]) != len(pts[y]):
                raise InputError(f"{path}: the {kind} curve of {method!r} is not two equal-length lists {x!r} and "
                                 f"{y!r}; evaluate again with `sml eval ... --out {path.parent} --overwrite`")


def _check_folder(path: Path) -> None:
    """A finished run of sml: the folder, no lock, metrics.json and run.json (written last, by sml eval)."""
    again = f"`sml eval ... --out {path}`"
    if not path.is_dir():
        raise InputError(f"run directory {path} does not exist; give a folder written by {again}")
    if (path / LOCK).exists():
        raise InputError(f"{path} is still being written by `sml eval` ({LOCK} exists); compare it once that run "
                         f"has finished (if no run is active, it was killed: continue it with the same command "
                         f"and --resume)")
    if not (path / METRICS_JSON).is_file():
        if (path / PARTIAL).is_dir():
            raise InputError(f"{path} holds an interrupted run (no metrics.json; its partial state is in "
                             f"{path / PARTIAL}); finish it with the same `sml eval` command and --resume")
        raise InputError(f"{path} is not a run directory of sml (no metrics.json); give folders written by "
                         f"`sml eval --out DIR`")
    if not (path / RUN_MANIFEST).is_file():
        raise InputError(f"{path} has no {RUN_MANIFEST}: it was not written by this version's `sml eval` (or by "
                         f"another tool); evaluate again with {again} --overwrite")
    _read_json(path / RUN_MANIFEST)  # a binary or broken file is named exactly
    run_files(path)  # its structure


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); the run is damaged: evaluate again with "
                         f"`sml eval ... --out {path.parent} --overwrite`") from None


def _check_metrics(path: Path, metrics: dict[str, Any]) -> None:
    from sml.protocols import PROTOCOLS

    fix = f"evaluate again with `sml eval ... --out {path.parent} --overwrite`"
    if not isinstance(metrics, dict) or not isinstance(metrics.get("methods"), dict):
        raise InputError(f"{path} has no 'methods' object (docs/design.md, Run directory); {fix}")
    if not isinstance(metrics.get("dataset"), str) or not metrics["dataset"]:
        raise InputError(f"{path} names no 'dataset' (a data-set kind, see docs/design.md); {fix}")
    protocol = metrics.get("protocol", "exact")
    if protocol not in PROTOCOLS:
        raise InputError(f"{path}: unknown protocol {protocol!r} (this sml knows {', '.join(PROTOCOLS)}); {fix}")
    methods = metrics["methods"]
    if not methods:
        raise InputError(f"{path} holds no methods ('methods' is empty); {fix}")
    for method, entry in methods.items():
        _check_method(path, method, entry, fix)


def _check_method(path: Path, method: str, entry: Any, fix: str) -> None:
    if not isinstance(entry, dict):
        raise InputError(f"{path}: method {method!r} is not an object of metrics; {fix}")
    for key, _, _ in METRICS:
        v = entry.get(key)
        ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                           and (math.isnan(v) or 0.0 <= v <= 1.0))
        if not ok:
            raise InputError(f"{path}: {method} {key} is {v!r}, not a fraction in [0, 1] (or NaN / null); {fix}")
    if not isinstance(entry.get("settings", {}), dict):
        raise InputError(f"{path}: {method} 'settings' must be an object; {fix}")


def _show(v: Any) -> str:
    if isinstance(v, dict) and "sha256" in v:  # a network identity (metrics.json "network"): name and digest
        return f"{v.get('name')} #{str(v.get('sha256'))[:8]}"
    if isinstance(v, dict) and "verdict" in v:  # a statistics pairing: its networks are shown as "network"
        return str(v["verdict"]) + (f" ({v['override']})" if v.get("override") else "")
    if isinstance(v, str):
        return v
    return "none" if v is None else json.dumps(v, sort_keys=True)


def _run_settings(root: Path, m: dict[str, Any]) -> dict[str, str]:
    out = {"dataset": str(m["dataset"]), "protocol": str(m.get("protocol", "exact"))}
    out.update({k: _show(v) for k, v in m.items() if k not in _NOT_SETTINGS and k not in out})
    out["stats"] = _stats_identity(root, m.get("stats"))
    for method, entry in m["methods"].items():
        out.update({f"{method}.{k}": _show(v) for k, v in (entry.get("settings") or {}).items()})
    return out


def _stats_identity(root: Path, recorded: Any) -> str:
    """The statistics file's name and, when the run kept its copy, the first digits of its SHA-256."""
    if recorded in (None, "None", ""):
        return "none"
    copy = root / STATS
    digest = f" #{hashlib.sha256(copy.read_bytes()).hexdigest()[:8]}" if copy.is_file() else ""
    return Path(str(recorded)).name + digest


def _frame_set(metrics: dict[str, Any], frames: list[dict[str, Any]] | None) -> str:
    """Which frames were evaluated: a digest of frames.json's ids (else the frame counts)."""
    if frames is None:
        return f"n{metrics.get('frames')}-{metrics.get('frames_scored')}"
    ids = "\n".join(sorted(str(f["id"]) for f in frames))
    return hashlib.sha256(ids.encode()).hexdigest()[:12]


def _applies(run: ComparedRun, key: str, method: str | None = None) -> bool:
    """Whether a settings key concerns ``run`` (and ``method``): a method's settings only its own rows."""
    if "." not in key:
        return True
    owner = key.split(".", 1)[0]
    return owner in run.metrics["methods"] and (method is None or owner == method)


# ----------------------------------------------------------------------------- rows and columns

def _short_names(values: list[str], short: Any) -> list[str]:
    """``short(v)`` for each value when those are unique, else the values themselves."""
    shorts = [short(v) for v in values]
    return shorts if len(set(shorts)) == len(set(values)) else list(values)


def _network_name(model: str) -> str:
    p = Path(model)
    return p.stem if p.suffix.lower() in (".yaml", ".yml") else p.name


def _columns(runs: list[ComparedRun]) -> dict[str, Column]:
    """Each run's column; labels say frames / protocol only where the same kind or several protocols occur."""
    protocols = {r.protocol for r in runs}
    sets: dict[str, dict[str, str]] = {}  # kind -> frame set -> frames count
    for r in runs:
        sets.setdefault(r.metrics["dataset"], {})[r.frame_set] = str(r.metrics.get("frames", "?"))
    out = {}
    for r in runs:
        kind, counts = r.metrics["dataset"], sets[r.metrics["dataset"]]
        extra = []
        if len(counts) > 1:
            n = counts[r.frame_set]
            same = sum(c == n for c in counts.values()) > 1
            extra.append(f"{n} frames" + (f" #{r.frame_set[:6]}" if same else ""))
        if len(protocols) > 1:
            extra.append(f"protocol {r.protocol}")
        label = kind + (f" ({', '.join(extra)})" if extra else "")
        out[r.name] = Column(kind, r.frame_set, r.protocol, label)
    return out


def _row_settings(run: ComparedRun, method: str) -> dict[str, str]:
    keys = [k for k in ROW_SETTINGS if k in run.settings and (k != "stats" or _needs_stats(method))]
    out = {k: run.settings[k] for k in keys}
    out.update({k.split(".", 1)[1]: v for k, v in run.settings.items() if k.startswith(method + ".")})
    return out


def _needs_stats(method: str) -> bool:
    from sml.scores import SCORERS

    cls = SCORERS.get(method)
    return True if cls is None else bool(cls.needs_stats)  # an unknown method: keep its statistics apart


def _differing_keys(settings: list[dict[str, str]]) -> list[str]:
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys if len({s.get(k, ABSENT) for s in settings}) > 1]


def _rows(runs: list[ComparedRun], columns: dict[str, Column]) -> dict[tuple[str, str], Row]:
    """The row of each (run, method): network + method + the row settings that differ among its runs.

    Runs whose network, method and settings agree on the same column (the same
    configuration evaluated twice) are told apart by their run folder's name.
    """
    networks = list(dict.fromkeys(str(r.metrics.get("model", "?")) for r in runs))
    shown = dict(zip(networks, _short_names(networks, _network_name)))
    groups: dict[tuple[str, str], list[tuple[ComparedRun, dict[str, str]]]] = {}
    for r in runs:
        for m in r.metrics["methods"]:
            groups.setdefault((shown[str(r.metrics.get("model", "?"))], m), []).append((r, _row_settings(r, m)))
    rows: dict[tuple[str, str], Row] = {}
    for (net, m), items in groups.items():
        keys = _differing_keys([s for _, s in items])
        for r, s in items:
            rows[(r.name, m)] = Row(net, m, "; ".join(f"{k}={s.get(k, ABSENT)}" for k in keys))
    taken: dict[tuple[Row, Column], int] = {}
    for (name, _), row in rows.items():
        taken[(row, columns[name])] = taken.get((row, columns[name]), 0) + 1
    for (name, m), row in rows.items():
        if taken[(row, columns[name])] > 1:
            rows[(name, m)] = replace(row, variant="; ".join(filter(None, [row.variant, f"run={name}"])))
    return rows


def _row_order(rows: list[Row]) -> list[Row]:
    from sml.scores.registry import METHODS

    nets = list(dict.fromkeys(r.network for r in rows))
    rank = {m: i for i, m in enumerate(METHODS)}
    return sorted(rows, key=lambda r: (nets.index(r.network), rank.get(r.method, len(rank))))


def _differing(runs: list[ComparedRun]) -> list[str]:
    """Settings keys with more than one value among the runs they concern."""
    keys = list(dict.fromkeys(k for r in runs for k in r.settings))
    return [k for k in keys if len({r.settings.get(k, ABSENT) for r in runs if _applies(r, k)}) > 1]


def _notes(c: Comparison) -> list[str]:
    """What a reader of the table needs: protocols, frames per column, the runs' own notes, the marks."""
    protocols = list(dict.fromkeys(col.protocol for col in c.columns))
    if len(protocols) > 1:
        notes = [f"the runs use different protocols ({', '.join(protocols)}): each column's label names its "
                 "protocol, and numbers of different protocols are not comparable (docs/protocols.md)"]
    else:
        notes = [f"protocol {protocols[0]} for every run (docs/protocols.md)"]
    for col in c.columns:
        runs = [r for r in c.runs if _column_of(c, r) == col]
        m = runs[0].metrics
        notes.append(f"{col.label}: {m.get('frames', '?')} labelled frames, protocol {col.protocol} (FPR@95 "
                     f"convention {m.get('fpr95_convention', '?')}); run(s) {', '.join(r.name for r in runs)}")
        notes += [f"{col.label}: {n}" for n in dict.fromkeys(n for r in runs for n in r.metrics.get("notes") or [])]
    if any("run=" in r.variant for r in c.rows):
        notes.append("run=NAME: the same network, method and settings were evaluated more than once on one data "
                     "set and protocol; each run keeps its own row")
    notes.append("bold: the best value of each column at the printed precision (highest AUROC and AP, lowest "
                 f"FPR@95; ties all bold); {NA}: the run could not compute it; {ABSENT}: not evaluated")
    return notes


def _column_of(c: Comparison, run: ComparedRun) -> Column | None:
    return next((col for (_, col), cell in c.cells.items() if cell.run is run), None)

