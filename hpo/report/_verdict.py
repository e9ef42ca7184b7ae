"""The written verdict of a comparison: which study won, whether by more than noise, and why."""

from __future__ import annotations

import math

from hpo.report._curves import training_counterpart
from hpo.report._differences import Differences, _regularizer
from hpo.report._facts import CONVERGED, NOISE_FACTOR, OVERFIT_RATIO, REGULARIZATION_SETTINGS, StudyFacts, _better, _num


def _attribution(
    a: StudyFacts, b: StudyFacts, differences: Differences, *, separated: bool | None, why_not: str
) -> str:
    """Whether the result can be put down to the one thing the studies did differently."""
    if not differences:
        return (
            "Setup: the two study files are the same apart from their names, so any difference between them is seed "
            "and sampling noise."
        )
    if not all(k in REGULARIZATION_SETTINGS for k in differences):
        listed = "; ".join(f"{k}: {va} vs {vb}" for k, (va, vb) in list(differences.items())[:8])
        more = f"; and {len(differences) - 8} more" if len(differences) > 8 else ""
        return (
            f"Setup: not a controlled comparison — the study files differ in {len(differences)} setting(s) "
            f"({listed}{more}), "
            "so the result cannot be put down to any single one of them."
        )
    reg_a, reg_b = _regularizer(differences, 0), _regularizer(differences, 1)
    setup = (
        f"Setup: a controlled comparison — the study files differ only in regularization: {a.name} uses {reg_a}; "
        f"{b.name} uses {reg_b}. "
        "Network, data, budget, optimizer search and every other setting are the same."
    )
    if separated:
        winner, loser, reg_w, reg_l = (
            (a, b, reg_a, reg_b) if _better(a.best_value, b.best_value, a.maximize) else (b, a, reg_b, reg_a)
        )
        return (
            f"{setup} The regularizer is the only difference, so it decides the result: {reg_w} ({winner.name}) beats "
            f"{reg_l} ({loser.name}) for this network and budget."
        )
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
            f"**Verdict: {winner.name} did better on validation** — {a.metric} {_num(winner.best_value)} vs "
            f"{_num(loser.best_value)} "
            f"({direction} is better): {_num(gap)} better ({relative:.1f}%)."
        )
        noises = [(s.name, noise, kind) for s in (a, b) for noise, kind in [s.noise] if noise is not None]
        if noises:
            name, noise, kind = max(noises, key=lambda n: n[1])
            threshold = NOISE_FACTOR * noise
            if gap > threshold:
                separated = True
                lines.append(
                    f"The gap exceeds seed noise: it is {gap / noise:.1f}× the larger spread ({_num(noise)}, {kind} "
                    f"of {name}); a rerun is unlikely to reverse it."
                )
            else:
                why_not = f"the validation gap is {gap / noise:.1f}× the noise, under the {NOISE_FACTOR:g}× bar"
                lines.append(
                    f"The gap is within seed noise: it is {gap / noise:.1f}× the larger spread ({_num(noise)}, {kind} "
                    f"of {name}), under the {NOISE_FACTOR:g}× bar; treat the two as equivalent until more seeds say "
                    "otherwise."
                )
        else:
            separated, why_not = None, "seed noise is unknown, so the gap cannot be judged"
            lines.append(
                "Seed noise is unknown (too few complete trials and no retrain seeds), so the gap's significance "
                "cannot be judged."
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
            f"On the test split (read once by `hpo evaluate`), {test_better.name}'s best model scores {a.test_metric} "
            f"{_num(test_better.test_value)} "
            f"vs {_num(other.test_value)}, {agree}.".replace(", .", ".")
        )
        test_gap = abs(a.test_value - b.test_value)
        seed_stds = [s.seed_std for s in (a, b) if s.seed_std is not None and math.isfinite(s.seed_std)]
        if seed_stds:
            seed_noise = max(seed_stds)
            beyond = test_gap > NOISE_FACTOR * seed_noise
            lines.append(
                f"On test the gap is {_num(test_gap)}, {test_gap / seed_noise:.1f}× the larger seed std "
                f"({_num(seed_noise)}): "
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
                text += (
                    f", {counterpart} {_num(s.train_score)} vs {s.metric} {_num(s.val_score)} ({_num(s.score_gap)} "
                    "better on training data)"
                )
            described.append(text)
        reasons.append(f"Generalization gap at the best epoch: {'; '.join(described)}.")
    rw, rl = winner.overfit_ratio, loser.overfit_ratio
    if rw is not None and rl is not None:
        facts = (
            f"at the best epoch, validation loss is {rw:.2f}× training loss for {winner.name} "
            f"({_num(winner.val_loss)} vs {_num(winner.train_loss)}) "
            f"and {rl:.2f}× for {loser.name} ({_num(loser.val_loss)} vs {_num(loser.train_loss)})"
        )
        overfitting = [s for s, r in ((winner, rw), (loser, rl)) if r > OVERFIT_RATIO]
        if not overfitting:
            judgement = (
                "neither overfits there (training loss includes dropout and penalties, so it can sit above validation "
                "loss)"
            )
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
            f"Convergence: {winner.name} came within {CONVERGED:.0%} of its best by epoch {winner.converged_epoch} "
            f"(best at {winner.best_epoch}, {winner.epochs_run} run), "
            f"{loser.name} by epoch {loser.converged_epoch} (best at {loser.best_epoch}, {loser.epochs_run} run); "
            f"{pace}."
        )
        for s in (winner, loser):
            if s.best_epoch is not None and s.epochs_run is not None and s.best_epoch >= s.epochs_run - 1:
                reasons.append(
                    f"{s.name} was still improving at its last epoch: it stopped on the epoch budget, and more epochs "
                    "would likely help it."
                )
    if winner.n_params is not None and loser.n_params is not None:
        ratio = max(winner.n_params, loser.n_params) / max(min(winner.n_params, loser.n_params), 1)
        bigger = winner if winner.n_params >= loser.n_params else loser
        reasons.append(
            f"Size: {winner.name} has {winner.n_params:,} parameters, {loser.name} {loser.n_params:,} ({bigger.name} "
            f"is {ratio:.1f}× larger)."
        )
    reasons.append(
        f"Regularization: {winner.name}: {_describe_regularization(winner)}; {loser.name}: "
        f"{_describe_regularization(loser)}."
    )
    return reasons


def _describe_regularization(facts: StudyFacts) -> str:
    used = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in facts.regularization.items()]
    if facts.patience:
        used.append(f"early stopping (patience {facts.patience})")
    return ", ".join(used) if used else "none"
