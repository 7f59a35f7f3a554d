"""A GPT-2-shaped decoder for the GPU check, defined here (nothing is downloaded), and random tokens.

``gpt2-small`` is GPT-2 small's shape: 12 layers, 12 heads, width 768, 1024 positions, the
50257-token vocabulary, tied input/output embeddings: 124M parameters. Attention is
``scaled_dot_product_attention`` (flash attention on recent GPUs). The forward takes
``input_ids`` and ``labels`` and returns ``{"loss", "logits"}`` like a transformers causal LM.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class GPTShape:
    layers: int
    heads: int
    width: int
    positions: int
    vocab: int


SHAPES = {
    "gpt2-small": GPTShape(12, 12, 768, 1024, 50257),
    "small": GPTShape(4, 4, 256, 128, 512),  # the precision checks
    "tiny": GPTShape(2, 2, 32, 32, 128),  # --tiny: every code path in seconds
}


class Block(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.heads = shape.heads
        self.ln_1 = nn.LayerNorm(shape.width)
        self.attn = nn.Linear(shape.width, 3 * shape.width)
        self.proj = nn.Linear(shape.width, shape.width)
        self.ln_2 = nn.LayerNorm(shape.width)
        self.fc = nn.Linear(shape.width, 4 * shape.width)
        self.fc_out = nn.Linear(4 * shape.width, shape.width)

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = self.attn(self.ln_1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.fc_out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    _no_split_modules = ["Block"]  # FSDP's auto_wrap unit, as transformers models declare it
    main_input_name = "input_ids"

    def __init__(self, shape: GPTShape):
        super().__init__()
        self.shape = shape
        self.wte = nn.Embedding(shape.vocab, shape.width)
        self.wpe = nn.Embedding(shape.positions, shape.width)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.layers))
        self.ln_f = nn.LayerNorm(shape.width)
        self.lm_head = nn.Linear(shape.width, shape.vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        self.checkpointing = None  # gradient_checkpointing_enable's keyword arguments
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.checkpointing = dict(gradient_checkpointing_kwargs or {"use_reentrant": True})

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.checkpointing is not None

    def forward(self, input_ids, labels=None):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.blocks:
            x = checkpoint(block, x, **self.checkpointing) if self.checkpointing and self.training else block(x)
        logits = self.lm_head(self.ln_f(x))
        if labels is None:
            return {"logits": logits}
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
        return {"loss": loss, "logits": logits}


def parameters_without_positions(model: GPT) -> int:
    return sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()


def flops_per_token(model: GPT) -> float:
    """Training FLOPs per token (PaLM's estimate, as nanoGPT uses): 6 per parameter plus attention."""
    shape = model.shape
    return 6 * parameters_without_positions(model) + 12 * shape.layers * shape.width * shape.positions


class RandomTokens(torch.utils.data.Dataset):
    """``count`` sequences of uniformly random tokens (labels = inputs), fixed by the seed."""

    def __init__(self, shape: GPTShape, count: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, shape.vocab, (count, shape.positions), generator=generator)

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, index):
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}
