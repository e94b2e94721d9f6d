"""Real-shape benchmark for a CUDA machine: one LoRA training step's time and peak memory, and decode RTF per mode against the AR baseline.

    bash benchmarks/gpu.sh                  # full depth, bf16, on the GPU; writes docs/gpu_benchmark.md
    python benchmarks/gpu.py [--encoder-layers 32] [--llm-layers 32] [--batches 1 16]
        [--repeats 3] [--seconds 7.4] [--answer-tokens 24] [--canvas 128] [--train-batch 4]
        [--true-length] [--dtype bfloat16] [--device cuda] [--out FILE]

Random weights at the real shapes (shared/reference): the whisper-large-v3 encoder, the
window-level Q-Former (configs/whisper_llada.yaml) or the conv adapter + CTC head
(configs/dllm_asr.yaml), LLaDA-8B with LoRA, and for the autoregressive baseline a
Llama-3-8B-shaped causal LM (32 layers, 4096 wide, 8 key/value heads, vocabulary 128256) with KV
cache (configs/whisper_llama.yaml). No pretrained file is read, so timings are real but
transcripts are not: every mode runs its configured number of LLM passes, except where the
count depends on what a trained model predicts (prior-guided stops when every slot is committed
above the threshold: random weights commit one slot a round; the AR baseline stops at its end
token: random weights never emit it, so it is capped at --answer-tokens + 1). Each row therefore
prints its passes per utterance and seconds per pass, so the RTF at a trained model's pass count
(1.19 for prior-guided on the demo, 8.3 for diffusion with threshold) can be read off.

Training: one forward + backward + AdamW step of the Whisper-LLaDA loss (LoRA on q/k/v, bf16
autocast, frozen parts in bf16) at --train-batch clips of 30 s (the padded Whisper window) with
--answer-tokens x 4 answer tokens; the median of --repeats steps after one warm-up, and the peak
of CUDA's allocated memory (the process's peak RSS on a CPU).

Decoding: --batches clips of --seconds each (LibriSpeech test's mean is 7.4 s); the Whisper-LLaDA
modes pad them to 30 s as their config does (the dLLM-ASR and AR rows' configs encode the true
length). The step counts are the configs' at --canvas 128 (the papers' settings) and scale with
it: diffusion N/N, semi-AR N steps in blocks of N/4, deliberation N/2 steps, prior-guided at most
N/4 rounds. Deliberation and prior-guided start from a draft of --answer-tokens random tokens
(prior-guided's time includes the CTC head that would make it). RTF = (encoding + decoding
seconds) / seconds of audio, per batch; timings are interleaved: each repeat times every row once
in turn, and the median is reported, so load on the machine hits every row alike.

--true-length and small --canvas / layer counts are for a CPU smoke run (tests/test_gpu_benchmark.py).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from whisper_llada.config import Config, load_config
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.decoding.autoregressive import autoregressive_decode
from whisper_llada.decoding.canvas import TokenIds
from whisper_llada.decoding.recognize import row_seed, run_mode
from whisper_llada.models.real_shapes import build_real_shape_llama_model, build_real_shape_model
from whisper_llada.models.speech_llm import SpeechLLM
from whisper_llada.training.objective import training_loss

REPO = Path(__file__).resolve().parent.parent
FRAMES_PER_SECOND = 100  # Whisper's log-mel hop: 10 ms
WINDOW_FRAMES = 3000  # 30 s
DRAFT_VOCABULARY = 100_000  # random draft / answer tokens are drawn below every special id


@dataclass(frozen=True)
class Row:
    name: str  # {n}, {half}, {quarter}: the canvas length N, N/2, N/4
    config: str  # under configs/decode/
    overrides: Callable[[int], list[str]]  # from N

    def title(self, canvas: int) -> str:
        return self.name.format(n=canvas, half=canvas // 2, quarter=canvas // 4)


ROWS = (
    Row(
        "diffusion {n}/{n} (Whisper-LLaDA)",
        "decoding.yaml",
        lambda n: [f"decode.gen_len={n}", f"decode.steps={n}", f"decode.block_length={n}"],
    ),
    Row(
        "semi-AR {n} steps, blocks of {quarter}",
        "semi_ar.yaml",
        lambda n: [f"decode.gen_len={n}", f"decode.steps={n}", f"decode.block_length={n // 4}"],
    ),
    Row(
        "diffusion deliberation, {half} steps",
        "diffusion_deliberation.yaml",
        lambda n: [f"decode.steps={n // 2}"],
    ),
    Row(
        "semi-AR deliberation, 4 chunks, {half} steps",
        "semi_ar_deliberation.yaml",
        lambda n: [f"decode.steps={n // 2}"],
    ),
    Row(
        "prior-guided (dLLM-ASR), at most {quarter} rounds, no prefix cache",
        "prior_guided.yaml",
        lambda n: [f"decode.max_rounds={n // 4}", "decode.prefix_cache=false"],
    ),
    Row(
        "prior-guided (dLLM-ASR), at most {quarter} rounds, prefix cache",
        "prior_guided.yaml",
        lambda n: [f"decode.max_rounds={n // 4}", "decode.prefix_cache=true"],
    ),
    Row("autoregressive (Whisper-LLaMA), KV cache", "autoregressive.yaml", lambda n: []),
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """(seconds, result) of one call, the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def mel_input(cfg: Config, batch: int, seconds: float, device: torch.device):
    """Random log-mels of `batch` clips as the config's front end shapes them (true length: even frames)."""
    frames = WINDOW_FRAMES if cfg.audio.pad_to_30s else 2 * round(seconds * FRAMES_PER_SECOND / 2)
    mel = torch.randn(batch, cfg.audio.n_mels, frames, device=device)
    return mel, torch.full((batch,), frames, device=device)


