"""The demo's results: one table per test set as Markdown and JSON, and a plot of WER against real-time factor.

    <work>/demo_results.md    the tables, with what was decoded and how to read them
    <work>/demo_results.json  the same numbers unrounded, the modes' overrides, the model
    <work>/demo_results.png   WER vs RTF (log scale), one panel per test set, one marker per mode

Each file is written atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisper_llada.evaluation.mode_comparison import (
    AR_MODE,
    REFERENCE_MODE,
    ModeRow,
    markdown_table,
)
from whisper_llada.utils.atomic_write import write_atomically, write_text_atomically

RESULTS_STEM = "demo_results"
PANEL_INCHES = (5.5, 4.5)  # width, height of one test set's panel
LEGEND_COLUMNS = 5
LEGEND_ROW_INCHES = 0.3  # room under the panels for each row of the legend
PLOT_DPI = 120
MARKERS = "osD^v<>pP*XhH8d"  # one per mode, with a colour of tab20 each
LABEL_FONT_SIZE = 7  # points
LABEL_LINE_SPACING = 1.3  # a label line's height, in font sizes
CHARACTER_WIDTH = 0.55  # a label character's mean width, in font sizes (DejaVu Sans)
LABEL_GAP = 4  # points between a marker's centre and its label
POINTS_PER_INCH = 72
LABEL_ROOM = 0.5  # x range added right of the last marker, as a share of the markers' range
MIN_DECADES = 0.5  # the narrowest x range, in decades of RTF


@dataclass(frozen=True)
class SetResult:
    """A test set's rows, in mode order; one of them is the reference mode's."""

    name: str
    description: str
    rows: list[ModeRow]

    @property
    def reference(self) -> ModeRow:
        return next(row for row in self.rows if row.mode == REFERENCE_MODE)

    @property
    def ar_reference(self) -> ModeRow | None:
        """The AR model's row, when an AR model was decoded too."""
        return next((row for row in self.rows if row.mode == AR_MODE), None)


@dataclass(frozen=True)
class About:
    """What was decoded: the model(s), how much of each set, with which modes, where.

    `modes`: each row's overrides (the AR row's on the AR model's config, the others on the
    diffusion model's); `ar_model_dir` and `ar_checkpoint_sha256`: the AR model, None without.
    """

    model_dir: str
    checkpoint_sha256: str
    limit: int | None
    device: str
    modes: dict[str, tuple[str, ...]]
    timing_rounds: int = 1  # interleaved rounds each set was decoded in
    load_average: tuple[float, float] | None = None  # 1-minute load average before and after
    # the diffusion model's modes read their encoder outputs from a cache filled before timing;
    # per set encoded in this run: (seconds, audio seconds) of filling it
    encoder_cached: bool = False
    encoding: dict[str, tuple[float, float]] = field(default_factory=dict)
    ar_model_dir: str | None = None
    ar_checkpoint_sha256: str | None = None


def timing_note(about: About) -> str:
    """How the timings were taken: the interleaved rounds, the machine's load."""
    note = ""
    if about.timing_rounds > 1:
        note += (
            f"; each set was decoded in {about.timing_rounds} interleaved rounds (every mode "
            "decoded its next share of the utterances before any mode went on), so a change of "
            "load hit every mode alike"
        )
    if about.encoder_cached:
        note += (
            "; every utterance was encoded once, before the timed decoding, into a cache that "
            "every mode reads (the AR model has the same frozen encoder), so their RTFs leave the "
            "encoder out (the cascade's AR first pass and the Whisper peer encode for themselves)"
        )
    if about.encoding:
        seconds = sum(s for s, _ in about.encoding.values())
        audio = sum(a for _, a in about.encoding.values())
        note += f"; encoding in this run: {seconds:.1f} s for {audio:.0f} s of audio (RTF {seconds / audio:.4f})"
    if about.load_average is not None:
        before, after = about.load_average
        note += f"; 1-minute load average {before:.2f} before decoding, {after:.2f} after"
    return note


