"""Training data: cuts to padded speech batches, duration-bucketed, DDP-aware and resumable.

The cuts come from `training_cuts.read_cuts` (lhotse CutSets or any manifest format).

Training batches come from lhotse's `DynamicBucketingSampler` (duration buckets, max_duration /
max_cuts per batch, this rank's share under DDP), wrapped in `ResumableSampler`, which runs it
epoch after epoch and stamps every batch with the sampler's `state_dict()` *after* that batch.
The training loop keeps the stamp of the last batch it consumed, so a checkpoint records exactly
where the data stream stands even though the DataLoader's workers prefetch batches ahead; a
resumed sampler (`load_state_dict`, lhotse's fast-forward) then yields the batches an
uninterrupted run would have seen.

`SpeechDataset` turns a batch of cuts into log-mel features and token ids with the project's
audio rules (`manifest.load_wave`, `audio.batch_features`), or with `data.feature_cache` reads
them from a `feature_cache.FeatureCache` (equal bit for bit). A missing or corrupt file raises
AudioError naming it, or with `skip_bad_audio` is dropped from its batch and reported in
`TrainingBatch.bad` for the loop to count; a batch whose every file is bad comes back empty.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

from whisper_llada.config import AudioConfig, DataConfig
from whisper_llada.data.audio import AudioError
from whisper_llada.data.feature_cache import FeatureCache, stack_features, utterance_features
from whisper_llada.data.manifest import ManifestError
from whisper_llada.data.training_cuts import cut_utterance
from whisper_llada.models.prompt import text_ids

if TYPE_CHECKING:  # transformers is imported where the tokenizer is loaded
    from transformers import PreTrainedTokenizerFast

# lhotse warns that DynamicBucketingSampler gains nothing from an eager CutSet; cuts made from
# the authors' JSON are eager by nature (small files read at once), so that warning is muted.
EAGER_CUTSET_WARNING = "You are using DynamicBucketingSampler with an eagerly read CutSet"
BUCKET_ESTIMATE_CUTS = 10000  # lhotse's default: bucket bins come from the first cuts


@dataclass
class SpeechBatch:
    """What one training or validation step consumes."""

    mel: torch.Tensor  # (B, n_mels, T)
    mel_lengths: torch.Tensor  # (B,)
    text_ids: list[list[int]]  # transcript tokens per utterance, no special tokens
    encoder_frames: torch.Tensor | None = None  # (B, F, D_enc) from an encoder cache, or None


class BatchRequest(NamedTuple):
    """What the sampler hands the dataset: the cuts of one batch and the sampler state after it."""

    cuts: CutSet
    sampler_state: dict[str, Any] | None


@dataclass
class TrainingBatch:
    """One batch for a training or validation step, with what the logs need.

    Attributes:
        speech: features and token ids; None when every utterance of the batch was bad.
        ids: utterance ids of the rows of `speech`.
        texts: their transcripts.
        audio_seconds: total duration of the loaded audio, in seconds (before any padding).
        bad: one message (naming the file) per utterance dropped for bad audio.
        sampler_state: the training sampler's state after this batch; None for validation.
    """

    speech: SpeechBatch | None
    ids: list[str]
    texts: list[str]
    audio_seconds: float
    bad: list[str] = field(default_factory=list)
    sampler_state: dict[str, Any] | None = None

    def to(self, device: torch.device, non_blocking: bool = False) -> TrainingBatch:
        """The batch with its tensors on `device`."""
        if self.speech is None:
            return self
        speech = replace(
            self.speech,
            mel=self.speech.mel.to(device, non_blocking=non_blocking),
            mel_lengths=self.speech.mel_lengths.to(device, non_blocking=non_blocking),
        )
        return replace(self, speech=speech)

    def contents(self) -> dict[str, Any]:
        """Ids, texts, token ids and features, e.g. to save a batch that broke a step."""
        speech = self.speech
        return {
            "ids": self.ids,
            "texts": self.texts,
            "text_ids": None if speech is None else speech.text_ids,
            "mel": None if speech is None else speech.mel.cpu(),
            "mel_lengths": None if speech is None else speech.mel_lengths.cpu(),
        }

    def pin_memory(self) -> TrainingBatch:
        """Called by the DataLoader (pin_memory=True) for faster host-to-GPU copies."""
        if self.speech is None:
            return self
        speech = replace(
            self.speech,
            mel=self.speech.mel.pin_memory(),
            mel_lengths=self.speech.mel_lengths.pin_memory(),
        )
        return replace(self, speech=speech)


class SpeechDataset(torch.utils.data.Dataset):
    """Map-style dataset: a batch of cuts (or a BatchRequest) to a TrainingBatch.

    Args:
        tokenizer: the LLaDA tokenizer (transcripts become `text_ids`).
        audio_cfg: max_seconds / too_long for reading, n_mels / pad_to_30s / min_seconds for
            the features.
        skip_bad_audio: drop utterances whose audio raises AudioError instead of raising.
        feature_cache: a FeatureCache folder (`data.feature_cache`); "" computes every time.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        audio_cfg: AudioConfig,
        *,
        skip_bad_audio: bool,
        feature_cache: str = "",
    ) -> None:
        self.tokenizer = tokenizer
        self.audio_cfg = audio_cfg
        self.skip_bad_audio = skip_bad_audio
        self.cache = FeatureCache(feature_cache, audio_cfg) if feature_cache else None

    def __getitem__(self, request: BatchRequest | CutSet) -> TrainingBatch:
        cuts, state = request if isinstance(request, BatchRequest) else (request, None)
        rows, utterances, bad = [], [], []
        for cut in cuts:
            utt = cut_utterance(cut)
            try:
                row = (
                    utterance_features(utt, self.audio_cfg)
                    if self.cache is None
                    else self.cache.features(utt)
                )
            except AudioError as error:
                if not self.skip_bad_audio:
                    raise
                bad.append(str(error))
                continue
            rows.append(row)
            utterances.append(utt)
        if not rows:
            return TrainingBatch(None, [], [], 0.0, bad=bad, sampler_state=state)
        mel, mel_lengths = stack_features([row.mel for row in rows])  # (B, n_mels, T), (B,)
        texts = [utt.text for utt in utterances]
        speech = SpeechBatch(mel, mel_lengths, [text_ids(self.tokenizer, t) for t in texts])
        return TrainingBatch(
            speech,
            [utt.id for utt in utterances],
            texts,
            sum(row.seconds for row in rows),
            bad=bad,
            sampler_state=state,
        )


