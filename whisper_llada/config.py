"""Configuration: typed, frozen dataclasses per concern, loaded strictly from YAML.

A YAML file holds one mapping per section (`model`, `audio`, `loss`, `decode`, `inference`,
`data`, `train`); a typo or a wrong type stops the run naming the key and the valid ones.
Overrides (`model.lora.r=16`) get the same checks. `base: other.yaml` starts a file from another
(its keys override the base's); relative paths follow `config_paths`' rule.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from whisper_llada.config_paths import PathStr, absolute_under, map_paths, path_keys
from whisper_llada.config_strict import (
    ConfigError,
    apply_override,
    from_dict,
    merge,
    to_dict,
)
from whisper_llada.model_parts_config import (
    ConvAdapterConfig,
    CTCConfig,
    FrameStackConfig,
    LoraConfig,
    QFormerConfig,
)

CHUNK_SECONDS = 30  # Whisper's fixed input length: the audio section's bound (data.audio's window)


@dataclass(frozen=True)
class AudioConfig:
    n_mels: int = 128
    pad_to_30s: bool = True  # faithful: every utterance padded to 30 s (352 Q-Former vectors)
    max_seconds: float = 30.0
    too_long: Literal["truncate", "error"] = "truncate"
    min_seconds: float = 0.0  # Whisper-LLaDA's training pads clips under 1 s with silence

    def __post_init__(self) -> None:
        if not 0.0 < self.max_seconds <= CHUNK_SECONDS:
            raise ConfigError(
                f"audio.max_seconds: {self.max_seconds} is outside (0, {CHUNK_SECONDS:g}]: "
                "every Whisper encoder takes at most 30 s (3000 mel frames); longer clips are "
                "cut or failed by audio.too_long (truncate / error)"
            )


@dataclass(frozen=True)
class ModelConfig:
    """The recogniser. `llm` picks the decoder LLM and with it the model kind:

    - "llada" (default): Whisper-LLaDA, LLaDA loaded from `llada_path` (masked-diffusion loss,
      the diffusion / deliberation / prior-guided decoding modes);
    - "llama": the autoregressive baseline Whisper-LLaMA, a LLaMA-family causal LM loaded with
      transformers from the HF directory `llama_path` (Llama-3-8B(-Instruct)); next-token loss
      on the answer and its end token `<|eot_id|>`, decode.mode=autoregressive. The `loss`
      section and `answer_suffix` are LLaDA's and do not apply; everything else (encoder,
      projector, LoRA, CTC head, prompt, freeze policy) means the same for both.
    Each kind reads only its own path; the other may stay empty.
    """

    whisper_path: PathStr = ""
    llm: Literal["llada", "llama"] = "llada"
    llada_path: PathStr = ""
    llama_path: PathStr = ""
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"  # frozen encoder and LLM
    train_encoder: bool = False
    train_llm: bool = False  # full fine-tuning of every LLM weight (the demo's LLM starts random)
    projector: Literal["qformer", "conv_adapter", "frame_stack"] = "qformer"
    # Ours (neither paper has it): "rms" RMS-normalises each audio vector and scales it by a
    # learned gain that starts at the RMS of the LLM's token embeddings, so audio enters the LLM
    # at the scale of its tokens. "none" (both papers): the projector's output as it is.
    audio_norm: Literal["none", "rms"] = "none"
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    conv_adapter: ConvAdapterConfig = field(default_factory=ConvAdapterConfig)
    frame_stack: FrameStackConfig = field(default_factory=FrameStackConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    ctc: CTCConfig = field(default_factory=CTCConfig)
    prompt: str = "Transcribe the audio:"
    answer_suffix: Literal["none", "eot"] = "none"  # dLLM-ASR ends targets with <|eot_id|>
    # The answer slots' rotary positions. "after_audio" (both papers): they follow the audio
    # vectors, so how far slot k is from the audio it transcribes depends on the clip's length.
    # Ours, "audio_aligned" (LLaDA only): slot k sits at prompt + (k + 1/2) x
    # audio_vectors_per_token, at about the audio position where its token is spoken whatever
    # the clip's length (set it to the training set's audio vectors per answer token).
    answer_positions: Literal["after_audio", "audio_aligned"] = "after_audio"
    audio_vectors_per_token: float = 0.0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.answer_positions == "audio_aligned":
            if self.llm != "llada":
                raise ConfigError(
                    "model.answer_positions=audio_aligned is for LLaDA (model.llm=llada): "
                    "the causal baseline's answer follows its audio"
                )
            if not self.audio_vectors_per_token > 0:
                raise ConfigError(
                    "model.answer_positions=audio_aligned needs model.audio_vectors_per_token > 0 "
                    f"(got {self.audio_vectors_per_token}): the training set's audio vectors per "
                    "answer token"
                )


@dataclass(frozen=True)
class LossConfig:
    kind: Literal["whisper_llada", "llada_sft"] = "whisper_llada"
    eps: float = 1e-3  # llada_sft only: p_mask = (1 - eps) t + eps
    full_mask_prob: float = 0.0  # dLLM-ASR masks every answer token in 20 % of batches
    answer_end: Literal["batch_padding", "eos"] = "batch_padding"
    # Training with the prior visible: in this share of rows the masked answer slots show the
    # model's own CTC draft (greedy, no gradient) instead of MASK, as prior-guided decoding's
    # canvas does; the loss still scores those slots against the transcript. Needs model.ctc.
    draft_prob: float = 0.0
    # Which draft token a slot shows: "position", the draft's i-th token in slot i (as the
    # decoding canvas is laid out); "edit_distance", the draft token aligned with the
    # transcript's i-th token (MASK where the draft lost it), so a draft that gained or lost a
    # word does not teach the LLM to distrust every slot after it.
    draft_alignment: Literal["position", "edit_distance"] = "position"


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding; the first six keys keep their meaning from the authors' decode_config.yaml."""

    mode: Literal[
        "decoding",
        "diffusion_deliberation",
        "semi_ar_deliberation",
        "prior_guided",
        "ctc",
        "autoregressive",  # the causal model (model.llm=llama): greedy / beam search, KV cache
    ] = "decoding"
    steps: int = 128
    gen_len: int = 128
    block_length: int = 128  # == gen_len: diffusion; smaller: semi-autoregressive
    mask_ratio: float = 0.3
    num_chunks: int = 4
    masking_type: Literal["random", "low_confidence"] = "random"
    remasking: Literal["low_confidence", "random"] = "low_confidence"
    temperature: float = 0.0
    threshold: float | None = None  # confidence-threshold commits (tau); None: fixed schedule
    # Length-adaptive pruning (decoding.py): "none" = Whisper-LLaDA's EOS rule (fill with EOS);
    # "first_pass" = released dLLM-ASR code (cut once, before the EOS of the first pass);
    # "every_round" = ours (cut after the first committed end after every pass).
    prune: Literal["none", "first_pass", "every_round"] = "none"
    eot_ends_answer: bool = False  # ours: <|eot_id|> ends the answer like EOS (authors: EOS only)
    early_exit: bool = True  # prior_guided: threshold commits; false = one commit per round
    # Where deliberation / prior_guided get their first pass: the manifest's field, the CTC head,
    # or "model": another model decoding first in the same run (inference.first_pass_config).
    first_pass: Literal["manifest", "ctc", "model"] = "manifest"
    prior_treatment: Literal["visible", "mask_below"] = "visible"
    prior_confidence_floor: float = 0.5  # mask_below: CTC prior tokens under this start masked
    margin: int = 4  # prior_guided: MASK slots after the prior
    max_rounds: int = 32
    prefix_cache: bool = False  # cache prompt + audio keys/values (approximate, see llada.py)
    num_beams: int = 1  # autoregressive: 1 = greedy search
    max_new_tokens: int = 128  # autoregressive: answer tokens at most, the end token included
    seed: int = 0


