"""`JukeboxPrior`: one level's prior as a plain module — conditioners, optional lyrics model, sparse transformer.

Module names follow the reference (`prior.*`, `y_emb.*`, `conditioner_blocks.0.*`, `prime_prior.*`,
`prime_state_proj`, `prime_state_ln`, `prime_x_out`), so released checkpoints import by renaming.

Lyrics come in two designs, both from the reference:
- "encoder": a causal transformer over the lyric characters (`prime_prior`), projected to the prior's width,
  feeds the prior's cross-attention layers; its own next-character loss trains it (`prime_x_out`).
- "merged": one sequence [lyric characters, music codes] in one transformer with prime-attention layers;
  the code ids are shifted past the character ids.
The loss is the reference's: (prime_loss_fraction * lyric_bits * n_tokens + music_bits * n_ctx) /
(n_tokens + n_ctx), in bits per token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from jukebox_pl.config.levels import Levels
from jukebox_pl.config.schema import PriorConfig
from jukebox_pl.config.sections import prior_config
from jukebox_pl.errors import UserValueError
from jukebox_pl.lyrics import LyricsTokenizer
from jukebox_pl.prior.attention import attn_kinds
from jukebox_pl.prior.builtin_conditioners import (
    LabelConditioner,
    LyricsEncoderConditioner,
    MergedLyricsConditioner,
    UpperLevelConditioner,
)
from jukebox_pl.prior.conditioning import Conditioner, Window, split_spec
from jukebox_pl.prior.decoding import StaticDecoder, prime_chunk, resolve_decode
from jukebox_pl.prior.guidance import GUIDED_INPUTS, guide, with_nulls
from jukebox_pl.prior.logit_filters import sample_token
from jukebox_pl.prior.pretrained import PriorPretrained
from jukebox_pl.prior.transformer import AutoregressiveTransformer

LYRICS_MODES = ("none", "encoder", "merged")


@dataclass
class PriorOutput:
    loss: torch.Tensor
    music_bits: torch.Tensor
    lyric_bits: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class Conditioning:
    """Everything a window is conditioned on, assembled from the conditioners' contributions once per window."""

    x_cond: torch.Tensor | None  # (B, L, width) per-token conditioning (timing, upper-level codes, ...)
    y_cond: torch.Tensor | None  # (B, 1, width) the start token (artist/genre labels, ...)
    encoder_kv: torch.Tensor | None  # (B, n_tokens, width) lyrics encoder output for cross-attention
    prefix: torch.Tensor | None  # (B, n_tokens) token ids before the codes (merged lyric characters)
    aux_bits: torch.Tensor | None = None  # a conditioner's own loss (the lyrics encoder's), in bits


