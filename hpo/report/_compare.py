"""`hpo compare`: which of two studies found the better model, by how much, whether that is more than
noise, and why — with their learning curves side by side.

Noise is the spread a rerun could produce: the standard deviation over retrain seeds when
`hpo evaluate --retrain-seeds` measured it, else the spread of each study's top trials (a rougher
proxy that mixes hyperparameters and seeds). A gap counts as real when it exceeds twice the larger.

What the two studies did differently is read from their stored study files: every setting whose
effective value differs (a hyperparameter searched in one and fixed in the other, another range, a
different budget). When only regularization settings differ, the comparison is a controlled
experiment and the verdict puts the result down to the regularizer, or says the evidence does not
separate them.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna

from hpo.config import StudyConfig
from hpo.errors import HpoError, UsageError
from hpo.evaluation import _plots as eval_plots
from hpo.evaluation import existing_results
from hpo.evaluation._bootstrap import interval
from hpo.report._curves import Curves, curve_keys, metric_units, read_curves, side_by_side_figure, training_counterpart
from hpo.report._html import Page
from hpo.report._report import check_writable, publish
from hpo.running.results import StudyRef, best_trials, load
from hpo.running.meta import PARENT_RUN_ATTR, RUN_ID_ATTR, stored_config
from hpo.running.tracking import Tracker, TrackingUnavailable

NOISE_FACTOR = 2.0
CONVERGED = 0.05  # "converged" = within 5% of the best value
OVERFIT_RATIO = 1.1  # validation loss more than 10% above training loss at the best epoch
REGULARIZERS = (
    "dropout", "weight_decay", "l1", "batch_norm", "label_smoothing",
    "augment_flip", "augment_vflip", "augment_crop", "augment_cutout", "augment_jitter", "augment_rotation",
    "augment_zoom", "augment_shear", "augment_noise",
)  # fmt: skip
# Settings that only regularize: a pair of studies differing in nothing else is a controlled comparison.
REGULARIZATION_SETTINGS = (*REGULARIZERS, "early_stopping_patience", "early_stopping_min_delta")
# Study-file fields that say where results go or how trials run, not what they compute.
NOT_SETTINGS = ("name", "storage", "tracking_uri", "execution")
SPREAD_TOP = 5


@dataclass
class StudyFacts:
    """What the verdict weighs for one study (all from its best trial unless said otherwise)."""

    name: str
    metric: str
    maximize: bool
    best_value: float
    best_trial: int
    spread: float | None = None  # std of the top trials' values
    spread_of: int = 0
    seed_std: float | None = None  # std of the test metric over retrain seeds
    test_metric: str | None = None
    test_value: float | None = None
    test_ensemble: float | None = None
    test_interval: tuple[float, float] | None = None  # 95% bootstrap interval of test_value over the test rows
    n_params: int | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    converged_epoch: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    train_score: float | None = None  # the metric's training counterpart (e.g. train_acc) at the best epoch
    val_score: float | None = None  # the metric itself at the best epoch
    patience: int | None = None
    regularization: dict[str, object] = field(default_factory=dict)
    curves: Curves | None = None

    @property
    def noise(self) -> tuple[float | None, str]:
        if self.seed_std is not None and math.isfinite(self.seed_std):
            return self.seed_std, "std over retrain seeds"
        return self.spread, f"std of the top {self.spread_of} trials"

    @property
    def loss_gap(self) -> float | None:
        """Generalization gap at the best epoch: validation minus training loss."""
        return None if self.train_loss is None or self.val_loss is None else self.val_loss - self.train_loss

    @property
    def score_gap(self) -> float | None:
        """Generalization gap in the metric at the best epoch: how much better it is on training data."""
        if self.train_score is None or self.val_score is None:
            return None
        return self.train_score - self.val_score if self.maximize else self.val_score - self.train_score

    @property
    def overfit_ratio(self) -> float | None:
        if self.train_loss is None or self.val_loss is None or self.train_loss <= 0:
            return None
        return self.val_loss / self.train_loss


def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


# -- what the two study files set differently -------------------------------------------------------
Differences = dict[str, tuple[str, str]]  # setting -> (A's value, B's value), in words


def _flatten(data: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _describe_spec(spec: dict[str, object]) -> str:
    """A searched hyperparameter in words: `searched 0.1 to 0.5 (log)`, `searched among sgd, adam`."""
    if spec["type"] == "categorical":
        text = "searched among " + ", ".join(str(c) for c in spec["choices"])  # type: ignore[union-attr]
    else:
        scale = " (log)" if spec.get("log") else f" (step {spec['step']})" if spec.get("step") else ""
        text = f"searched {_num(float(spec['low']))} to {_num(float(spec['high']))}{scale}"  # type: ignore[arg-type]
    when = spec.get("when")
    return text + (
        f" when {', '.join(f'{k} in {v}' for k, v in when.items())}" if isinstance(when, dict) and when else ""
    )


def _effective_settings(config: StudyConfig) -> dict[str, str]:
    """Every setting that shapes a study's results, by name, as words: each hyperparameter (searched
    with its range, else its fixed or default value) and every other study-file field."""
    resolved = config.resolved()
    out = {
        k: str(v)
        for k, v in _flatten({k: v for k, v in resolved.items() if k not in (*NOT_SETTINGS, "params", "fixed")}).items()
    }
    values = config.trial_hyperparameters({})  # table defaults < fixed
    for name in sorted(set(values) | set(resolved["params"])):
        spec = resolved["params"].get(name)
        out[name] = _describe_spec({k: v for k, v in spec.items() if v is not None}) if spec else str(values.get(name))
    return out


def setting_differences(a: StudyConfig, b: StudyConfig) -> Differences:
    """The settings whose effective values differ between two study files (their names, storage and
    how trials are run aside)."""
    left, right = _effective_settings(a), _effective_settings(b)
    return {
        k: (left.get(k, "not set"), right.get(k, "not set"))
        for k in sorted(set(left) | set(right))
        if left.get(k) != right.get(k)
    }


def _is_on(description: str) -> bool:
    return description.startswith("searched") or description not in ("0", "0.0", "False", "None", "none", "not set")


def _regularizer(differences: Differences, side: int) -> str:
    """What one side regularizes with, among the differing regularization settings."""
    used = [f"{k} {v[side]}" for k, v in differences.items() if _is_on(v[side])]
    return ", ".join(used) if used else "no regularizer"


def _attribution(
    a: StudyFacts, b: StudyFacts, differences: Differences, *, separated: bool | None, why_not: str
) -> str:
    """Whether the result can be put down to the one thing the studies did differently."""
    if not differences:
        return "Setup: the two study files are the same apart from their names, so any difference between them is seed and sampling noise."
    if not all(k in REGULARIZATION_SETTINGS for k in differences):
        listed = "; ".join(f"{k}: {va} vs {vb}" for k, (va, vb) in list(differences.items())[:8])
        more = f"; and {len(differences) - 8} more" if len(differences) > 8 else ""
        return (
            f"Setup: not a controlled comparison — the study files differ in {len(differences)} setting(s) ({listed}{more}), "
            "so the result cannot be put down to any single one of them."
        )
    reg_a, reg_b = _regularizer(differences, 0), _regularizer(differences, 1)
    setup = (
        f"Setup: a controlled comparison — the study files differ only in regularization: {a.name} uses {reg_a}; {b.name} uses {reg_b}. "
        "Network, data, budget, optimizer search and every other setting are the same."
    )
    if separated:
        winner, loser, reg_w, reg_l = (
            (a, b, reg_a, reg_b) if _better(a.best_value, b.best_value, a.maximize) else (b, a, reg_b, reg_a)
        )
        return f"{setup} The regularizer is the only difference, so it decides the result: {reg_w} ({winner.name}) beats {reg_l} ({loser.name}) for this network and budget."
    return f"{setup} The evidence does not separate {reg_a} ({a.name}) from {reg_b} ({b.name}): {why_not}."


def verdict(a: StudyFacts, b: StudyFacts, *, differences: Differences | None = None) -> str:
    """A short written verdict (Markdown): the better study on validation and test, the margin, noise,
    what the studies did differently (when their study files are given) and why."""
    direction = "higher" if a.maximize else "lower"
    lines: list[str] = []
    separated: bool | None = False
    why_not = "both reach the same validation value"
    if a.best_value == b.best_value:
        lines.append(f"**Verdict: a tie on validation** — both reach {a.metric} {_num(a.best_value)}.")
        winner, loser = a, b
    else:
        winner, loser = (a, b) if _better(a.best_value, b.best_value, a.maximize) else (b, a)
        gap = abs(winner.best_value - loser.best_value)
        relative = gap / abs(loser.best_value) * 100 if loser.best_value else float("inf")
        lines.append(
            f"**Verdict: {winner.name} did better on validation** — {a.metric} {_num(winner.best_value)} vs {_num(loser.best_value)} "
            f"({direction} is better): {_num(gap)} better ({relative:.1f}%)."
        )
        noises = [(s.name, *s.noise) for s in (a, b) if s.noise[0] is not None]
        if noises:
            name, noise, kind = max(noises, key=lambda n: n[1])
            threshold = NOISE_FACTOR * noise
            if gap > threshold:
                separated = True
                lines.append(
                    f"The gap exceeds seed noise: it is {gap / noise:.1f}× the larger spread ({_num(noise)}, {kind} of {name}); a rerun is unlikely to reverse it."
                )
            else:
                why_not = f"the validation gap is {gap / noise:.1f}× the noise, under the {NOISE_FACTOR:g}× bar"
                lines.append(
                    f"The gap is within seed noise: it is {gap / noise:.1f}× the larger spread ({_num(noise)}, {kind} of {name}), under the {NOISE_FACTOR:g}× bar; treat the two as equivalent until more seeds say otherwise."
                )
        else:
            separated, why_not = None, "seed noise is unknown, so the gap cannot be judged"
            lines.append(
                "Seed noise is unknown (too few complete trials and no retrain seeds), so the gap's significance cannot be judged."
            )
    if a.test_value is not None and b.test_value is not None and a.test_metric == b.test_metric:
        test_better = a if _better(a.test_value, b.test_value, a.maximize) else b
        other = b if test_better is a else a
        agree = (
            "confirming the validation result"
            if test_better is winner and a.best_value != b.best_value
            else "unlike validation"
            if a.best_value != b.best_value
            else ""
        )
        lines.append(
            f"On the test split (read once by `hpo evaluate`), {test_better.name}'s best model scores {a.test_metric} {_num(test_better.test_value)} "
            f"vs {_num(other.test_value)}, {agree}.".replace(", .", ".")
        )
        test_gap = abs(a.test_value - b.test_value)
        seed_stds = [s.seed_std for s in (a, b) if s.seed_std is not None and math.isfinite(s.seed_std)]
        if seed_stds:
            seed_noise = max(seed_stds)
            beyond = test_gap > NOISE_FACTOR * seed_noise
            lines.append(
                f"On test the gap is {_num(test_gap)}, {test_gap / seed_noise:.1f}× the larger seed std ({_num(seed_noise)}): "
                + ("beyond seed noise." if beyond else f"within seed noise (under the {NOISE_FACTOR:g}× bar).")
            )
            if separated and (not beyond or test_better is not winner):
                separated, why_not = (
                    False,
                    "validation favours one, but the test split does not confirm it beyond seed noise",
                )
        elif separated and test_better is not winner:
            separated, why_not = False, "validation and the test split disagree on which is better"
        if a.test_interval is not None and b.test_interval is not None:
            overlap = a.test_interval[0] <= b.test_interval[1] and b.test_interval[0] <= a.test_interval[1]
            shown = ", ".join(
                f"{s.name} [{_num(s.test_interval[0])}, {_num(s.test_interval[1])}]"
                for s in (a, b)
                if s.test_interval is not None
            )
            lines.append(
                f"95% bootstrap intervals of {a.test_metric} over the test rows: {shown}; "
                + (
                    "they overlap, so the test split cannot tell the two apart."
                    if overlap
                    else "they do not overlap: the test difference is real at this test size."
                )
            )
            if separated and overlap:
                separated, why_not = False, "validation favours one, but the test intervals overlap"
        if a.test_ensemble is not None and b.test_ensemble is not None:
            lines.append(f"Ensembles on test: {a.name} {_num(a.test_ensemble)}, {b.name} {_num(b.test_ensemble)}.")
    else:
        missing = [s.name for s in (a, b) if s.test_value is None]
        lines.append(
            f"Test: not compared ({', '.join(missing) or 'metrics differ'} not evaluated; run `hpo evaluate`)."
        )
    if differences is not None:
        lines.append("")
        lines.append(_attribution(a, b, differences, separated=separated, why_not=why_not))
    lines.append("")
    lines.append("Why:")
    lines.extend(f"- {reason}" for reason in _reasons(winner, loser))
    return "\n".join(lines) + "\n"


def _reasons(winner: StudyFacts, loser: StudyFacts) -> list[str]:
    reasons = []
    gaps = [s for s in (winner, loser) if s.loss_gap is not None]
    if gaps:
        described = []
        for s in gaps:
            text = f"{s.name}: validation minus training loss {_num(s.loss_gap)}"
            if s.score_gap is not None:
                counterpart = training_counterpart(s.metric) or ""
                text += f", {counterpart} {_num(s.train_score)} vs {s.metric} {_num(s.val_score)} ({_num(s.score_gap)} better on training data)"
            described.append(text)
        reasons.append(f"Generalization gap at the best epoch: {'; '.join(described)}.")
    rw, rl = winner.overfit_ratio, loser.overfit_ratio
    if rw is not None and rl is not None:
        facts = (
            f"at the best epoch, validation loss is {rw:.2f}× training loss for {winner.name} ({_num(winner.val_loss)} vs {_num(winner.train_loss)}) "
            f"and {rl:.2f}× for {loser.name} ({_num(loser.val_loss)} vs {_num(loser.train_loss)})"
        )
        overfitting = [s for s, r in ((winner, rw), (loser, rl)) if r > OVERFIT_RATIO]
        if not overfitting:
            judgement = "neither overfits there (training loss includes dropout and penalties, so it can sit above validation loss)"
        elif len(overfitting) == 1:
            judgement = f"{overfitting[0].name} overfits, the other does not"
        else:
            judgement = f"both overfit, {max(overfitting, key=lambda s: s.overfit_ratio or 0).name} more"
        reasons.append(f"Overfitting: {facts}; {judgement}.")
    if winner.converged_epoch is not None and loser.converged_epoch is not None:
        if winner.converged_epoch == loser.converged_epoch:
            pace = "both get there by the same epoch"
        else:
            faster = winner if winner.converged_epoch < loser.converged_epoch else loser
            pace = f"{faster.name} gets there in fewer epochs"
        reasons.append(
            f"Convergence: {winner.name} came within {CONVERGED:.0%} of its best by epoch {winner.converged_epoch} (best at {winner.best_epoch}, {winner.epochs_run} run), "
            f"{loser.name} by epoch {loser.converged_epoch} (best at {loser.best_epoch}, {loser.epochs_run} run); {pace}."
        )
        for s in (winner, loser):
            if s.best_epoch is not None and s.epochs_run is not None and s.best_epoch >= s.epochs_run - 1:
                reasons.append(
                    f"{s.name} was still improving at its last epoch: it stopped on the epoch budget, and more epochs would likely help it."
                )
    if winner.n_params is not None and loser.n_params is not None:
        ratio = max(winner.n_params, loser.n_params) / max(min(winner.n_params, loser.n_params), 1)
        bigger = winner if winner.n_params >= loser.n_params else loser
        reasons.append(
            f"Size: {winner.name} has {winner.n_params:,} parameters, {loser.name} {loser.n_params:,} ({bigger.name} is {ratio:.1f}× larger)."
        )
    reasons.append(
        f"Regularization: {winner.name}: {_describe_regularization(winner)}; {loser.name}: {_describe_regularization(loser)}."
    )
    return reasons


def _describe_regularization(facts: StudyFacts) -> str:
    used = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in facts.regularization.items()]
    if facts.patience:
        used.append(f"early stopping (patience {facts.patience})")
    return ", ".join(used) if used else "none"


def gather_facts(study: optuna.Study, tracker: Tracker, *, label: str | None = None) -> StudyFacts:
    config = stored_config(study)
    metric = config.metrics[0]
    maximize = config.directions[0] == "maximize"
    top = best_trials(study, SPREAD_TOP)
    if not top:
        raise HpoError(f"study {study.study_name!r} has no complete trial to compare")
    best = top[0]
    values = [t.values[0] for t in top]
    hp = config.trial_hyperparameters(best.params)
    facts = StudyFacts(
        name=label or study.study_name,
        metric=metric,
        maximize=maximize,
        best_value=float(best.values[0]),
        best_trial=best.number,
        spread=float(np.std(values, ddof=1)) if len(values) > 1 else None,
        spread_of=len(values),
        patience=int(hp.get("early_stopping_patience") or 0),
        regularization={k: hp[k] for k in REGULARIZERS if hp.get(k) not in (None, 0, 0.0, False, "none")},
    )
    run_id = best.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        summary = tracker.get_run(str(run_id)).data.metrics
        facts.n_params = int(summary["n_params"]) if "n_params" in summary else None
        facts.best_epoch = int(summary["best_epoch"]) if "best_epoch" in summary else None
        curves = read_curves(
            tracker, str(run_id), trial_number=best.number, state=best.state.name, keys=curve_keys(metric)
        )
        facts.curves = curves
        steps, series = curves.get(metric)
        if len(steps):
            facts.epochs_run = int(steps.max()) + 1
            best_value = series.max() if maximize else series.min()
            close = np.abs(series - best_value) <= CONVERGED * max(abs(best_value), 1e-12)
            facts.converged_epoch = int(steps[np.argmax(close)])
        if facts.best_epoch is not None:
            facts.train_loss = curves.at_epoch("train_loss", facts.best_epoch)
            facts.val_loss = curves.at_epoch("val_loss", facts.best_epoch)
            counterpart = training_counterpart(metric)
            facts.train_score = curves.at_epoch(counterpart, facts.best_epoch) if counterpart else None
            facts.val_score = curves.at_epoch(metric, facts.best_epoch)
    evaluation = existing_results(tracker, study.study_name)
    if evaluation is not None and metric.startswith("val_"):
        test_metric = "test_" + metric[len("val_") :]
        facts.test_metric = test_metric
        single, ensemble = evaluation.best("trial"), evaluation.best("ensemble")
        if single is not None:
            facts.test_value = single.metrics.get(test_metric)
            facts.seed_std = single.metrics.get(f"{test_metric}_seed_std")
            facts.test_interval = interval(single.metrics, test_metric)
        if ensemble is not None:
            facts.test_ensemble = ensemble.metrics.get(test_metric)
    return facts


@dataclass
class CompareResult:
    out: Path
    verdict: str
    images: list[str]
    logged_to: list[str]
    notes: list[str]


def compare_studies(ref_a: StudyRef, ref_b: StudyRef, *, out: Path | None = None) -> CompareResult:
    """Write verdict.md, learning_curves.png and index.html to `out`, and log them to both parent runs."""
    out = Path(out) if out is not None else Path("hpo-compare") / f"{ref_a.name}-vs-{ref_b.name}"
    check_writable(out)
    studies = [load(ref_a), load(ref_b)]
    configs = [stored_config(s) for s in studies]
    if configs[0].metrics[0] != configs[1].metrics[0]:
        raise UsageError(
            f"compare: {ref_a.name} optimizes {configs[0].metrics[0]} and {ref_b.name} {configs[1].metrics[0]}; compare studies of the same metric"
        )
    same = ref_a.name == ref_b.name
    labels = [f"{ref_a.name} (A)", f"{ref_b.name} (B)"] if same else [ref_a.name, ref_b.name]
    trackers = [Tracker(r.settings.tracking_uri, s.study_name) for r, s in zip((ref_a, ref_b), studies)]
    try:
        facts = [gather_facts(s, t, label=label) for s, t, label in zip(studies, trackers, labels)]
    except TrackingUnavailable as exc:
        raise HpoError(f"compare: {exc}") from None
    differences = setting_differences(*configs)
    text = verdict(*facts, differences=differences)
    page = Page(f"hpo compare: {labels[0]} vs {labels[1]}")
    page.heading(f"{labels[0]} vs {labels[1]}", 1)
    with tempfile.TemporaryDirectory(prefix="hpo-compare-") as tmp:
        staging = Path(tmp)
        if facts[0].curves is not None and facts[1].curves is not None:
            units = metric_units(configs[0]) if configs[0].objective == configs[1].objective else {}
            figure = side_by_side_figure(
                facts[0].curves, facts[1].curves, facts[0].metric, names=(labels[0], labels[1]), units=units
            )
            eval_plots.save(figure, staging / "learning_curves.png")
            page.image(
                "learning_curves.png",
                "Best trial of each study: the study metric per epoch (top, shared scale), training vs validation loss, and "
                "training vs validation metric where the objective logs it (e.g. accuracy).",
            )
        page.heading("Verdict")
        page.preformatted(text)
        page.heading("Facts")
        rows = [
            ["best " + facts[0].metric, facts[0].best_value, facts[1].best_value],
            ["best trial", facts[0].best_trial, facts[1].best_trial],
            ["spread of top trials (std)", facts[0].spread, facts[1].spread],
            ["test " + (facts[0].test_metric or ""), facts[0].test_value, facts[1].test_value],
            ["test, ensemble", facts[0].test_ensemble, facts[1].test_ensemble],
            ["std over retrain seeds", facts[0].seed_std, facts[1].seed_std],
            ["parameters", facts[0].n_params, facts[1].n_params],
            [
                "best epoch / epochs run",
                f"{facts[0].best_epoch} / {facts[0].epochs_run}",
                f"{facts[1].best_epoch} / {facts[1].epochs_run}",
            ],
            ["val/train loss at best epoch", facts[0].overfit_ratio, facts[1].overfit_ratio],
            ["generalization gap: val − train loss at best epoch", facts[0].loss_gap, facts[1].loss_gap],
            [
                f"generalization gap: {training_counterpart(facts[0].metric) or 'train'} vs {facts[0].metric} at best epoch",
                facts[0].score_gap,
                facts[1].score_gap,
            ],
            ["regularization", _describe_regularization(facts[0]), _describe_regularization(facts[1])],
        ]
        page.table(["", labels[0], labels[1]], rows)
        page.heading("What the study files set differently")
        if differences:
            page.table(["setting", labels[0], labels[1]], [[k, va, vb] for k, (va, vb) in differences.items()])
        else:
            page.paragraph("Nothing but their names.")
        (staging / "verdict.md").write_text(f"# {labels[0]} vs {labels[1]}\n\n{text}", encoding="utf-8")
        (staging / "index.html").write_text(page.render(), encoding="utf-8")
        publish(staging, out)
    logged_to: list[str] = []
    notes: list[str] = []
    for study, tracker in zip(studies, trackers):
        parent = study.user_attrs.get(PARENT_RUN_ATTR)
        if not parent or parent in logged_to:
            continue
        try:
            tracker.log_artifacts(str(parent), out, f"compare/{ref_a.name}-vs-{ref_b.name}")
            logged_to.append(str(parent))
        except TrackingUnavailable as exc:
            notes.append(f"not logged to the parent run of {study.study_name}: {exc}")
    return CompareResult(out=out, verdict=text, images=list(page.images), logged_to=logged_to, notes=notes)