def build(cfg: Config, args: argparse.Namespace, device: torch.device) -> SpeechLLM:
    builder = build_real_shape_llama_model if cfg.model.llm == "llama" else build_real_shape_model
    torch.manual_seed(0)
    model = builder(
        cfg.model, encoder_layers=args.encoder_layers, llm_layers=args.llm_layers, device=device
    )
    return model.eval()


def decoder(model: SpeechLLM, cfg: Config, args: argparse.Namespace, batch: int, device):
    """(encode, run): functions that encode one batch, and encode and decode it in the row's mode.

    `run` returns the mean LLM passes per utterance (the prefix cache's pass counted).
    """
    mel, mel_lengths = mel_input(cfg, batch, args.seconds, device)

    def encode() -> None:
        with torch.inference_mode():
            model.encode_audio(mel, mel_lengths)

    draft = torch.randint(0, DRAFT_VOCABULARY, (batch, args.answer_tokens)).tolist()
    confidences = [[0.5] * args.answer_tokens for _ in range(batch)]
    seeds = [row_seed(f"utterance-{row}", cfg.decode.seed) for row in range(batch)]
    mode = cfg.decode

    def run() -> float:
        with torch.inference_mode():
            audio = model.encode_audio(mel, mel_lengths)
            if mode.mode == "autoregressive":
                result = autoregressive_decode(
                    model, audio, num_beams=mode.num_beams, max_new_tokens=args.answer_tokens + 1
                )
                return statistics.mean(result.forward_passes)
            if mode.first_pass == "ctc":
                model.ctc_logits(audio).argmax(-1)  # the draft's cost; its tokens are random here
            cache = model.prefix_cache(audio) if mode.prefix_cache else None

            def predictor(rows, canvas, lengths):
                rows = rows.to(device)
                subset = None if cache is None else cache.select(rows)
                return model.canvas_logits(
                    audio.select(rows), canvas.to(device), lengths.to(device), subset
                )

            special = model.special
            ids = TokenIds(mask=special.mask, eos=special.eos, pad=special.pad, eot=special.eot)
            priors = None if mode.mode == "decoding" else draft
            first = confidences if mode.first_pass == "ctc" else None
            result = run_mode(predictor, mode, ids, priors, first, seeds, device)
            return statistics.mean(result.forward_passes) + (cache is not None)

    return encode, run


