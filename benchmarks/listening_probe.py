"""Does the diffusion LLM learn to listen? A short training probe on cached encoder outputs.

    python benchmarks/listening_probe.py --config configs/demo.yaml \
        --test-manifest exp/demo/manifests/librispeech_cuts_test-clean.jsonl.gz \
        [--steps 500] [--eval-every 250] [--batch 16] [--lr 1e-3] [--train-utterances 6000] \
        [--eval-utterances 100] [--threads 1] [section.key=value ...]

The config's model is built (a frozen encoder is required: its outputs for the first
--train-utterances of data.train_manifests are computed once, through data.encoder_cache when
set, and kept in memory) and its trainable parts trained with the config's loss for --steps
steps: batches of --batch utterances drawn at random, AdamW with train.betas and
train.weight_decay, --lr after a 100-step linear warm-up, train.clip_grad_norm. Every
--eval-every steps one LLM pass scores the first --eval-utterances of --test-manifest with every
answer slot masked: the accuracy of its most likely token at the transcript's slots (EOS padding
excluded), with the utterance's own audio and with the next utterance's. A model that listens is
far better with its own; one that guesses from the language alone is equal under both.
This is how docs/demo_results.md's calibration of the demo recipe was measured (one thread per
probe, two probes at a time on the 2-core machine): a few hundred steps tell a setting that
listens from one that does not.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from whisper_llada.config import load_config
from whisper_llada.data.audio import batch_features
from whisper_llada.data.encoder_cache import EncoderOutputCache
from whisper_llada.data.manifest import load_wave, read_manifest
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models.build import build_model
from whisper_llada.models.encoder import encode
from whisper_llada.models.prompt import text_ids
from whisper_llada.training.diffusion_loss import pad_answers
from whisper_llada.training.objective import training_loss

WARMUP_STEPS = 100


def encoded(model, cfg, utterances, tokenizer):
    """[(frames (F, D), mel length, transcript ids)] of `utterances`, encoded once each."""
    cache = (
        EncoderOutputCache(cfg.data.encoder_cache, model.encoder)
        if cfg.data.encoder_cache
        else None
    )
    rows = []
    for utterance in utterances:
        wave = load_wave(utterance, max_seconds=cfg.audio.max_seconds, too_long="error")
        mel, mel_lengths = batch_features([wave], cfg.audio.n_mels, pad_to_30s=cfg.audio.pad_to_30s)
        with torch.inference_mode():
            frames = (
                cache.frames(mel, mel_lengths)
                if cache
                else encode(model.encoder, mel, mel_lengths)[0]
            )
        rows.append((frames[0].clone(), int(mel_lengths[0]), text_ids(tokenizer, utterance.text)))
    return rows


def batch_of(rows) -> SpeechBatch:
    frames = torch.nn.utils.rnn.pad_sequence([r[0].float() for r in rows], batch_first=True)
    mel_lengths = torch.tensor([r[1] for r in rows])
    return SpeechBatch(torch.zeros(len(rows), 1, 1), mel_lengths, [r[2] for r in rows], frames)


def listening(model, rows, batch: int = 25) -> dict[str, float]:
    """Masked-word accuracy in % of one all-MASK pass, with the own and another utterance's audio."""
    special, counts = model.special, {"own": [0, 0], "other": [0, 0]}
    with torch.inference_mode():
        for start in range(0, len(rows), batch):
            chunk = batch_of(rows[start : start + batch])
            audio = model.project_frames(chunk.encoder_frames, chunk.mel_lengths)
            answers = pad_answers(chunk.text_ids, special.eos, end="eos")
            words = torch.zeros_like(answers, dtype=torch.bool)
            for row, ids in enumerate(chunk.text_ids):
                words[row, : len(ids)] = True
            canvas = torch.full_like(answers, special.mask)
            rolled = audio.select(torch.roll(torch.arange(len(chunk.text_ids)), 1))
            for condition, given in (("own", audio), ("other", rolled)):
                best = model.answer_logits(given, canvas)[words].argmax(-1)
                counts[condition][0] += int((best == answers[words]).sum())
                counts[condition][1] += int(words.sum())
    return {condition: 100 * right / total for condition, (right, total) in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--test-manifest", required=True)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-utterances", type=int, default=6000)
    parser.add_argument("--eval-utterances", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="section.key=value for the config")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    draw = random.Random(args.seed)
    cfg = load_config(args.config, args.overrides)
    if cfg.model.train_encoder:
        raise SystemExit("the probe caches the encoder's outputs: set model.train_encoder=false")
    model, tokenizer = build_model(cfg.model)
    train = [u for path in cfg.data.train_manifests for u in read_manifest(path)]
    train = encoded(model, cfg, train[: args.train_utterances], tokenizer)
    test = encoded(model, cfg, read_manifest(args.test_manifest)[: args.eval_utterances], tokenizer)
    parameters = list(model.trainable_parameters().values())
    optimizer = torch.optim.AdamW(
        parameters, lr=args.lr, betas=cfg.train.betas, weight_decay=cfg.train.weight_decay
    )
    print(
        f"{len(train)} training utterances, {sum(p.numel() for p in parameters)} trainable weights"
    )
    start = time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / WARMUP_STEPS)
        loss = training_loss(model, batch_of(draw.sample(train, args.batch)), cfg.model, cfg.loss)
        optimizer.zero_grad()
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, cfg.train.clip_grad_norm)
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            accuracy = listening(model, test)
            model.train()
            record = {
                "step": step,
                "seconds": round(time.perf_counter() - start),
                "loss": round(loss.total.item(), 4),
                "ctc": None if loss.ctc is None else round(float(loss.ctc), 4),
                "own_audio_accuracy": round(accuracy["own"], 1),
                "other_audio_accuracy": round(accuracy["other"], 1),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