@dataclass(frozen=True)
class InferenceConfig:
    manifest: PathStr = ""  # the authors' JSON, JSONL or a lhotse CutSet
    checkpoint: PathStr = ""  # trainable weights from training or the converter; "" = as built
    output_dir: PathStr = "exp/decode"
    batch_size: int | None = 8
    max_duration: float | None = None  # seconds of audio per batch; when set, batch_size is ignored
    device: str = "cpu"
    merge_lora: bool = True
    # decode.first_pass=model (the cascade): the config of the first-pass model (e.g. the
    # Whisper-LLaMA one of configs/decode/autoregressive.yaml; its model, checkpoint, audio and
    # decode sections are used) and `section.key=value` overrides for it.
    first_pass_config: PathStr = ""
    first_pass_overrides: tuple[str, ...] = ()
    # A folder of the frozen encoder's outputs (encoder_cache.py), "" = off: each utterance is
    # encoded once for every decoding run that shares the folder (e.g. one per mode).
    encoder_cache: PathStr = ""


@dataclass(frozen=True)
class DataConfig:
    """Training data: lhotse cut manifests (or the authors' JSON / JSONL), duration bucketing."""

    train_manifests: tuple[PathStr, ...] = ()
    valid_manifests: tuple[PathStr, ...] = ()
    max_duration: float = 120.0  # seconds of audio per batch on each rank
    max_cuts: int | None = None  # also cap the utterances per batch (the authors use 4 per GPU)
    num_buckets: int = 30
    shuffle: bool = True
    num_workers: int = 2
    skip_bad_audio: bool = True  # a missing / corrupt file is skipped with a counted warning
    # A folder of per-utterance log-mel features (feature_cache.py), "" = off: the first epoch
    # computes and stores them, later ones read them back, bit for bit what computing gives.
    # Keyed by cut id, audio path, file size and mtime, segment, audio settings and library
    # versions, so an edited file or changed audio config is recomputed; shared by ranks.
    feature_cache: PathStr = ""
    # A folder of per-utterance encoder outputs (encoder_cache.py), "" = off; needs a frozen
    # encoder. Each row is encoded once (alone) and read back, keyed by the encoder's weights
    # and the log-mel row, so a step costs the projector and the LLM only.
    encoder_cache: PathStr = ""


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe; defaults are Whisper-LLaDA's (systems.md)."""

    output_dir: PathStr = "exp/train"
    seed: int = 42
    trainable: Literal["projector", "projector_lora"] = "projector_lora"  # dLLM-ASR stage 1 / 2
    init_checkpoint: PathStr = ""  # trainable weights to start from (e.g. the stage-1 result)
    # With init_checkpoint: load only its tensors whose names start with one of these (e.g.
    # [encoder., projector.]), strictly; every other weight starts as built. Empty: every tensor.
    init_prefixes: tuple[str, ...] = ()
    max_steps: int = 360000  # 120 "epochs" of 3000 iterations
    grad_accum: int = 1
    lr: float = 3e-5
    warmup_steps: int = 3000
    warmup_start_lr: float = 1e-6
    min_lr: float = 1e-5  # the cosine ends here at max_steps
    weight_decay: float = 0.05  # not on biases and 1-D parameters
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float | None = 1.0
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    valid_every: int = 3000
    valid_wer_utterances: int = 0  # quick greedy-CTC / decoding WER on this many (0: off)
    log_every: int = 50
    save_every: int = 3000
    max_bad_steps: int = 10  # consecutive NaN / inf losses before the run stops
    tensorboard: bool = True
    wandb: bool = False
    device: str = "cuda"


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


