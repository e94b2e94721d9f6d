"""The demo's results: one table per test set as Markdown and JSON, and a plot of WER against real-time factor.

    <work>/demo_results.md    the tables, with what was decoded and how to read them
    <work>/demo_results.json  the same numbers unrounded, the modes' overrides, the model
    <work>/demo_results.png   WER vs RTF (log scale), one panel per test set, one marker per mode

Each file is written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_llada.atomic_write import write_atomically, write_text_atomically
from whisper_llada.mode_comparison import REFERENCE_MODE, ModeRow, markdown_table

RESULTS_STEM = "demo_results"
PANEL_INCHES = (5.5, 4.5)  # width, height of one test set's panel
LEGEND_INCHES = 1.4  # room under the panels for the legend
PLOT_DPI = 120
MARKERS = "osD^v<>pP*XhH8d"  # one per mode, with a colour of tab20 each
LABEL_FONT_SIZE = 7


@dataclass(frozen=True)
class SetResult:
    """A test set's rows, in mode order; one of them is the reference mode's."""

    name: str
    description: str
    rows: list[ModeRow]

    @property
    def reference(self) -> ModeRow:
        return next(row for row in self.rows if row.mode == REFERENCE_MODE)


@dataclass(frozen=True)
class About:
    """What was decoded: the model, how much of each set, with which modes, where."""

    model_dir: str
    checkpoint_sha256: str
    limit: int | None
    device: str
    modes: dict[str, tuple[str, ...]]


def results_json(sets: list[SetResult], about: About) -> dict[str, Any]:
    """The JSON document: `about`'s fields, the reference mode and every set's rows."""
    return {
        "model": about.model_dir,
        "checkpoint_sha256": about.checkpoint_sha256,
        "limit": about.limit,
        "device": about.device,
        "reference_mode": REFERENCE_MODE,
        "modes": {mode: list(overrides) for mode, overrides in about.modes.items()},
        "test_sets": {
            result.name: {
                "description": result.description,
                "utterances": result.reference.utterances,
                "rows": [row.as_dict(result.reference) for row in result.rows],
            }
            for result in sets
        },
    }


def results_markdown(sets: list[SetResult], about: About) -> str:
    """The Markdown document: a header saying what was decoded, then a table per test set."""
    scope = (
        "every utterance of each test set"
        if about.limit is None
        else f"the first {about.limit} utterance(s) of each test set"
    )
    parts = [
        "# Demo results\n",
        f"Model `{about.model_dir}` (checkpoint sha256 {about.checkpoint_sha256[:12]}), "
        f"{scope}, decoded on {about.device}. WER in % with substitutions / deletions / "
        "insertions; LLM passes are forward passes of the diffusion LLM per utterance (the "
        "CTC draft needs none); RTF is decode seconds per second of audio; the speed-up is "
        f"the decode seconds of `{REFERENCE_MODE}` over the mode's. Timings are wall-clock "
        "on this machine in this run (reused results keep the timings of the run that made "
        "them).\n",
    ]
    for result in sets:
        parts.append(
            f"## {result.name}: {result.description} ({result.reference.utterances} utterances)\n"
        )
        parts.append(markdown_table(result.rows, result.reference))
    return "\n".join(parts)


def plot_wer_vs_rtf(sets: list[SetResult], path: Path) -> Path:
    """WER against RTF (log x), one panel per test set; each mode one labelled marker.

    A row without an RTF (nothing decoded) has no point.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the machines this runs on
    import matplotlib.pyplot as plt

    modes = [row.mode for row in sets[0].rows]
    colours = plt.get_cmap("tab20").colors
    style = {
        mode: (MARKERS[i % len(MARKERS)], colours[i % len(colours)]) for i, mode in enumerate(modes)
    }
    width, height = PANEL_INCHES
    figure, axes = plt.subplots(
        1,
        len(sets),
        figsize=(width * len(sets), height + LEGEND_INCHES),
        sharey=True,
        squeeze=False,
    )
    for axis, result in zip(axes[0], sets, strict=True):
        for row in result.rows:
            if row.rtf is None or row.rtf <= 0:
                continue
            marker, colour = style[row.mode]
            axis.scatter(row.rtf, row.wer, marker=marker, color=colour, s=60, label=row.mode)
            axis.annotate(
                row.mode,
                (row.rtf, row.wer),
                xytext=(5, 3),
                textcoords="offset points",
                fontsize=LABEL_FONT_SIZE,
            )
        axis.set_xscale("log")
        axis.set_title(f"{result.name}: {result.description}", fontsize=10)
        axis.set_xlabel("RTF (decode s / audio s, log scale)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("WER %")
    handles, labels = {}, []
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    figure.legend(
        [handles[label] for label in labels],
        labels,
        loc="lower center",
        ncol=min(len(labels), 5),
        fontsize=8,
        frameon=False,
    )
    figure.tight_layout(rect=(0, LEGEND_INCHES / (height + LEGEND_INCHES), 1, 1))
    try:
        return write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=PLOT_DPI))
    finally:
        plt.close(figure)


def write_results(work_dir: Path, sets: list[SetResult], about: About) -> dict[str, Path]:
    """Write the three result files into `work_dir`; returns them by suffix ("md", "json", "png")."""
    stem = work_dir / RESULTS_STEM
    return {
        "md": write_text_atomically(stem.with_suffix(".md"), results_markdown(sets, about)),
        "json": write_text_atomically(
            stem.with_suffix(".json"), json.dumps(results_json(sets, about), indent=2) + "\n"
        ),
        "png": plot_wer_vs_rtf(sets, stem.with_suffix(".png")),
    }