def training_step(
    model: SpeechLLM, cfg: Config, args: argparse.Namespace, device: torch.device
) -> tuple[float, float]:
    """(median seconds per step, peak GiB) of the recipe `cfg` at the real shapes; `model` is left in eval mode."""
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    mel = torch.randn(args.train_batch, cfg.audio.n_mels, WINDOW_FRAMES, device=device)
    lengths = torch.full((args.train_batch,), WINDOW_FRAMES, device=device)
    answer = 4 * args.answer_tokens
    texts = torch.randint(0, DRAFT_VOCABULARY, (args.train_batch, answer)).tolist()
    batch = SpeechBatch(mel, lengths, texts)
    generator = torch.Generator(device).manual_seed(0)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = training_loss(model, batch, cfg.model, cfg.loss, generator)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()

    step()  # warm-up: kernels chosen, optimizer state allocated
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = statistics.median(clock(step, device)[0] for _ in range(args.repeats))
    model.eval()
    return seconds, peak_gib(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder-layers", type=int, default=32)
    parser.add_argument("--llm-layers", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=7.4)
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--true-length", action="store_true", help="no 30 s padding anywhere")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    if args.canvas < 4 or args.canvas % 4:
        parser.error(f"--canvas must be a positive multiple of 4, got {args.canvas}")
    device = torch.device(args.device)
    lines = [
        f"{args.encoder_layers} encoder / {args.llm_layers} LLM layers, {args.dtype} on "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}, "
        f"torch {torch.__version__}; canvas {args.canvas}, clips of {args.seconds} s, "
        f"answers of {args.answer_tokens} tokens; medians of {args.repeats} interleaved repeats",
        "",
    ]
    # The training model is the Whisper-LLaDA rows' (decoding reuses it: only LoRA's B moved), built
    # before the others so that the training peak is its own.
    train_cfg = load_config(REPO / "configs" / "whisper_llada.yaml", [f"model.dtype={args.dtype}"])
    models = {repr(train_cfg.model): build(train_cfg, args, device)}
    seconds, peak = training_step(models[repr(train_cfg.model)], train_cfg, args, device)
    memory = "max allocated" if device.type == "cuda" else "process peak RSS"
    lines += [
        "| training step (Whisper-LLaDA, LoRA) | batch | s / step | peak GiB |",
        "|---|---|---|---|",
        f"| forward + backward + AdamW, 30 s clips | {args.train_batch} | {seconds:.3f} | "
        f"{peak:.2f} ({memory}) |",
        "",
    ]
    print("\n".join(lines), flush=True)
    configs = [
        load_config(
            REPO / "configs" / "decode" / row.config,
            [f"model.dtype={args.dtype}", *row.overrides(args.canvas)]
            + (["audio.pad_to_30s=false"] if args.true_length else []),
        )
        for row in ROWS
    ]
    for cfg in configs:
        if repr(cfg.model) not in models:
            models[repr(cfg.model)] = build(cfg, args, device)
    table = [
        "| mode | batch | LLM passes / utt | s / LLM pass | RTF | speed-up vs AR |",
        "|---|---|---|---|---|---|",
    ]
    for batch in args.batches:
        timed = [decoder(models[repr(c.model)], c, args, batch, device) for c in configs]
        for encode, run in timed:  # warm-up
            encode()
            run()
        encoding: list[list[float]] = [[] for _ in timed]
        total: list[list[float]] = [[] for _ in timed]
        passes = [0.0] * len(timed)
        for _ in range(args.repeats):
            for index, (encode, run) in enumerate(timed):
                encoding[index].append(clock(encode, device)[0])
                seconds, passes[index] = clock(run, device)
                total[index].append(seconds)
        audio_seconds = batch * args.seconds
        rtfs = [statistics.median(t) / audio_seconds for t in total]
        for row, rtf, enc, tot, count in zip(ROWS, rtfs, encoding, total, passes, strict=True):
            per_pass = max(statistics.median(tot) - statistics.median(enc), 0.0) / count
            table.append(
                f"| {row.title(args.canvas)} | {batch} | {count:.1f} | {per_pass:.4f} | "
                f"{rtf:.4f} | {rtfs[-1] / rtf:.2f}x |"
            )
        print("\n".join(table[-len(ROWS) :]), flush=True)
    lines += [*table, "", f"peak GiB over the decoding runs: {peak_gib(device):.2f} ({memory})"]
    print(lines[-1])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
