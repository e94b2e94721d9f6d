"""Window-level Q-Former (Whisper-LLaDA, SALMONN style): 4 learned queries per 17-frame window of encoder frames.

The parameter names are those of the released Whisper-LLaDA checkpoint's `adapter.bert.*` keys that
the ASR forward uses (see checkpoint.py for the mapping). Same interface as the projectors in
projector.py. Local dimension names besides the package legend: W windows per row, Q queries per
window, w frames per window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whisper_llada.models.projector import WHISPER_FRAME_RATE, prefix_mask, valid_frame_counts

SALMONN_SECONDS_PER_WINDOW = 0.333333  # Whisper-LLaDA's second_per_window and second_stride
BERT_INIT_STD = 0.02  # BERT initializer_range; also the query tokens' N(0, 0.02) init


class _BertMultiHeadAttention(nn.Module):
    """BERT attention core (`query`, `key`, `value`); keys/values may come from another width."""

    def __init__(self, hidden: int, kv_width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_width, hidden)
        self.value = nn.Linear(kv_width, hidden)

    def forward(self, queries: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        """Attend (N, Q, hidden) queries to (N, S, kv_width) context -> (N, Q, hidden).

        `mask` is None or (N, 1, 1, S) bool, True where a context position may be attended.
        """
        n, q_len, hidden = queries.shape
        heads, head_dim = self.num_heads, hidden // self.num_heads
        q = self.query(queries).view(n, q_len, heads, head_dim).transpose(1, 2)  # (N, H, Q, d)
        k = self.key(context).view(n, -1, heads, head_dim).transpose(1, 2)  # (N, H, S, d)
        v = self.value(context).view(n, -1, heads, head_dim).transpose(1, 2)  # (N, H, S, d)
        dropout_p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return out.transpose(1, 2).reshape(n, q_len, hidden)  # (N, Q, hidden)


class _BertSubLayerOutput(nn.Module):
    """Post-LN sub-block end: LayerNorm(dropout(dense(x)) + residual)."""

    def __init__(self, in_width: int, hidden: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _BertAttention(nn.Module):
    """Attention sub-block: `self` (the BERT name of the core) and `output`."""

    def __init__(self, hidden: int, kv_width: int, num_heads: int, dropout: float, eps: float):
        super().__init__()
        self.self = _BertMultiHeadAttention(hidden, kv_width, num_heads, dropout)
        self.output = _BertSubLayerOutput(hidden, hidden, dropout, eps)

    def forward(self, queries: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        return self.output(self.self(queries, context, mask), queries)


class _BertIntermediate(nn.Module):
    """FFN up-projection with exact (erf) GELU."""

    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)
        self.activation = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.dense(x))


class _QFormerLayer(nn.Module):
    """Query self-attention, cross-attention to the window's frames, query feed-forward."""

    def __init__(
        self, hidden: int, encoder_width: int, num_heads: int, ffn: int, dropout: float, eps: float
    ) -> None:
        super().__init__()
        self.attention = _BertAttention(hidden, hidden, num_heads, dropout, eps)
        self.crossattention = _BertAttention(hidden, encoder_width, num_heads, dropout, eps)
        self.intermediate_query = _BertIntermediate(hidden, ffn)
        self.output_query = _BertSubLayerOutput(ffn, hidden, dropout, eps)

    def forward(self, queries: Tensor, frames: Tensor, frame_mask: Tensor) -> Tensor:
        queries = self.attention(queries, queries, None)  # all-zero additive mask in the original
        queries = self.crossattention(queries, frames, frame_mask)
        return self.output_query(self.intermediate_query(queries), queries)


class _QFormerEmbeddings(nn.Module):
    """LayerNorm + dropout on the query tokens (no word or position embeddings: no text input)."""

    def __init__(self, hidden: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor) -> Tensor:
        return self.dropout(self.LayerNorm(queries))


