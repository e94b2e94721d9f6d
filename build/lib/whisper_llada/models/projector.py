"""Projectors: encoder frames to LLM-width audio vectors (conv adapter, frame stacking; the window Q-Former is in qformer.py).

All three share one interface, so the composite model can take any of them:

    vectors, vector_mask = projector(frames, frame_mask)   # (B, F, D_enc) -> (B, A, D_llm)
    projector.output_lengths(frame_lengths)                # (B,) -> (B,) == vector_mask.sum(1)

`frame_mask` is True on the valid encoder frames, which must come first in each row (a padded
batch). Every row needs at least one valid frame. A row's real vectors depend only on its own
valid frames, so a padded batch gives the same vectors as running each utterance alone; vectors
past a row's count are zero and False in `vector_mask`. Parameters stay float32 (trainable) and
the frames, possibly bf16/fp16 from a frozen encoder, are cast to the parameters' dtype.

Local dimension names besides the package legend: P pooled frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WHISPER_FRAME_RATE = 50.0  # encoder frames per second: 1500 frames per 30 s clip


def valid_frame_counts(frames: Tensor, frame_mask: Tensor, encoder_width: int) -> Tensor:
    """Check a padded batch and return each row's number of valid frames.

    Args:
        frames: (B, F, D_enc) encoder output.
        frame_mask: (B, F) bool, True on valid frames, which must form a prefix of each row.
        encoder_width: the D_enc the projector was built for.

    Returns:
        (B,) long: valid frames per row.
    """
    if frames.ndim != 3 or frames.shape[-1] != encoder_width:
        raise ValueError(
            f"frames must have shape (B, F, {encoder_width}), got {tuple(frames.shape)}; build the "
            "projector with encoder_width equal to the speech encoder's output width"
        )
    if frame_mask.dtype != torch.bool or frame_mask.shape != frames.shape[:2]:
        raise ValueError(
            f"frame_mask must be a bool tensor of shape {tuple(frames.shape[:2])} (B, F), got "
            f"{frame_mask.dtype} {tuple(frame_mask.shape)}; pass True for valid encoder frames"
        )
    lengths = frame_mask.sum(1)
    prefix = torch.arange(frames.shape[1], device=frame_mask.device) < lengths[:, None]
    if bool(((frame_mask != prefix).any(1) | (lengths == 0)).any()):  # one host sync
        empty = (lengths == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"rows {empty} of frame_mask have no valid encoder frame; "
                "drop empty utterances before batching"
            )
        raise ValueError(
            "frame_mask must be True on a prefix of each row (valid frames first, padding last); "
            "right-pad the encoder frames"
        )
    return lengths


def prefix_mask(lengths: Tensor, size: int) -> Tensor:
    """(B,) counts -> (B, size) bool mask, True on the first `lengths[b]` positions."""
    return torch.arange(size, device=lengths.device) < lengths[:, None]


class ConvAdapter(nn.Module):
    """dLLM-ASR's adapter: average-pool to 25 Hz, stride-2 Conv1d to 12.5 Hz, GELU, then an MLP.

    1500 frames (50 Hz) -> 750 pooled -> 375 vectors. A tail shorter than `pool` frames is
    zero-padded and averaged over `pool` (so no frame is dropped); the conv pads kernel // 2
    zeros on both sides. Padded frames are zeroed first, so a padded batch sees exactly the zeros
    that one utterance alone sees.
    """

    def __init__(
        self,
        encoder_width: int,
        llm_width: int,
        *,
        pool: int = 2,
        kernel: int = 3,
        stride: int = 2,
        hidden: int = 2048,
    ) -> None:
        super().__init__()
        if min(pool, kernel, stride) < 1:
            raise ValueError(
                f"pool={pool}, kernel={kernel} and stride={stride} must all be at least 1"
            )
        self.encoder_width = encoder_width
        self.pool = pool
        self.kernel = kernel
        self.stride = stride
        self.padding = kernel // 2
        self.conv = nn.Conv1d(encoder_width, hidden, kernel, stride=stride, padding=self.padding)
        self.activation = nn.GELU()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, llm_width))

    def output_lengths(self, frame_lengths: Tensor) -> Tensor:
        """(B,) long valid frames -> (B,) long audio vectors."""
        pooled = (frame_lengths + self.pool - 1) // self.pool
        return (pooled + 2 * self.padding - self.kernel) // self.stride + 1

    def forward(self, frames: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Project encoder frames to audio vectors.

        Args:
            frames: (B, F, D_enc) encoder output, any float dtype.
            frame_mask: (B, F) bool, True on valid frames (a prefix of each row).

        Returns:
            vectors: (B, A, D_llm), zero where `vector_mask` is False.
            vector_mask: (B, A) bool, True on the row's real vectors.
        """
        lengths = valid_frame_counts(frames, frame_mask, self.encoder_width)
        frames = frames.to(self.conv.weight.dtype).masked_fill(~frame_mask[..., None], 0.0)
        batch, num_frames, width = frames.shape
        frames = F.pad(frames, (0, 0, 0, -num_frames % self.pool))
        pooled = frames.reshape(batch, -1, self.pool, width).mean(2)  # (B, P, D_enc)
        hidden = self.activation(self.conv(pooled.transpose(1, 2)))  # (B, hidden, A)
        vectors = self.mlp(hidden.transpose(1, 2))  # (B, A, D_llm)
        vector_mask = prefix_mask(self.output_lengths(lengths), vectors.shape[1])  # (B, A)
        return vectors.masked_fill(~vector_mask[..., None], 0.0), vector_mask