def results_json(sets: list[SetResult], about: About) -> dict[str, Any]:
    """The JSON document: `about`'s fields, the reference mode(s) and every set's rows.

    The AR model's keys ("ar_model", "ar_checkpoint_sha256", "ar_reference_mode") and the rows'
    "speed_up_vs_ar" are there only when an AR model was decoded.
    """
    ar = {}
    if about.ar_model_dir is not None:
        ar = {
            "ar_model": about.ar_model_dir,
            "ar_checkpoint_sha256": about.ar_checkpoint_sha256,
            "ar_reference_mode": AR_MODE,
        }
    return {
        "model": about.model_dir,
        "checkpoint_sha256": about.checkpoint_sha256,
        **ar,
        "limit": about.limit,
        "device": about.device,
        "timing_rounds": about.timing_rounds,
        "load_average": about.load_average,
        "encoding": about.encoding,
        "reference_mode": REFERENCE_MODE,
        "modes": {mode: list(overrides) for mode, overrides in about.modes.items()},
        "test_sets": {
            result.name: {
                "description": result.description,
                "utterances": result.reference.utterances,
                "rows": [row.as_dict(result.reference, result.ar_reference) for row in result.rows],
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
        "CTC draft needs none; the Whisper peer's are its decoder steps); RTF is decode "
        f"seconds per second of audio; the speed-up is the RTF of `{REFERENCE_MODE}` over the "
        "mode's (its decode seconds over the mode's on the same utterances; the Whisper peer "
        "decodes the first utterances of the set, its count in its label). Timings are wall-clock "
        "on this machine in this run (reused results keep the timings of the run that made "
        f"them){timing_note(about)}.\n",
    ]
    if about.ar_model_dir is not None:
        parts.append(
            f"The autoregressive rows come from the AR model `{about.ar_model_dir}` (checkpoint "
            f"sha256 {about.ar_checkpoint_sha256[:12]}): `{AR_MODE}` is it alone, its passes "
            "the decoder steps; the `AR -> ...` rows are the cascade, the diffusion model "
            "deliberating over its hypotheses in the same run, with both stages' seconds and "
            "passes written as AR steps + diffusion LLM passes. The speed-up vs AR is the "
            f"RTF of `{AR_MODE}` over the mode's.\n"
        )
    for result in sets:
        parts.append(
            f"## {result.name}: {result.description} ({result.reference.utterances} utterances)\n"
        )
        parts.append(markdown_table(result.rows, result.reference, result.ar_reference))
    return "\n".join(parts)


def plot_wer_vs_rtf(sets: list[SetResult], path: Path) -> Path:
    """WER against RTF (log x), one panel per test set; each mode one labelled marker.

    A row without an RTF (nothing decoded) has no point.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the machines this runs on
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    modes = [row.mode for row in sets[0].rows]
    colours = plt.get_cmap("tab20").colors
    style = {
        mode: (MARKERS[i % len(MARKERS)], colours[i % len(colours)]) for i, mode in enumerate(modes)
    }
    width, height = PANEL_INCHES
    legend = LEGEND_ROW_INCHES * math.ceil(len(modes) / LEGEND_COLUMNS)
    figure, axes = plt.subplots(
        1,
        len(sets),
        figsize=(width * len(sets), height + legend),
        dpi=PLOT_DPI,
        sharey=True,
        squeeze=False,
    )
    for axis, result in zip(axes[0], sets, strict=True):
        rows = [row for row in result.rows if row.rtf is not None and row.rtf > 0]
        for row in rows:
            marker, colour = style[row.mode]
            axis.scatter(row.rtf, row.wer, marker=marker, color=colour, s=60, label=row.mode)
        axis.set_xscale("log")
        if rows:  # room on the right for the labels: they stand right of their markers
            low, high = min(row.rtf for row in rows), max(row.rtf for row in rows)
            decades = max(math.log10(high / low), MIN_DECADES)
            axis.set_xlim(low / 10 ** (0.05 * decades), high * 10 ** (LABEL_ROOM * decades))
        # Ticks at 1, 2 and 5 of each decade, written plainly: the RTFs may span less than one.
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
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
        ncol=min(len(labels), LEGEND_COLUMNS),
        fontsize=8,
        frameon=False,
    )
    figure.tight_layout(rect=(0, legend / (height + legend), 1, 1))
    for axis, result in zip(axes[0], sets, strict=True):  # where the final layout puts the markers
        rows = [row for row in result.rows if row.rtf is not None and row.rtf > 0]
        for row, offset in zip(rows, _label_offsets(axis, rows), strict=True):
            moved = offset[1] != LABEL_GAP  # a moved label gets a leader line to its marker
            axis.annotate(
                row.mode,
                (row.rtf, row.wer),
                xytext=offset,
                textcoords="offset points",
                fontsize=LABEL_FONT_SIZE,
                va="center",
                arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5} if moved else None,
            )
    try:
        return write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))
    finally:
        plt.close(figure)


def _label_offsets(axis, rows: list[ModeRow]) -> list[tuple[float, float]]:
    """Text offsets in points for the rows' labels: right of each marker, or, where labels of
    modes with about equal numbers would overlap, moved a line at a time away from the nearer
    edge of the panel (up in its lower half, down in its upper half) until clear.
    """
    axis.autoscale_view()
    points_per_pixel = POINTS_PER_INCH / axis.figure.dpi
    line = LABEL_FONT_SIZE * LABEL_LINE_SPACING
    pixels = [axis.transData.transform((row.rtf, row.wer)) for row in rows]
    lower = [axis.transAxes.inverted().transform(p)[1] < 0.5 for p in pixels]
    # Labels nearest the edges go first, so the stacks grow towards the middle.
    order = sorted(
        range(len(rows)), key=lambda i: (not lower[i], pixels[i][1] * (1 if lower[i] else -1))
    )
    placed: list[tuple[float, float, float]] = []  # x, y, width of each label, in points
    offsets: dict[int, tuple[float, float]] = {}
    for i in order:
        x, y = pixels[i] * points_per_pixel
        label_x, label_y = x + LABEL_GAP, y + LABEL_GAP
        label_width = len(rows[i].mode) * LABEL_FONT_SIZE * CHARACTER_WIDTH
        while any(
            abs(label_y - other_y) < line
            and label_x < other_x + other_width
            and other_x < label_x + label_width
            for other_x, other_y, other_width in placed
        ):
            label_y += line if lower[i] else -line
        placed.append((label_x, label_y, label_width))
        offsets[i] = (label_x - x, label_y - y)
    return [offsets[i] for i in range(len(rows))]


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
