"""Our factorised-attention transformer as a block of your own model, trained with a plain torch loop.

Two small models over your own token sequences (here: synthetic "melodies", a motif of `period` tokens
repeated to fill the context):

- `NextStepModel` (`--task next`): your embedding and head around `jukebox_pl.Transformer`, the plain stack of
  pre-LN blocks with causal row / column / previous-row attention. With rows of `period` tokens, each row
  holds one repeat of the motif and previous-row attention sees the whole last repeat, so the model learns to
  continue the motif.
- `MotifClassifier` (`--task classify`): `jukebox_pl.AutoregressiveTransformer` (embedding, start token and
  positions included) used for its hidden states, `model.hidden(tokens)` (B, L, width), mean-pooled into a
  linear classifier that says which of a few known motifs (with some notes changed) a sequence repeats.

    python examples/transformer_block.py --task next --steps 300
    python examples/transformer_block.py --task classify --steps 100
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jukebox_pl import AutoregressiveTransformer, Transformer


class NextStepModel(nn.Module):
    """tokens (B, L) -> next-token logits (B, L, vocab); output i predicts tokens[:, i + 1]."""

    def __init__(self, vocab: int, n_ctx: int, width: int = 64, depth: int = 3, heads: int = 2, blocks: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(0.01 * torch.randn(n_ctx, width))
        # attn_order=2 cycles row, column and previous-row attention; `blocks` rows of n_ctx / blocks tokens
        self.block = Transformer(width, n_ctx, heads, depth, attn_order=2, blocks=blocks)
        self.ln = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        return self.out(self.ln(self.block(x)))


class MotifClassifier(nn.Module):
    """tokens (B, L) -> class logits (B, n_classes) from the transformer's mean-pooled hidden states."""

    def __init__(self, vocab: int, n_ctx: int, n_classes: int, width: int = 64, depth: int = 3, blocks: int = 4):
        super().__init__()
        self.backbone = AutoregressiveTransformer(vocab, n_ctx, width, depth, heads=2, blocks=blocks)
        self.classify = nn.Linear(width, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone.hidden(tokens)  # (B, L, width); the next-token logits would be backbone.head(hidden)
        return self.classify(hidden.mean(dim=1))


def melodies(n: int, n_ctx: int, period: int, vocab: int, g: torch.Generator, motifs=None, noise: float = 0.0):
    """n sequences, each a motif repeated to n_ctx tokens: random motifs, or one of `motifs` (with its class)."""
    if motifs is None:
        labels = torch.zeros(n, dtype=torch.long)
        motif = torch.randint(0, vocab, (n, period), generator=g)
    else:
        labels = torch.randint(0, len(motifs), (n,), generator=g)
        motif = motifs[labels]
    seq = motif.repeat(1, n_ctx // period)
    changed = torch.rand(seq.shape, generator=g) < noise
    seq = torch.where(changed, torch.randint(0, vocab, seq.shape, generator=g), seq)
    return seq, labels


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("next", "classify"), default="next")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-ctx", type=int, default=32, help="sequence length (a multiple of --period)")
    p.add_argument("--period", type=int, default=8, help="motif length; also the attention row length")
    p.add_argument("--vocab", type=int, default=16)
    p.add_argument("--classes", type=int, default=4, help="known motifs (classify)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse(argv)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    blocks = args.n_ctx // args.period
    if args.task == "next":
        model = NextStepModel(args.vocab, args.n_ctx, args.width, blocks=blocks)
        motifs = None
    else:
        model = MotifClassifier(args.vocab, args.n_ctx, args.classes, args.width, blocks=blocks)
        motifs = torch.randint(0, args.vocab, (args.classes, args.period), generator=g)

    def loss_and_acc(tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if args.task == "next":  # only the repeats are predictable: score outputs from the end of the first motif
            logits, target = model(tokens)[:, args.period - 1 : -1], tokens[:, args.period :]
        else:
            logits, target = model(tokens), labels
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        return loss, (logits.argmax(-1) == target).float().mean()

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses = []
    for step in range(1, args.steps + 1):
        tokens, labels = melodies(args.batch_size, args.n_ctx, args.period, args.vocab, g, motifs, noise=0.1)
        loss, _ = loss_and_acc(tokens, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % args.log_every == 0 or step in (1, args.steps):
            print(f"step {step:4d}  loss {loss.item():.3f}")

    model.eval()
    with torch.no_grad():
        tokens, labels = melodies(256, args.n_ctx, args.period, args.vocab, g, motifs, noise=0.1)
        _, acc = loss_and_acc(tokens, labels)
    print(f"{args.task}: loss {losses[0]:.3f} -> {losses[-1]:.3f}; held-out accuracy {acc.item():.3f}")
    return {"losses": losses, "accuracy": acc.item(), "model": model}


if __name__ == "__main__":
    main()