class _QFormerEncoder(nn.Module):
    def __init__(self, layers: list[_QFormerLayer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class _QFormerBert(nn.Module):
    """The BERT body of the Q-Former, named as in the released checkpoint's `adapter.bert`."""

    def __init__(self, embeddings: _QFormerEmbeddings, encoder: _QFormerEncoder) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.encoder = encoder

    def forward(self, queries: Tensor, frames: Tensor, frame_mask: Tensor) -> Tensor:
        queries = self.embeddings(queries)
        for layer in self.encoder.layer:
            queries = layer(queries, frames, frame_mask)
        return queries


def _init_bert_weights(module: nn.Module) -> None:
    """BERT's init: Linear weights N(0, 0.02) and zero biases (LayerNorm keeps ones/zeros)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=BERT_INIT_STD)
        nn.init.zeros_(module.bias)


# Per-layer tensors of the released checkpoint's `adapter.bert.encoder.layer.{i}` that the ASR
# forward pass uses (the text FFN `intermediate` / `output` is never run and not built).
_QFORMER_LAYER_BLOCKS = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "crossattention.self.query",
    "crossattention.self.key",
    "crossattention.self.value",
    "crossattention.output.dense",
    "crossattention.output.LayerNorm",
    "intermediate_query.dense",
    "output_query.dense",
    "output_query.LayerNorm",
]
_QFORMER_LAYER_PARAMETERS = tuple(
    f"{block}.{tensor}" for block in _QFORMER_LAYER_BLOCKS for tensor in ("weight", "bias")
)


class WindowQFormer(nn.Module):
    """Whisper-LLaDA's window-level Q-Former (SALMONN style), with variable-length rows.

    The frames are cut into windows of w frames every s frames, w = round(frame_rate *
    second_per_window) and s = round(frame_rate * second_stride). With the defaults both are
    round(50 * 0.333333) = 17, the same number the authors compute as round(1500 * 0.333333 / 30),
    since 1500 frames span 30 s. A row with F_b valid frames gets max(1, (F_b - w) // s + 1)
    windows (88 for 1500 frames; the last 4 frames are dropped). A row shorter than one window
    still gets one window, which attends only to its F_b valid frames. Each window is an
    independent Q-Former item: Q learned queries go through BERT-style post-LN layers
    (self-attention over the queries, cross-attention to the window's frames, query FFN), then
    `linear_proj` maps them to the LLM width. Audio vector t = Q * l + q is query q of window l.

    In the faithful 30 s mode every frame is valid, so nothing is masked and padded silence is
    attended like speech, as in the authors' code. Parameter names follow the released checkpoint
    after renaming `speech_query_tokens` -> `query_tokens` and `adapter.bert.` -> `bert.`; its
    unused tensors (word/position embeddings, text FFN, MLM head) are not built.
    """

    def __init__(
        self,
        encoder_width: int,
        llm_width: int,
        *,
        frame_rate: float = WHISPER_FRAME_RATE,
        second_per_window: float = SALMONN_SECONDS_PER_WINDOW,
        second_stride: float = SALMONN_SECONDS_PER_WINDOW,
        num_queries: int = 4,
        num_layers: int = 2,
        hidden: int = 768,
        num_heads: int = 12,
        ffn: int = 3072,
        dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.encoder_width = encoder_width
        self.window = round(frame_rate * second_per_window)
        self.stride = round(frame_rate * second_stride)
        if self.window < 1 or self.stride < 1:
            raise ValueError(
                f"second_per_window={second_per_window} and second_stride={second_stride} at "
                f"frame_rate={frame_rate} give a window of {self.window} and a stride of "
                f"{self.stride} frames; both must be at least one frame (1 / frame_rate seconds)"
            )
        if hidden % num_heads != 0:
            raise ValueError(
                f"hidden={hidden} is not divisible by num_heads={num_heads}; "
                "choose num_heads so that the head width hidden / num_heads is an integer"
            )
        self.num_queries = num_queries
        self.query_tokens = nn.Parameter(torch.empty(1, num_queries, hidden))
        layers = [
            _QFormerLayer(hidden, encoder_width, num_heads, ffn, dropout, layer_norm_eps)
            for _ in range(num_layers)
        ]
        self.bert = _QFormerBert(
            _QFormerEmbeddings(hidden, dropout, layer_norm_eps), _QFormerEncoder(layers)
        )
        # linear_proj is a plain nn.Linear in the original model: PyTorch's default init.
        self.linear_proj = nn.Linear(hidden, llm_width)
        nn.init.normal_(self.query_tokens, std=BERT_INIT_STD)
        self.bert.apply(_init_bert_weights)

    @staticmethod
    def parameter_names(num_layers: int = 2) -> list[str]:
        """State-dict names in registration order (the released checkpoint's used keys, renamed)."""
        layer_names = [
            f"bert.encoder.layer.{i}.{name}"
            for i in range(num_layers)
            for name in _QFORMER_LAYER_PARAMETERS
        ]
        return [
            "query_tokens",
            "bert.embeddings.LayerNorm.weight",
            "bert.embeddings.LayerNorm.bias",
            *layer_names,
            "linear_proj.weight",
            "linear_proj.bias",
        ]

    def num_windows(self, frame_lengths: Tensor) -> Tensor:
        """(B,) long valid frames -> (B,) long windows: max(1, (F_b - w) // s + 1)."""
        return ((frame_lengths - self.window) // self.stride + 1).clamp(min=1)

    def output_lengths(self, frame_lengths: Tensor) -> Tensor:
        """(B,) long valid frames -> (B,) long audio vectors (windows * queries)."""
        return self.num_windows(frame_lengths) * self.num_queries

    def forward(self, frames: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Project encoder frames to audio vectors.

        Args:
            frames: (B, F, D_enc) encoder output, any float dtype.
            frame_mask: (B, F) bool, True on valid frames (a prefix of each row).

        Returns:
            vectors: (B, A, D_llm) in the parameters' dtype, A = Q * max(1, (F - w) // s + 1);
                zero where `vector_mask` is False.
            vector_mask: (B, A) bool, True on the row's real vectors.
        """
        lengths = valid_frame_counts(frames, frame_mask, self.encoder_width)
        # Zeroing padded frames keeps a non-finite pad value out of the attention's weighted sum.
        frames = frames.to(self.linear_proj.weight.dtype).masked_fill(~frame_mask[..., None], 0.0)
        batch, num_frames, _ = frames.shape
        if num_frames < self.window:  # the whole batch is shorter than one window
            frames = F.pad(frames, (0, 0, 0, self.window - num_frames))
            frame_mask = F.pad(frame_mask, (0, self.window - num_frames), value=False)
        windows = frames.unfold(1, self.window, self.stride)  # (B, W, D_enc, w)
        num_windows = windows.shape[1]
        windows = windows.transpose(2, 3).reshape(batch * num_windows, self.window, -1)
        # windows: (B * W, w, D_enc); row b * W + l holds frames s*l .. s*l + w - 1 of item b
        window_mask = frame_mask.unfold(1, self.window, self.stride)  # (B, W, w)
        window_mask = window_mask.reshape(batch * num_windows, self.window)  # (B * W, w)
        # A window past a row's end has no valid frame; letting it attend to its zeroed frames
        # keeps the softmax finite, and its vectors are zeroed below.
        window_mask = window_mask | ~window_mask.any(1, keepdim=True)
        queries = self.query_tokens.expand(batch * num_windows, -1, -1)  # (B * W, Q, hidden)
        queries = self.bert(queries, windows, window_mask[:, None, None, :])  # (B * W, Q, hidden)
        vectors = self.linear_proj(queries)  # (B * W, Q, D_llm)
        vectors = vectors.reshape(batch, num_windows * self.num_queries, -1)  # (B, A, D_llm)
        window_valid = prefix_mask(self.num_windows(lengths), num_windows)  # (B, W)
        vector_mask = window_valid.repeat_interleave(self.num_queries, dim=1)  # (B, A)
        return vectors.masked_fill(~vector_mask[..., None], 0.0), vector_mask
