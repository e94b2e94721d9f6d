"""AdamW with Whisper-LLaDA's parameter groups and the warm-up + cosine learning-rate schedule.

Parameter groups follow the authors' rule (reference diffusion_asr_checkpoint_keys.md, section 1):
weight decay on every trainable parameter with ndim >= 2 whose name mentions no bias / LayerNorm;
none on biases and other 1-D parameters (norm gains, the CTC blank vector). The schedule is a pure
function of the optimizer step, `lr_at(step, cfg)`: linear warm-up from `warmup_start_lr` to `lr`
over `warmup_steps`, then a half cosine from `lr` down to `min_lr` at `max_steps` (and `min_lr`
after). The training loop sets each group's learning rate from it before every update, so a
resumed run needs only the step to continue the schedule exactly (no scheduler object to save).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from whisper_llada.config import TrainConfig

MIN_DECAY_NDIM = 2  # matrices, convolution kernels and query-token tables decay; vectors do not
# Name fragments of parameters that never decay, whatever their shape. "bias" and "norm" match
# anywhere in the lower-cased name (LayerNorm, layer_norm, rms_norm); "ln" only as a whole name
# component (ln, ln_1, ln_post), so that it does not match inside ordinary words.
NO_DECAY_SUBSTRINGS = ("bias", "norm")
LN_COMPONENT = re.compile(r"ln\d*")


def decays(name: str, parameter: torch.Tensor) -> bool:
    """Whether weight decay applies to `parameter` (the authors' rule, see the module docstring)."""
    lowered = name.lower()
    if parameter.ndim < MIN_DECAY_NDIM or any(s in lowered for s in NO_DECAY_SUBSTRINGS):
        return False
    return not any(LN_COMPONENT.fullmatch(part) for part in re.split(r"[._]", lowered))


def parameter_groups(
    parameters: Mapping[str, nn.Parameter], weight_decay: float
) -> list[dict[str, object]]:
    """AdamW groups in `parameters`' order: the decayed ones, then the rest (empty groups left out).

    Parameters are given as (name, parameter) pairs, so torch keeps each group's names under
    "param_names" (in the optimizer's state dict too): logs and tests can tell which went where.
    """
    groups = [
        {
            "params": [(n, p) for n, p in parameters.items() if decays(n, p)],
            "weight_decay": weight_decay,
        },
        {
            "params": [(n, p) for n, p in parameters.items() if not decays(n, p)],
            "weight_decay": 0.0,
        },
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(parameters: Mapping[str, nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW(betas, weight_decay) over `parameters` (the model's `trainable_parameters()`).

    The learning rate starts at `lr_at(0, cfg)`; the training loop updates it every step.
    """
    if not parameters:
        raise ValueError(
            "there is nothing to train: the model has no trainable parameter (check "
            "train.trainable and model.lora.r)"
        )
    return torch.optim.AdamW(
        parameter_groups(parameters, cfg.weight_decay), lr=lr_at(0, cfg), betas=cfg.betas
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of the update that follows `step` completed optimizer steps.

    step 0: warmup_start_lr; step warmup_steps: lr; then cosine to min_lr at max_steps, and
    min_lr beyond. With warmup_steps = 0 the cosine starts at step 0.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < cfg.warmup_steps:
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * step / cfg.warmup_steps
    decay_steps = cfg.max_steps - cfg.warmup_steps
    if decay_steps <= 0:
        return cfg.lr
    progress = (step - cfg.warmup_steps) / decay_steps
    if progress >= 1.0:
        return cfg.min_lr
    # Written as a decrease from lr so that the warm-up's end gives lr exactly.
    return cfg.lr - (cfg.lr - cfg.min_lr) * 0.5 * (1.0 - math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group learning rate `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
