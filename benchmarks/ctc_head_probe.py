"""Is a trained model's CTC draft limited by its head or by the head's training? Fresh heads trained on the model's own, frozen, audio vectors.

    python benchmarks/ctc_head_probe.py --model models/demo \
        --test-manifest exp/demo/manifests/librispeech_cuts_test-clean.jsonl.gz \
        [--bottleneck 1024] [--steps 4000] [--lr 1e-3] [--batch 16] [--eval-every 1000] \
        [--train-utterances 6000] [--eval-utterances 200] [--threads 1] [section.key=value ...]

The exported model's config (<model>/config.yaml, with the overrides) is loaded with its
checkpoint; a frozen encoder is required (its outputs are read through data.encoder_cache when
set). First the model's own head is scored, then a fresh `CTCHead` (--bottleneck: none or a
width) is trained on the model's audio vectors, which stay frozen, with the CTC loss alone:
batches of --batch utterances drawn at random from data.train_manifests, AdamW (train.betas,
train.weight_decay) at --lr after a 100-step warm-up, cosine to half of it, gradient norm clipped
at 1. Every --eval-every steps: CTC greedy WER % on the first --eval-utterances of
--test-manifest, scored as the project scores every result.

Measured on the demo model of session 5 (one thread each, two at a time): its own head (one
linear, trained through both stages while the adapter changed under it) 8.49 %; a fresh linear
head 16.6 / 11.1 / 7.6 / 7.2 % at steps 1000-4000; a fresh 1024-wide bottleneck head 10.7 / 7.6 /
5.7 / 4.5 %: capacity and training on the final adapter both matter.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from whisper_llada.config import load_config
from whisper_llada.data.manifest import read_manifest
from whisper_llada.evaluation.metrics import score
from whisper_llada.evaluation.transcribe import load_decoder
from whisper_llada.models.ctc import CTCHead, ctc_greedy_decode, ctc_loss
from whisper_llada.models.prompt import decode_text

sys.path.insert(0, str(Path(__file__).parent))
from listening_probe import batch_of, encoded

WARMUP_STEPS = 100
EVAL_BATCH = 25


def audio_of(model, rows):
    """The model's frozen audio vectors of `rows` and their transcripts' token ids."""
    batch = batch_of(rows)
    with torch.no_grad():
        return model.project_frames(batch.encoder_frames, batch.mel_lengths), batch.text_ids


def ctc_wer(model, head, rows, utterances, tokenizer) -> float:
    """CTC greedy WER % of `head` over `rows` (`utterances` give the ids and references)."""
    hypotheses = []
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH):
            audio, _ = audio_of(model, rows[start : start + EVAL_BATCH])
            logits = head(audio.vectors, model.embedding_weight)
            hypotheses += [
                decode_text(tokenizer, h) for h in ctc_greedy_decode(logits, audio.lengths)
            ]
    records = [(u.id, u.text, h) for u, h in zip(utterances, hypotheses, strict=True)]
    return score(records)[0].wer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported model directory")
    parser.add_argument("--test-manifest", required=True)
    parser.add_argument("--bottleneck", default="1024", help="a width, or none: one linear")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--train-utterances", type=int, default=6000)
    parser.add_argument("--eval-utterances", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="section.key=value for the model's config")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    draw = random.Random(args.seed)
    cfg = load_config(args.model / "config.yaml", args.overrides)
    if cfg.model.train_encoder:
        raise SystemExit(
            "the probe caches the encoder's outputs: the model's encoder must be frozen"
        )
    model, tokenizer = load_decoder(cfg, torch.device("cpu"))
    if model.ctc_head is None:
        raise SystemExit(f"{args.model} has no CTC head to compare with")
    train = [u for path in cfg.data.train_manifests for u in read_manifest(path)]
    train = encoded(model, cfg, train[: args.train_utterances], tokenizer)
    test_utterances = read_manifest(args.test_manifest)[: args.eval_utterances]
    test = encoded(model, cfg, test_utterances, tokenizer)
    own = ctc_wer(model, model.ctc_head, test, test_utterances, tokenizer)
    print(json.dumps({"head": "the model's own", "wer": round(own, 2)}), flush=True)
    bottleneck = None if args.bottleneck == "none" else int(args.bottleneck)
    head = CTCHead(model.embedding_weight.shape[1], bottleneck=bottleneck, head_only=True)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=args.lr, betas=cfg.train.betas, weight_decay=cfg.train.weight_decay
    )
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        warm = min(1.0, step / WARMUP_STEPS)
        cosine = 0.5 + 0.5 * math.cos(math.pi * step / args.steps)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warm * cosine
        audio, targets = audio_of(model, draw.sample(train, args.batch))
        loss = ctc_loss(head(audio.vectors, model.embedding_weight), audio.lengths, targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            head.eval()
            wer = ctc_wer(model, head, test, test_utterances, tokenizer)
            head.train()
            record = {
                "head": f"fresh, bottleneck {args.bottleneck}",
                "step": step,
                "seconds": round(time.perf_counter() - start),
                "loss": round(loss.item(), 3),
                "wer": round(wer, 2),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