PATH_KEYS = path_keys(Config)


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config strictly and apply `section.key=value` overrides; every path absolute."""
    path = Path(path)
    data = _read_with_base(path, seen=())
    for override in overrides:
        key = apply_override(data, override)
        map_paths(data, [key] if key in PATH_KEYS else [], absolute_under(Path.cwd()))
    try:
        config = to_dict(from_dict(Config, data))  # the schema's defaults filled in
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    map_paths(config, PATH_KEYS, absolute_under(Path.cwd()))  # the defaults' paths
    return from_dict(Config, config)


def _read_with_base(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' files include each other in a cycle")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("base", None)
    map_paths(data, PATH_KEYS, absolute_under(path.parent))
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be the path of another YAML file")
    return merge(_read_with_base(path.parent / base, (*seen, path.resolve())), data)


def changed_keys(
    saved_file: Path, current: dict[str, Any], sections: typing.Iterable[str]
) -> list[str]:
    """`section.key` of every value of `sections` that differs between the config saved in
    `saved_file` (read through the schema, so keys added since take their defaults) and
    `current` (as `to_dict` gives it)."""
    saved = to_dict(from_dict(Config, yaml.safe_load(saved_file.read_text())))
    return [
        f"{section}.{key}"
        for section in sections
        for key in sorted(set(saved.get(section, {})) | set(current[section]))
        if saved.get(section, {}).get(key) != current[section].get(key)
    ]