class FrameStackMLP(nn.Module):
    """SLAM-ASR's linear projector: stack `stack` consecutive frames, then Linear-ReLU-Linear.

    1500 frames (50 Hz) -> 300 vectors (10 Hz). Vector a concatenates frames stack*a ..
    stack*a + stack - 1 (frame-major). A tail shorter than `stack` is zero-padded and counts as
    one vector, so a row with F_b valid frames gives ceil(F_b / stack) vectors.
    """

    def __init__(self, encoder_width: int, llm_width: int, *, stack: int = 5, hidden: int = 2048):
        super().__init__()
        if stack < 1:
            raise ValueError(f"stack={stack} must be at least 1 (frames per audio vector)")
        self.encoder_width = encoder_width
        self.stack = stack
        self.linear1 = nn.Linear(stack * encoder_width, hidden)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(hidden, llm_width)

    def output_lengths(self, frame_lengths: Tensor) -> Tensor:
        """(B,) long valid frames -> (B,) long audio vectors: ceil(F_b / stack)."""
        return (frame_lengths + self.stack - 1) // self.stack

    def forward(self, frames: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Project encoder frames to audio vectors.

        Args:
            frames: (B, F, D_enc) encoder output, any float dtype.
            frame_mask: (B, F) bool, True on valid frames (a prefix of each row).

        Returns:
            vectors: (B, A, D_llm), A = ceil(F / stack), zero where `vector_mask` is False.
            vector_mask: (B, A) bool, True on the row's real vectors.
        """
        lengths = valid_frame_counts(frames, frame_mask, self.encoder_width)
        frames = frames.to(self.linear1.weight.dtype).masked_fill(~frame_mask[..., None], 0.0)
        batch, num_frames, width = frames.shape
        frames = F.pad(frames, (0, 0, 0, -num_frames % self.stack))
        stacked = frames.reshape(batch, -1, self.stack * width)  # (B, A, stack * D_enc)
        vectors = self.linear2(self.activation(self.linear1(stacked)))  # (B, A, D_llm)
        vector_mask = prefix_mask(self.output_lengths(lengths), vectors.shape[1])  # (B, A)
        return vectors.masked_fill(~vector_mask[..., None], 0.0), vector_mask


class RMSNormedProjector(nn.Module):
    """A projector whose audio vectors are RMS-normalised and scaled by a learned gain (model.audio_norm=rms).

    Ours, not in either paper: a projector trained from random can put its vectors far above the
    scale of the LLM's token embeddings (measured on the demo: RMS 7-9 against 0.05-0.9), where
    the residual stream at the audio positions is dominated by the raw vector. The gain (D,)
    starts at `scale`, the RMS of the token embeddings. Vectors past a row's count stay zero.
    """

    def __init__(self, projector: nn.Module, width: int, scale: float, eps: float = 1e-6) -> None:
        super().__init__()
        self.projector = projector
        self.gain = nn.Parameter(torch.full((width,), float(scale)))
        self.eps = eps

    def output_lengths(self, frame_lengths: Tensor) -> Tensor:
        """(B,) long valid frames -> (B,) long audio vectors, as the wrapped projector."""
        return self.projector.output_lengths(frame_lengths)

    def forward(self, frames: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, F, D_enc) frames -> (B, A, D) normalised vectors and their (B, A) mask."""
        vectors, vector_mask = self.projector(frames, frame_mask)
        inverse_rms = vectors.pow(2).mean(dim=-1, keepdim=True).add(self.eps).rsqrt()  # (B, A, 1)
        return vectors * inverse_rms * self.gain, vector_mask
