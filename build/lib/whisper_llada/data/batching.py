"""Test-set batching: decode batches of utterances by count or by seconds of audio, longest first, and each rank's shard."""

from __future__ import annotations

from collections.abc import Sequence

from whisper_llada.data.manifest import Utterance, utterance_seconds


def make_batches(
    utts: Sequence[Utterance],
    *,
    batch_size: int | None = None,
    max_duration: float | None = None,
) -> list[list[Utterance]]:
    """Group utterances into decode batches, longest first so that little padding is needed.

    The order (duration descending, ties by id) depends only on the set of utterances, so a
    resumed run forms the same batches. Unreadable files count as 0 s (they fail when loaded).

    Args:
        utts: the utterances, in any order.
        batch_size: utterances per batch (the last batch may be smaller); or
        max_duration: seconds of audio per batch: each batch's total duration is at most this,
            except that a longer utterance forms a batch of its own.

    Returns:
        batches: every utterance exactly once.
    """
    if (batch_size is None) == (max_duration is None):
        raise ValueError(
            f"give exactly one of batch_size ({batch_size}) and max_duration ({max_duration}); "
            "set the other to None"
        )
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_duration is not None and max_duration <= 0:
        raise ValueError(f"max_duration must be positive seconds, got {max_duration}")
    timed = sorted(
        ((utterance_seconds(utt) or 0.0, utt) for utt in utts),
        key=lambda pair: (-pair[0], pair[1].id),
    )
    ordered = [utt for _, utt in timed]
    if batch_size is not None:
        return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    # lhotse's samplers are not used: they take Cuts (an Utterance would need a Recording
    # built around it), bound a batch by count x longest rather than the total duration,
    # and under DDP duplicate cuts to even ranks out. A greedy pass over the sorted list is all
    # this needs.
    batches: list[list[Utterance]] = []
    total = 0.0
    for seconds, utt in timed:
        if batches and total + seconds <= max_duration:
            batches[-1].append(utt)
            total += seconds
        else:
            batches.append([utt])
            total = seconds
    return batches


def shard(utts: Sequence[Utterance], rank: int, world_size: int) -> list[Utterance]:
    """This rank's part of `utts`: every world_size-th utterance, starting at `rank`.

    The shards are disjoint and together hold every utterance exactly once (no duplicates to
    even them out, unlike lhotse's DDP samplers); their sizes differ by at most one, and a rank
    may get none when there are fewer utterances than ranks. The split depends only on the
    order of `utts`.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(
            f"rank must be in [0, {world_size}) for world_size {world_size}, got {rank}"
        )
    return list(utts[rank::world_size])