class JukeboxPrior(nn.Module, PriorPretrained):
    """A prior over the codes of one VQ-VAE level. `save_pretrained(folder)` / `from_pretrained(folder or Hub
    id)`: the Hub layout (`jukebox_pl.hub`).

    `bins` and `hop_length` describe the level; `upper` = (down_t, stride_t) of the level above (upsamplers);
    `y_bins` = (genres, artists) when the config leaves them to the data's vocabulary.
    """

    def __init__(
        self,
        cfg: PriorConfig | DictConfig | dict,
        level: int,
        levels: int,
        bins: int,
        hop_length: int,
        sample_rate: int,
        upper: tuple[int, int] | None = None,
        y_bins: tuple[int, int] | None = None,
    ):
        super().__init__()
        cfg = prior_config(cfg)
        self.cfg, self.level, self.levels, self.bins = cfg, level, levels, bins
        self.hop_length, self.sample_rate, self.n_ctx = hop_length, sample_rate, cfg.n_ctx
        self.upper = tuple(upper) if upper is not None else None
        self.is_top = level == levels - 1
        self.lyrics_mode = cfg.lyrics
        self._check(cfg, upper)
        # classifier-free guidance: the dropout of the inputs this prior reads
        reads = {"artist": cfg.labels, "genre": cfg.labels, "lyrics": cfg.lyrics != "none"}
        drop = dataclasses.asdict(cfg.cfg_drop)  # (checked with the rest of the section: each in [0, 1))
        self.cfg_drop = {name: p for name, p in drop.items() if reads[name] and p > 0}
        self.n_tokens = cfg.n_tokens if cfg.lyrics != "none" else 0
        self.n_vocab = LyricsTokenizer(cfg.lyrics_vocab).n_vocab if self.n_tokens else 0
        w = cfg.width
        self._conditioners: list[Conditioner] = []  # in order; registered under their own (reference) names
        self.extra_conditioners = nn.ModuleDict()  # user conditioners from `conditioners:` in the config
        self.y_bins = self._label_bins(cfg, y_bins) if cfg.labels else None  # (genres, artists)
        if cfg.labels:
            genres, artists = self.y_bins
            self.y_emb = LabelConditioner(
                artists, genres, w, cfg.n_ctx, 5, include_time_signal=self.is_top, t_bins=cfg.t_bins,
                sample_rate=sample_rate, min_duration=cfg.min_duration, max_duration=cfg.max_duration,
                init_scale=cfg.init_scale,
            )  # fmt: skip
            self._conditioners.append(self.y_emb)
        if not self.is_top:
            down_t, stride_t = upper
            self.upsample_ratio = stride_t**down_t
            block = UpperLevelConditioner(
                bins, w, down_t, stride_t, cfg.cond_width, cfg.cond_depth, cfg.cond_m_conv,
                cfg.cond_dilation_growth_rate, cfg.cond_dilation_cycle, cfg.cond_zero_out, cfg.cond_res_scale,
                cfg.init_scale, cfg.cond_checkpoint_res,
            )  # fmt: skip
            self.conditioner_blocks = nn.ModuleList([block])
            self._conditioners.append(block)
        body = dict(
            width=w, depth=cfg.depth, heads=cfg.heads, attn_order=cfg.attn_order, blocks=cfg.blocks,
            m_attn=cfg.m_attn, m_mlp=cfg.m_mlp, init_scale=cfg.init_scale, zero_out=cfg.zero_out,
            res_scale=cfg.res_scale, checkpoint_res=cfg.checkpoint_res,
        )  # fmt: skip
        if self.lyrics_mode == "merged":
            self.prior = AutoregressiveTransformer(
                self.n_vocab + bins, self.n_tokens + cfg.n_ctx, y_cond=True, prime_len=self.n_tokens, **body
            )
            self._add_conditioner(MergedLyricsConditioner(self.n_tokens))
        else:
            self.prior = AutoregressiveTransformer(
                bins, cfg.n_ctx, y_cond=cfg.labels, merged_decoder=cfg.merged_decoder, **body
            )
        if self.lyrics_mode == "encoder":
            self._add_conditioner(LyricsEncoderConditioner(self.n_vocab, self.n_tokens, w, cfg, cfg.init_scale))
        for name, spec in cfg.conditioners.items():
            cls, kwargs = split_spec(name, spec)
            self._add_conditioner(cls(width=w, n_ctx=cfg.n_ctx, **kwargs), name)

    def _add_conditioner(self, conditioner: Conditioner, name: str | None = None) -> None:
        """Register a conditioner: flat ones put their children on the prior (reference key names)."""
        if conditioner.flat:
            for child_name, child in conditioner.named_children():
                self.add_module(child_name, child)
        else:
            self.extra_conditioners[name] = conditioner
        self._conditioners.append(conditioner)

    @property
    def conditioners(self) -> list[Conditioner]:
        """Every conditioner of this prior, in the order their contributions are applied."""
        return list(self._conditioners)

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The batch keys this prior's conditioners read (besides the codes)."""
        return tuple(dict.fromkeys(k for c in self._conditioners for k in c.batch_keys))

    @property
    def track_fields(self) -> dict[str, dict]:
        """Per-track values the DataModules must copy into batches for the extra conditioners."""
        fields: dict[str, dict] = {}
        for name, spec in self.cfg.conditioners.items():
            cls, kwargs = split_spec(name, spec)
            fields |= cls.track_fields(**kwargs)
        return fields

    @property
    def lyrics_encoder(self) -> LyricsEncoderConditioner | None:
        return next((c for c in self._conditioners if isinstance(c, LyricsEncoderConditioner)), None)

    # -- construction checks ----------------------------------------------------------------------------
    def _check(self, cfg: PriorConfig, upper) -> None:
        where = f"prior of level {self.level}"
        if cfg.lyrics not in LYRICS_MODES:
            raise UserValueError(f"{where}: lyrics={cfg.lyrics!r}; choose one of {', '.join(LYRICS_MODES)}")
        if cfg.lyrics != "none":
            if not self.is_top:
                raise UserValueError(f"{where}: lyrics are for the top prior only (set lyrics=none on upsamplers)")
            if cfg.n_tokens <= 0:
                raise UserValueError(f"{where}: lyrics={cfg.lyrics} needs n_tokens > 0")
        if cfg.lyrics == "merged" and not cfg.labels:
            raise UserValueError(f"{where}: the merged lyrics design needs labels=true (its start token is the label)")
        kinds = set(attn_kinds(cfg.attn_order, cfg.depth))
        needs = {"encoder": "cross", "merged": "prime"}.get(cfg.lyrics)
        if needs and needs not in kinds:
            raise UserValueError(
                f"{where}: lyrics={cfg.lyrics} needs {needs}-attention layers but attn_order={cfg.attn_order} "
                f"with depth={cfg.depth} has only {sorted(kinds)}"
            )
        for kind, mode in (("cross", "encoder"), ("prime", "merged")):
            if kind in kinds and cfg.lyrics != mode:
                raise UserValueError(
                    f"{where}: attn_order={cfg.attn_order} has {kind}-attention layers, which need lyrics={mode}"
                )
        if not self.is_top and upper is None:
            raise UserValueError(f"{where}: an upsampler needs the (down_t, stride_t) of the level above")

    @staticmethod
    def _label_bins(cfg: PriorConfig, y_bins) -> tuple[int, int]:
        if cfg.y_bins is not None:
            genres, artists = cfg.y_bins
            if y_bins is not None and (y_bins[0] > genres or y_bins[1] > artists):
                raise UserValueError(
                    f"the data's vocabulary has {y_bins[1]} artists and {y_bins[0]} genres but the prior's y_bins "
                    f"= [{genres}, {artists}] (genres, artists); raise prior.<level>.y_bins or set it to null"
                )
            return int(genres), int(artists)
        if y_bins is None:
            raise UserValueError(
                "labels=true needs y_bins: set prior.<level>.y_bins or train on shards with a vocab.json"
            )
        return int(y_bins[0]), int(y_bins[1])

    # -- shapes -------------------------------------------------------------------------------------------
    @property
    def sample_length(self) -> int:
        """Audio samples one window covers."""
        return self.n_ctx * self.hop_length

    @property
    def upper_length(self) -> int:
        return self.n_ctx // self.upsample_ratio

    # -- conditioning -------------------------------------------------------------------------------------
    def encode_lyrics(self, lyrics: torch.Tensor) -> torch.Tensor:
        """Lyric character ids (B, n_tokens) -> keys/values source for the cross-attention (B, n_tokens, width)."""
        return self.lyrics_encoder.encode(lyrics)

    def condition(self, n: int, loss: bool = False, **inputs: torch.Tensor | None) -> Conditioning:
        """The window's conditioning from the batch keys the conditioners read (`batch_keys`); other keys are
        ignored. Start-token and per-position contributions are summed."""
        window = Window(n, self.n_ctx, self.sample_length, self.cfg.width, loss)
        where = f"the prior of level {self.level}"
        start = tokens = encoder_kv = prefix = aux_bits = None
        for conditioner in self._conditioners:
            conditioner.check_inputs(inputs, where)
            part = conditioner.contribute(inputs, window)
            start = part.start if start is None else (start if part.start is None else start + part.start)
            tokens = part.tokens if tokens is None else (tokens if part.tokens is None else tokens + part.tokens)
            if (part.encoder_kv is not None and encoder_kv is not None) or (
                part.prefix is not None and prefix is not None
            ):
                raise UserValueError(f"{where}: two conditioners provide cross-attention inputs or prefix tokens")
            encoder_kv = part.encoder_kv if part.encoder_kv is not None else encoder_kv
            prefix = part.prefix if part.prefix is not None else prefix
            aux_bits = part.aux_bits if part.aux_bits is not None else aux_bits
        if start is not None and not self.prior.y_cond:
            raise UserValueError(f"{where}: a conditioner contributes a start token but labels=false")
        if self.lyrics_mode == "merged":
            music = tokens if tokens is not None else start.new_zeros(n, self.n_ctx, self.cfg.width)
            tokens = torch.cat([music.new_zeros(n, self.n_tokens, music.shape[-1]), music], dim=1)
        return Conditioning(tokens, start, encoder_kv, prefix, aux_bits)

    @property
    def guided_inputs(self) -> tuple[str, ...]:
        """The inputs this prior was trained to do without (`cfg_drop`): what guidance can contrast."""
        return self.guidable()

    def guidable(self, asked: list[str] | tuple[str, ...] | None = None) -> tuple[str, ...]:
        """Of the inputs `asked` (all by default), those this prior learned to do without."""
        return tuple(name for name in GUIDED_INPUTS if name in self.cfg_drop and (not asked or name in asked))

    def guided_condition(self, n: int, cfg_scale: float, inputs: tuple[str, ...] | None = None, **labels):
        """The conditioning for `sample(..., cfg_scale=...)`: n rows, or at a scale other than 1, 2n rows (the
        rows as asked, then copies with `inputs` (default: every guided input) set to their nulls)."""
        if cfg_scale == 1.0:
            return self.condition(n, **labels)
        inputs = self.guided_inputs if inputs is None else tuple(inputs)
        untrained = [name for name in inputs if name not in self.cfg_drop]
        if untrained or not inputs:
            raise UserValueError(
                f"guidance on the prior of level {self.level} contrasts {', '.join(untrained) or 'nothing'}, which "
                f"it was not trained to do without (cfg_drop: {self.cfg_drop or 'none'}); train or fine-tune it "
                f"with prior.<level>.cfg_drop.<input>=0.1..0.3, or sample it with cfg_scale 1"
            )
        return self.condition(2 * n, **with_nulls(labels, inputs))

    # -- training -----------------------------------------------------------------------------------------
    def forward(self, codes: torch.Tensor, return_logits: bool = False, **labels) -> PriorOutput:
        """codes (B, n_ctx) of this level + conditioning (see `condition`) -> losses in bits per token."""
        if codes.shape[-1] != self.n_ctx:
            raise UserValueError(f"codes windows of {codes.shape[-1]} tokens; this prior's n_ctx is {self.n_ctx}")
        cond = self.condition(codes.shape[0], loss=True, **labels)
        bits = AutoregressiveTransformer.bits_per_token
        lyric_bits = None
        if self.lyrics_mode == "merged":
            p = self.n_tokens
            tokens = torch.cat([cond.prefix, codes + self.n_vocab], dim=1)
            logits = self.prior(tokens, cond.x_cond, cond.y_cond)
            lyric_bits, music_bits = bits(logits[:, :p], tokens[:, :p]), bits(logits[:, p:], tokens[:, p:])
            logits = logits[:, p:, self.n_vocab :]
        else:
            logits = self.prior(codes, cond.x_cond, cond.y_cond, cond.encoder_kv)
            music_bits = bits(logits, codes)
            lyric_bits = cond.aux_bits
        loss = music_bits
        if lyric_bits is not None:
            p, g = self.n_tokens, self.n_ctx
            loss = (self.cfg.prime_loss_fraction * lyric_bits * p + music_bits * g) / (p + g)
        return PriorOutput(loss, music_bits, lyric_bits, logits if return_logits else None)

    # -- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        cond: Conditioning,
        n: int,
        prompt: torch.Tensor | None = None,
        length: int | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.0,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
        on_token: Callable[[int], None] | None = None,
        decode: str = "auto",
        cfg_scale: float = 1.0,
    ) -> torch.Tensor:
        """Codes (n, length) int64 in [0, bins) of one window (`length` <= n_ctx codes of this level, each
        `hop_length` audio samples; the VQ-VAE level decodes them): `prompt` codes (n, p) kept as they are, the
        rest sampled with the KV cache (the prompt is pushed through in passes of `chunk_size` tokens; 0: one
        pass; None: as `prime_chunk` finds fastest on the device).

        Merged lyrics, as the reference's `primed_sample` + `prior_postprocess`: each music position is drawn
        from the whole joint vocabulary (characters and codes, temperature and top-k/top-p over all of it) and
        fed back as drawn; a drawn character becomes code 0 only in the returned codes.

        `decode`: how the per-token steps run (`prior.decoding`: auto, dynamic, static, graph, compile); the
        prompt is primed the same way in every mode.

        `cfg_scale` other than 1: classifier-free guidance (`prior.guidance`); `cond` then holds 2n rows (from
        `guided_condition`), the conditional rows and their null-conditioned copies, sampled as one batch with one
        cache; each drawn token is fed to both."""
        length = self.n_ctx if length is None else length
        p = 0 if prompt is None else prompt.shape[1]
        if not p <= length <= self.n_ctx:
            raise UserValueError(
                f"prompt of {p} codes and length {length}: need prompt <= length <= n_ctx={self.n_ctx}"
            )
        guided = cfg_scale != 1.0
        rows = 2 * n if guided else n
        parts = [t for t in (cond.y_cond, cond.x_cond, cond.encoder_kv, cond.prefix) if t is not None]
        if guided and (not parts or parts[0].shape[0] != rows):
            raise UserValueError("guided sampling needs the 2n rows of `guided_condition(n, cfg_scale, ...)`")
        shift = self.n_vocab if self.lyrics_mode == "merged" else 0
        if guided and prompt is not None:
            prompt = torch.cat([prompt, prompt])
        known = [] if prompt is None else [prompt.long() + shift]
        if self.lyrics_mode == "merged":
            known.insert(0, cond.prefix)
        known = torch.cat(known, dim=1) if known else None
        n_known = 0 if known is None else known.shape[1]
        total = n_known + length - p
        if n_known >= total:
            return self._to_codes(known[:n, known.shape[1] - length :], shift)
        out = [] if known is None else [known[:n]]
        device = self.prior.x_emb.weight.device
        mode, chunk_size = resolve_decode(decode, device), prime_chunk(chunk_size, rows, device)
        step = self.prior.step
        mix = (lambda logits: guide(logits, cfg_scale)) if guided else (lambda logits: logits)  # noqa: E731
        with self.prior.streaming(capacity=total, static=mode != "dynamic"):
            if chunk_size is None:  # the start token and the whole prompt in one pass
                logits = step(known, 0, rows, cond.x_cond, cond.y_cond, cond.encoder_kv)[:, -1]
            else:
                logits = step(None, 0, rows, cond.x_cond, cond.y_cond, cond.encoder_kv)[:, -1]
                for i in range(0, n_known, chunk_size):
                    chunk = known[:, i : i + chunk_size]
                    logits = step(chunk, i + 1, rows, cond.x_cond, cond.y_cond, cond.encoder_kv)[:, -1]
            next_logits = self._stepper(mode, rows, cond, n_known + 1, total)
            for pos in range(n_known, total):
                token = sample_token(mix(logits), temperature, top_k, top_p, generator)
                out.append(token[:, None])
                if on_token is not None:
                    on_token(pos - n_known + 1)
                if pos + 1 < total:
                    logits = next_logits(torch.cat([token, token]) if guided else token, pos + 1)
        tokens = torch.cat(out, dim=1)
        return self._to_codes(tokens[:, tokens.shape[1] - length :], shift)

    def _stepper(self, mode: str, n: int, cond: Conditioning, first: int, total: int):
        """(token (B,), position) -> logits (B, bins) of that position, for a stream primed up to `first`."""
        if mode == "dynamic" or first >= total:
            x_cond, y_cond, kv = cond.x_cond, cond.y_cond, cond.encoder_kv
            return lambda token, pos: self.prior.step(token[:, None], pos, n, x_cond, y_cond, kv)[:, -1]
        decoder = StaticDecoder(self.prior, first, n, cond.x_cond, cond.encoder_kv, mode)
        return lambda token, pos: decoder(token)

    @staticmethod
    def _to_codes(tokens: torch.Tensor, shift: int) -> torch.Tensor:
        """Joint-vocabulary ids -> codes: unshifted, and a character id (below the shift) -> code 0, as the
        reference's `prior_postprocess` clamps them."""
        return (tokens - shift).clamp(min=0)


def build_prior(
    levels: Levels,
    level: int | str,
    prior: PriorConfig | DictConfig | dict,
    y_bins: tuple[int, int] | list[int] | None = None,
) -> JukeboxPrior:
    """The prior of one level (a name or an index) of a run's `levels`: its codebook, hop, sample rate and the
    level above come from `levels`, the architecture from the `prior` section. What training, sampling, import
    and the benches build."""
    idx = levels.index(level)
    return JukeboxPrior(
        prior, idx, len(levels), levels.codebook_size, levels.hop(idx), levels.sample_rate, levels.upsampling(idx),
        y_bins,
    )  # fmt: skip
