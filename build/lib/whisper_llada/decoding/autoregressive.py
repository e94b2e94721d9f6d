"""Autoregressive decoding of the causal baseline: greedy or beam search with a key/value cache, through transformers' `generate`.

The left-padded [prompt; audio] embeddings of a batch (`WhisperLLaMA.generation_inputs`) go to
`generate` as `inputs_embeds`; transformers keeps the key/value cache, derives each row's
positions from the attention mask, and stops a row at its first end token (<|eot_id|> or
<|end_of_text|>, `CausalTokens.stop`), filling it with padding until the batch ends.

Cost, comparable with the diffusion modes' forward passes: a row's decoder steps, the number
of tokens it generated, its end token included (the first comes from the pass over the prefix,
each further one from a pass over one new token). This is what the row costs decoded alone;
in a batch it also idles while longer rows finish. With beam search the steps are those of the
returned hypothesis; the search may run further on beams it then discards.
"""

from __future__ import annotations

from transformers import GenerationConfig

from whisper_llada.decoding.canvas import DecodeResult
from whisper_llada.models.causal_model import WhisperLLaMA
from whisper_llada.models.speech_llm import AudioEncoding


def autoregressive_decode(
    model: WhisperLLaMA, audio: AudioEncoding, *, num_beams: int, max_new_tokens: int
) -> DecodeResult:
    """Decode a batch: per row, the answer tokens before its end token and its decoder steps.

    Args:
        audio: the batch's audio vectors (B, A, D) and counts (B,) from `model.encode_audio`.
        num_beams: 1 = greedy search; more = beam search with that many beams.
        max_new_tokens: most tokens a row generates, its end token included.
    """
    for name, value in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens)):
        if value < 1:
            raise ValueError(f"decode.{name} must be at least 1, got {value}")
    special = model.special
    embeds, attention_mask = model.generation_inputs(audio)
    generation = GenerationConfig(
        do_sample=False,
        temperature=1.0,  # not the release's sampling defaults (generation_config.json): unused
        top_p=1.0,
        num_beams=num_beams,
        num_return_sequences=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(special.stop),
        pad_token_id=special.pad,
        bos_token_id=special.bos,
        use_cache=True,
    )
    generated = model.llm.generate(
        inputs_embeds=embeds, attention_mask=attention_mask, generation_config=generation
    )  # (B, N): the new tokens only
    return _cut_at_stop(generated.tolist(), special.stop)


def _cut_at_stop(rows: list[list[int]], stop: tuple[int, ...]) -> DecodeResult:
    """Tokens before each row's first stop token, and the steps that produced them and it."""
    tokens, steps = [], []
    for row in rows:
        end = next((index for index, token in enumerate(row) if token in stop), None)
        tokens.append(row if end is None else row[:end])
        steps.append(len(row) if end is None else end + 1)
    return DecodeResult(tokens=tokens, forward_passes=steps)
