"""End-to-end smoke run: build the model from a config, encode synthesised speech, take one training step, round-trip a checkpoint.

    python -m whisper_llada.smoke configs/tiny.yaml [section.key=value ...]

With `configs/tiny.yaml` the tiny random models are written to `tiny_models/` first if they are
not there. Everything it writes goes to `--out` (default `exp/smoke`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from whisper_llada.config import Config, load_config
from whisper_llada.config_strict import to_dict
from whisper_llada.data.audio import batch_features, load_audio
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import load_checkpoint, save_checkpoint
from whisper_llada.models.ctc import ctc_greedy_decode
from whisper_llada.models.prompt import decode_text, text_ids
from whisper_llada.models.tiny_models import write_tiny_llada, write_tiny_whisper
from whisper_llada.training.objective import training_loss

SENTENCES = (
    ("the quick brown fox jumps over the lazy dog", "en-us", 160),
    ("seven purple kites drifted over the quiet harbour", "en-gb", 140),
)
SEED = 0


def ensure_tiny_models(cfg: Config) -> None:
    """Write the tiny model directories the config points at, if they are missing."""
    for path, writer in (
        (cfg.model.whisper_path, write_tiny_whisper),
        (cfg.model.llada_path, write_tiny_llada),
    ):
        if not Path(path, "config.json").is_file() and Path(path).parent.name == "tiny_models":
            print(f"writing tiny model: {writer(path)}")


def parameter_table(model: torch.nn.Module) -> str:
    rows = []
    for name in ("encoder", "projector", "llada", "ctc_head"):
        part = getattr(model, name)
        if part is None:
            continue
        total = sum(p.numel() for p in part.parameters())
        trainable = sum(p.numel() for p in part.parameters() if p.requires_grad)
        rows.append(f"  {name:<10} {total:>14,} parameters, {trainable:>12,} trainable")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument("--out", type=Path, default=Path("exp/smoke"))
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    torch.manual_seed(SEED)
    ensure_tiny_models(cfg)

    waves, texts = [], []
    for i, (text, voice, rate) in enumerate(SENTENCES):
        path = synthesize(text, args.out / f"utt{i}.flac", voice=voice, rate_wpm=rate)
        waves.append(
            load_audio(path, max_seconds=cfg.audio.max_seconds, too_long=cfg.audio.too_long)
        )
        texts.append(text)
        print(f"synthesised {path} ({len(waves[-1]) / 16000:.2f} s): {text!r}")

    model, tokenizer = build_model(cfg.model)
    print(f"built the model from {cfg.model.whisper_path} and {cfg.model.llada_path}:")
    print(parameter_table(model))
    mel, mel_lengths = batch_features(
        waves, cfg.audio.n_mels, pad_to_30s=cfg.audio.pad_to_30s, min_seconds=cfg.audio.min_seconds
    )
    batch = SpeechBatch(mel, mel_lengths, [text_ids(tokenizer, t) for t in texts])
    with torch.no_grad():
        audio = model.encode_audio(mel, mel_lengths)
    print(
        f"sequence layout per utterance: {model.prompt_ids.numel()} prompt tokens "
        f"({decode_text(tokenizer, model.prompt_ids.tolist())!r} + chat template), "
        f"audio vectors {audio.lengths.tolist()}, answer tokens {[len(t) for t in batch.text_ids]}"
    )

    model.train()
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-3)
    generator = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    loss = training_loss(model, batch, cfg.model, cfg.loss, generator)
    loss.total.backward()
    optimizer.step()
    ctc = "" if loss.ctc is None else f", CTC {loss.ctc.item():.3f}"
    print(
        f"one training step: loss {loss.total.item():.3f} (diffusion {loss.diffusion.item():.3f}{ctc}) "
        f"over {loss.masked_tokens} masked tokens in {time.perf_counter() - start:.2f} s"
    )

    model.eval()
    checkpoint = save_checkpoint(
        model, args.out / "checkpoint.safetensors", config=to_dict(cfg), metadata={"step": 1}
    )
    reloaded, _ = build_model(cfg.model)
    load_checkpoint(reloaded, checkpoint)
    masked_answer = torch.full((len(texts), 8), model.special.mask)
    with torch.no_grad():
        before = model.answer_logits(model.encode_audio(mel, mel_lengths), masked_answer)
        after = reloaded.answer_logits(reloaded.encode_audio(mel, mel_lengths), masked_answer)
    same = torch.equal(before, after)
    print(
        f"checkpoint {checkpoint} ({checkpoint.stat().st_size:,} bytes): reloaded logits identical: {same}"
    )
    if model.ctc_head is not None:
        with torch.no_grad():
            audio = model.encode_audio(mel, mel_lengths)
            drafts = ctc_greedy_decode(model.ctc_logits(audio), audio.lengths)
        print(
            f"CTC draft of the barely trained model: {len(drafts[0])} tokens, "
            f"{decode_text(tokenizer, drafts[0])[:40]!r}..."
        )
    if not same:
        raise SystemExit("checkpoint round trip changed the model's outputs")


if __name__ == "__main__":
    main()
