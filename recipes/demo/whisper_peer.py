"""Whisper itself beside our models: an openai-whisper checkpoint decoding greedily, into a results folder like every mode's.

The demo's peer row is the real system a user would pick instead: OpenAI's Whisper tiny.en, as
setup.sh converts it (`pretrained/whisper-tiny.en/tiny.en.pt`), decoded as Whisper expects it:
every clip padded (or cut) to 30 s, greedy search (temperature 0, no beam, no timestamps, no
fallback), English. The folder holds what inference.py writes for a mode (result shards,
results.jsonl, recogs / errs / wer files), so `mode_comparison.read_row` makes its table row; a
record's forward passes are the decoder steps (tokens generated, the end token included). A
rerun decodes only what is missing; results of another checkpoint are refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
import whisper
from tqdm import tqdm

from whisper_llada.data.audio import CHUNK_SECONDS, SAMPLE_RATE
from whisper_llada.data.manifest import AudioError, Utterance, load_wave
from whisper_llada.evaluation.metrics import write_errs, write_recogs, write_wer
from whisper_llada.evaluation.mode_comparison import ModeRow, read_row
from whisper_llada.evaluation.results import (
    Record,
    ShardWriter,
    check_same_utterances,
    claim_results_folder,
    finished_ids,
    merge_shards,
    shard_path,
    with_inputs,
)
from whisper_llada.evaluation.transcribe import set_statistics

DEFAULT_CHECKPOINT = Path("pretrained/whisper-tiny.en/tiny.en.pt")  # setup.sh converts it
LABEL = "Whisper tiny.en (greedy, 30 s)"
DEMO_UTTERANCES = 100  # of the demo's test-clean: ~1 s a clip at 30 s padding
FINGERPRINT_NAME = "whisper_model.json"
OPTIONS = whisper.DecodingOptions(
    language="en", task="transcribe", temperature=0.0, without_timestamps=True, fp16=False
)


def transcribe(model: whisper.Whisper, waves: Sequence[torch.Tensor]) -> list[tuple[str, int]]:
    """(text, decoder steps) per 16 kHz waveform, one batched greedy decode."""
    mel = torch.stack(
        [whisper.log_mel_spectrogram(whisper.pad_or_trim(w), model.dims.n_mels) for w in waves]
    )  # (B, n_mels, 3000)
    results = whisper.decode(model, mel.to(next(model.parameters()).device), OPTIONS)
    return [(result.text.strip(), len(result.tokens) + 1) for result in results]


def table_row(
    checkpoint: Path, utterances: Sequence[Utterance], set_dir: Path, fingerprint: dict[str, str]
) -> ModeRow:
    """The peer's row on `utterances`, decoded into its folder under `set_dir`; the count in its label."""
    label = f"{LABEL}, first {len(utterances)}"
    output_dir = set_dir / f"whisper-tiny-en-first{len(utterances)}"
    decode_folder(
        checkpoint, utterances, output_dir, fingerprint=fingerprint, desc=f"{set_dir.name}: {label}"
    )
    return read_row(label, output_dir)


def decode_folder(
    checkpoint: str | Path,
    utterances: Sequence[Utterance],
    output_dir: Path,
    *,
    fingerprint: dict[str, str],
    batch_size: int = 8,
    desc: str = "whisper",
) -> None:
    """Decode what `output_dir` lacks of `utterances` with the checkpoint; write the result files.

    `fingerprint` identifies the checkpoint ({"checkpoint_sha256": ...}); it is recorded in the
    folder, and a folder recorded with another is refused.

    Raises:
        SystemExit: `output_dir` holds results of another checkpoint, or of utterances that are
            not in `utterances` or changed (as inference.py).
    """
    claim_results_folder(output_dir, fingerprint, FINGERPRINT_NAME, "Whisper checkpoint")
    done = finished_ids(output_dir)
    if done:
        check_same_utterances(output_dir, utterances)
    todo = [u for u in utterances if u.id not in done]
    if todo:
        model = whisper.load_model(str(checkpoint), device="cpu")
        writer = ShardWriter(shard_path(output_dir, 0))
        try:
            for start in tqdm(range(0, len(todo), batch_size), desc=desc, disable=None):
                batch = todo[start : start + batch_size]
                writer.write(with_inputs(_decode_batch(model, batch), batch))
        finally:
            writer.close()
    _write_result_files(output_dir)


def _decode_batch(model: whisper.Whisper, batch: Sequence[Utterance]) -> list[Record]:
    records, loaded, waves = [], [], []
    for utt in batch:
        try:
            wave = load_wave(utt, max_seconds=CHUNK_SECONDS, too_long="truncate")
        except AudioError as error:
            records.append(Record(utt.id, utt.text, "", None, 0, 0.0, 0.0, error=str(error)))
            continue
        loaded.append(utt)
        waves.append(torch.from_numpy(wave))
    if loaded:
        start = time.perf_counter()
        texts = transcribe(model, waves)
        share = (time.perf_counter() - start) / len(loaded)
        records += [
            Record(u.id, u.text, text, None, steps, share, len(w) / SAMPLE_RATE)
            for u, (text, steps), w in zip(loaded, texts, waves, strict=True)
        ]
    return records


def _write_result_files(output_dir: Path) -> None:
    records = merge_shards(output_dir)
    statistics, scored, alignments = set_statistics(records)
    extra = {
        "mode": "whisper greedy, 30 s padding",
        "utterances decoded": statistics.decoded,
        "decoder steps per utterance": round(statistics.forward_passes_per_utterance, 3),
        "RTF": "n/a" if statistics.rtf is None else round(statistics.rtf, 4),
    }
    write_recogs(output_dir / "recogs-whisper.txt", scored)
    write_errs(output_dir / "errs-whisper.txt", statistics.summary, alignments)
    write_wer(output_dir / "wer-whisper.txt", statistics.summary, extra)
