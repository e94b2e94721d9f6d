"""Does the diffusion LLM listen? Masked-word accuracy and cross-entropy with the audio, without it and with another utterance's.

    python benchmarks/listening.py --config RUN/config.yaml --checkpoint RUN/best.safetensors \
        --manifest CUTS.jsonl.gz [--utterances 48] [--shown 0.0 0.5] [--batch 16]

For the first --utterances of the manifest (and every share of words shown in --shown: 0.0 masks
every answer slot, 0.5 shows a random half of the transcript's words, the same half in every
condition), one pass of the LLM over [prompt; audio; answer] scores the masked slots under three
audio conditions: the utterance's own audio vectors, the same vectors zeroed (the LLM sees the
prompt and the canvas only), and the audio of the next utterance in the batch (right length
statistics, wrong words). A model that listens is far better with its own audio than with
either other condition; one that only uses the canvas is equal in all three. It also reports
the share of attention from the masked answer slots to the audio positions, per layer (averaged
over heads, slots and utterances), with the right audio. Scored slots are the transcript's words
(EOS padding excluded); word = one token, as in the demo's word-level tokenizer.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from whisper_llada.config import load_config
from whisper_llada.data.audio import batch_features
from whisper_llada.data.manifest import load_wave, read_manifest
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import load_checkpoint
from whisper_llada.models.llada import apply_rotary
from whisper_llada.models.prompt import text_ids
from whisper_llada.models.speech_llm import AudioEncoding

CONDITIONS = ("own audio", "audio zeroed", "another utterance's audio")


class AttentionToAudio:
    """Forward pre-hooks on the LLaDA blocks: attention mass from chosen queries to chosen keys."""

    def __init__(self, blocks: torch.nn.ModuleList) -> None:
        self.queries: torch.Tensor | None = None  # (B, S) bool: the masked answer slots
        self.keys: torch.Tensor | None = None  # (B, S) bool: the audio positions
        self.mass: list[list[float]] = [[] for _ in blocks]
        self.handles = [
            block.register_forward_pre_hook(self._hook(index, block))
            for index, block in enumerate(blocks)
        ]

    def _hook(self, index: int, block: torch.nn.Module):
        def hook(_module, args):
            if self.queries is None:
                return
            h, cos, sin, key_mask = args[:4]
            batch, length, _ = h.shape
            a = block.attn_norm(h)
            q = block.q_proj(a).view(batch, length, block.n_heads, block.head_dim).transpose(1, 2)
            k = block.k_proj(a).view(batch, length, block.n_kv_heads, block.head_dim)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k.transpose(1, 2), cos, sin)
            k = k.repeat_interleave(block.n_heads // block.n_kv_heads, dim=1)
            scores = q @ k.transpose(-1, -2) / math.sqrt(block.head_dim)  # (B, H, S, S)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, -math.inf)
            weights = scores.softmax(-1).mean(1)  # (B, S, S), heads averaged
            to_audio = (weights * self.keys[:, None, :]).sum(-1)  # (B, S)
            self.mass[index].append(float(to_audio[self.queries].mean()))

        return hook


def masked_slots(lengths: list[int], width: int, shown: float, seed: int) -> torch.Tensor:
    """(B, width) bool: the word slots to mask; each row shows round(shown * n) of its n words."""
    generator = torch.Generator().manual_seed(seed)
    masked = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, length in enumerate(lengths):
        order = torch.randperm(length, generator=generator)
        masked[row, order[round(shown * length) :]] = True
    return masked


def score(model, audio: AudioEncoding, answers, masked, mask_id: int) -> tuple[int, float, int]:
    """(correct masked words, summed cross-entropy in nats, masked words) of one pass."""
    noisy = torch.where(masked, torch.full_like(answers, mask_id), answers)
    logits = model.answer_logits(audio, noisy)  # (B, L, V)
    targets = answers[masked]
    chosen = logits[masked]  # (N, V)
    correct = int((chosen.argmax(-1) == targets).sum())
    return correct, float(F.cross_entropy(chosen.float(), targets, reduction="sum")), len(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--shown", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="section.key=value for the config")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model.eval()
    special = model.special
    utterances = read_manifest(args.manifest)[: args.utterances]
    hooks = AttentionToAudio(model.llada.model.transformer.blocks)
    totals = {(shown, c): [0, 0.0, 0] for shown in args.shown for c in CONDITIONS}
    vector_rms, token_rms = [], float(model.embedding_weight.pow(2).mean().sqrt())
    with torch.inference_mode():
        for start in range(0, len(utterances), args.batch):
            batch = utterances[start : start + args.batch]
            waves = [load_wave(u, max_seconds=None, too_long="error") for u in batch]
            mel, mel_lengths = batch_features(
                waves, cfg.audio.n_mels, pad_to_30s=cfg.audio.pad_to_30s
            )
            audio = model.encode_audio(mel, mel_lengths)
            real = torch.arange(audio.vectors.shape[1]) < audio.lengths[:, None]
            vector_rms.append(float(audio.vectors[real].pow(2).mean().sqrt()))
            words = [text_ids(tokenizer, u.text) for u in batch]
            width = max(map(len, words))
            answers = torch.full((len(batch), width), special.eos, dtype=torch.long)
            for row, ids in enumerate(words):
                answers[row, : len(ids)] = torch.tensor(ids)
            rolled = torch.roll(torch.arange(len(batch)), -1)
            audios = {
                CONDITIONS[0]: audio,
                CONDITIONS[1]: AudioEncoding(torch.zeros_like(audio.vectors), audio.lengths),
                CONDITIONS[2]: audio.select(rolled),
            }
            for shown in args.shown:
                masked = masked_slots(list(map(len, words)), width, shown, args.seed + start)
                for condition, given in audios.items():
                    if condition == CONDITIONS[0]:
                        packed = model.pack(given, answers)
                        slots = torch.zeros_like(packed.key_mask)
                        slots.scatter_(1, packed.answer_positions, masked)
                        prompt = model.prompt_ids.numel()
                        position = torch.arange(packed.key_mask.shape[1])[None]
                        hooks.queries = slots
                        hooks.keys = (position >= prompt) & (
                            position < prompt + given.lengths[:, None]
                        )
                    result = score(model, given, answers, masked, special.mask)
                    hooks.queries = None
                    total = totals[(shown, condition)]
                    for index, value in enumerate(result):
                        total[index] += value
    print(
        f"{len(utterances)} utterances of {args.manifest}; checkpoint {args.checkpoint or '(as built)'}"
    )
    print(
        f"audio vector RMS {sum(vector_rms) / len(vector_rms):.3f}, token embedding RMS {token_rms:.3f}"
    )
    print("| words shown | audio | masked-word accuracy % | cross-entropy nats / word |")
    print("|---|---|---|---|")
    for (shown, condition), (correct, nats, count) in totals.items():
        print(f"| {shown:.0%} | {condition} | {100 * correct / count:.1f} | {nats / count:.3f} |")
    layers = [sum(m) / len(m) for m in hooks.mass]
    print("attention from masked slots to the audio, per layer (own audio, all shown shares): "
          + ", ".join(f"{100 * m:.1f} %" for m in layers))  # fmt: skip


if __name__ == "__main__":
    main()