def bucketing_sampler(
    cuts: CutSet, data_cfg: DataConfig, *, seed: int, rank: int, world_size: int
) -> DynamicBucketingSampler:
    """lhotse's duration-bucketing sampler for this rank (every rank must pass the same seed)."""
    sampled = sum(1 for _ in islice(cuts, BUCKET_ESTIMATE_CUTS))
    if data_cfg.num_buckets > sampled:
        raise ValueError(
            f"data.num_buckets={data_cfg.num_buckets} exceeds the {sampled} cuts the duration "
            f"buckets are estimated from: set data.num_buckets to at most {sampled}"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=EAGER_CUTSET_WARNING)
        return DynamicBucketingSampler(
            cuts,
            max_duration=data_cfg.max_duration,
            max_cuts=data_cfg.max_cuts,
            num_buckets=data_cfg.num_buckets,
            shuffle=data_cfg.shuffle,
            seed=seed,
            world_size=world_size,
            rank=rank,
            num_cuts_for_bins_estimate=BUCKET_ESTIMATE_CUTS,
        )


class ResumableSampler:
    """Endless batches of a lhotse sampler, epoch after epoch, each with the state after it.

    Args:
        sampler: e.g. from `bucketing_sampler`, freshly built.
        state: a `BatchRequest.sampler_state` of an earlier run with the same cuts, settings and
            world size: iteration continues right after that batch.
    """

    def __init__(self, sampler: DynamicBucketingSampler, state: dict[str, Any] | None = None):
        self.sampler = sampler
        if state is not None:
            for key, now in (("world_size", sampler.world_size), ("seed", sampler.seed)):
                if state[key] != now:
                    raise ValueError(
                        f"the saved data position is for {key} {state[key]}, this run has "
                        f"{now}: resume with the same number of processes and train.seed"
                    )
            sampler.load_state_dict(deepcopy(state))  # lhotse consumes the dict it is given

    def __iter__(self) -> Iterator[BatchRequest]:
        iter(self.sampler)  # a restored sampler continues where its state left off
        while True:
            try:
                cuts = next(self.sampler)
            except StopIteration:
                if self.sampler.diagnostics.current_epoch_stats.total_batches == 0:
                    raise ManifestError(
                        "the training manifests gave no batch in a whole epoch: check that "
                        "they hold utterances and that data.max_duration exceeds the shortest"
                    ) from None
                self.sampler.set_epoch(self.sampler.epoch + 1)
                iter(self.sampler)
                continue
            yield BatchRequest(cuts, self.sampler.state_dict())


def validation_batches(
    cuts: CutSet, data_cfg: DataConfig, *, rank: int, world_size: int
) -> list[CutSet]:
    """This rank's validation batches: a disjoint shard, longest first, max_duration / max_cuts.

    Unlike the training sampler, no cut is duplicated to even out the ranks, so every cut is
    scored exactly once; ranks may get different numbers of batches.
    """
    ordered = sorted(cuts, key=lambda cut: (-cut.duration, cut.id))
    shard = CutSet.from_cuts(ordered[rank::world_size])
    sampler = SimpleCutSampler(
        shard,
        max_duration=data_cfg.max_duration,
        max_cuts=data_cfg.max_cuts,
        shuffle=False,
        world_size=1,
        rank=0,
    )
    return list(sampler)


def keep_as_is(batch: TrainingBatch) -> TrainingBatch:
    """The DataLoader's collate function: the dataset already returns whole batches."""
    return batch


def data_loader(
    dataset: SpeechDataset,
    sampler: ResumableSampler | Sequence[CutSet],
    *,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over whole batches (batch_size=None): `sampler` yields one batch per item.

    Its own generator (seeded with `seed`) keeps the global torch RNG untouched, so creating
    a loader never shifts the random streams a resumed run restores.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=keep_as_is,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
