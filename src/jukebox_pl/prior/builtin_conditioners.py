"""The built-in conditioners (`jukebox_pl.prior.conditioning.Conditioner`): labels and timing (top prior), the
codes of the level above (upsamplers), and lyrics (a lyrics encoder for cross-attention, or merged prefix tokens).

Module names mirror the reference (`y_emb.{artist_emb, bow_genre_emb, total_length_emb, absolute_pos_emb,
relative_pos_emb}.emb`, `conditioner_blocks.0.{x_emb, cond.model, ln}`, `prime_prior.*`, `prime_state_proj`,
`prime_state_ln`, `prime_x_out`) so its checkpoints import by renaming.
"""

from __future__ import annotations

import torch
from torch import nn

from jukebox_pl.errors import UserValueError
from jukebox_pl.prior.conditioning import Conditioner, Contribution, Window
from jukebox_pl.prior.transformer import AutoregressiveTransformer
from jukebox_pl.vqvae.encdec import BlockSpec, DecoderConvBlock


class SimpleEmbedding(nn.Module):
    """An id embedding whose errors name the label kind and the valid range."""

    def __init__(self, bins: int, width: int, init_scale: float = 1.0, what: str = "label"):
        super().__init__()
        self.bins, self.what = bins, what
        self.emb = nn.Embedding(bins, width)
        nn.init.normal_(self.emb.weight, std=0.01 * init_scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.bins):
            raise UserValueError(
                f"{self.what} id out of range: got {ids.min().item()}..{ids.max().item()}, this prior knows ids "
                f"0..{self.bins - 1} (0 = unknown); was it trained with another vocab.json?"
            )
        return self.emb(ids)


class RangeEmbedding(nn.Module):
    """A value in [low, high) binned into `bins` embeddings; with n_time > 1, interpolated from start to end
    across the window (the reference's timing embeddings)."""

    def __init__(
        self,
        n_time: int,
        bins: int,
        low: float,
        high: float,
        width: int,
        init_scale: float = 1.0,
        clamp: bool = False,
        what: str = "position",
    ):
        super().__init__()
        self.n_time, self.bins, self.low, self.high, self.clamp, self.what = n_time, bins, low, high, clamp, what
        self.emb = nn.Embedding(bins, width)
        nn.init.normal_(self.emb.weight, std=0.01 * init_scale)

    def forward(self, start: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
        start = start.float().reshape(-1, 1)
        if ((start < self.low) | (start >= self.high)).any():
            raise UserValueError(f"{self.what} {start.flatten().tolist()} outside [{self.low}, {self.high})")
        if self.n_time > 1:
            if end is None:
                raise UserValueError(f"{self.what} needs an end value to interpolate over the window")
            end = end.float().reshape(-1, 1)
            if self.clamp:
                end = end.clamp(self.low, self.high)
            frac = torch.arange(self.n_time, device=start.device, dtype=torch.float32)[None] / self.n_time
            position = start + (end - start) * frac
        else:
            position = start
        return self.emb(self.bin_of(position))

    def bin_of(self, position: torch.Tensor) -> torch.Tensor:
        """The reference's binning, in its order: normalise to [0, 1) first, then scale by bins and floor (in
        float32, bins * (pos - low) / (high - low) floors differently for some positions). The clamp only
        keeps a value that rounding pushed onto `high` in the last bin."""
        normalised = (position - self.low) / (self.high - self.low)
        return (self.bins * normalised).floor().long().clamp(0, self.bins - 1)


class LabelConditioner(Conditioner):
    """Artist + bag of genres -> the start token; total length, absolute and relative position -> per-token
    timing embeddings over the window (top prior only)."""

    def __init__(
        self,
        n_artists: int,
        n_genres: int,
        width: int,
        n_time: int,
        max_genres: int,
        include_time_signal: bool = True,
        t_bins: int = 64,
        sample_rate: int = 44100,
        min_duration: float = 60.0,
        max_duration: float = 600.0,
        init_scale: float = 1.0,
    ):
        super().__init__()
        self.max_genres, self.include_time_signal, self.width = max_genres, include_time_signal, width
        self.bow_genre_emb = SimpleEmbedding(n_genres, width, init_scale, "genre")
        self.artist_emb = SimpleEmbedding(n_artists, width, init_scale, "artist")
        if include_time_signal:
            lo, hi = min_duration * sample_rate, max_duration * sample_rate
            self.total_length_emb = RangeEmbedding(1, t_bins, lo, hi, width, init_scale, what="total length")
            self.absolute_pos_emb = RangeEmbedding(n_time, t_bins, 0.0, hi, width, init_scale, what="position")
            self.relative_pos_emb = RangeEmbedding(
                n_time, t_bins, 0.0, 1.0, width, init_scale, clamp=True, what="relative position"
            )
        self.min_samples = min_duration * sample_rate
        self.max_samples = max_duration * sample_rate
        self.batch_keys = ("artist", "genres") + (("total_length", "offset") if include_time_signal else ())
        self.describes = "artist and genre ids" + (" and timing" if include_time_signal else "")

    def contribute(self, inputs: dict, window: Window) -> Contribution:
        g = inputs.get
        start, timing = self(g("artist"), g("genres"), g("total_length"), g("offset"), window.sample_length)
        return Contribution(start=start, tokens=timing)

    def forward(
        self,
        artist: torch.Tensor,
        genres: torch.Tensor,
        total_length: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
        length: int | None = None,
    ):
        """-> (start token (B, 1, W), timing (B, n_time, W) or None). Genre slots of -1 are empty."""
        mask = (genres >= 0).float().unsqueeze(-1)
        genre = (self.bow_genre_emb(genres.clamp(min=0)) * mask).sum(dim=1, keepdim=True)
        start = genre + self.artist_emb(artist.reshape(-1, 1))
        if not self.include_time_signal:
            return start, None
        if total_length is None or offset is None or length is None:
            raise UserValueError("the timing signal needs total_length, offset and the window length (samples)")
        # songs outside [min_duration, max_duration) use the nearest length bin; their relative position is
        # still measured against their true length
        total = total_length.float().clamp(self.min_samples, self.max_samples - 1)
        true_total = total_length.float().clamp(min=1.0)
        begin, end = offset.float(), (offset + length).float()  # end in int64 first, as the reference
        timing = (
            self.total_length_emb(total)
            + self.absolute_pos_emb(begin.clamp(max=self.max_samples - 1), end.clamp(max=self.max_samples))
            + self.relative_pos_emb(begin.clamp(max=true_total - 1) / true_total, end / true_total)
        )
        return start, timing


class UpperLevelConditioner(Conditioner):
    """Codes of the level above -> embeddings up-sampled to this level's rate (x4 in Jukebox), layer-normed;
    added to the upsampler's token embeddings."""

    def __init__(
        self,
        bins: int,
        width: int,
        down_t: int,
        stride_t: int,
        cond_width: int,
        cond_depth: int,
        m_conv: float = 1.0,
        dilation_growth_rate: int = 3,
        dilation_cycle: int | None = None,
        zero_out: bool = False,
        res_scale: bool = False,
        init_scale: float = 1.0,
        checkpoint_res: bool = False,
    ):
        super().__init__()
        self.x_emb = nn.Embedding(bins, width)
        nn.init.normal_(self.x_emb.weight, std=0.02 * init_scale)
        spec = BlockSpec(
            cond_width,
            cond_depth,
            m_conv,
            dilation_growth_rate,
            dilation_cycle,
            zero_out,
            res_scale,
            reverse_decoder_dilation=False,
            checkpoint_res=checkpoint_res,
        )
        self.cond = DecoderConvBlock(width, width, down_t, stride_t, spec)
        self.ln = nn.LayerNorm(width)
        self.ratio = stride_t**down_t

    batch_keys = ("upper_codes",)
    describes = "the codes of the level above"

    def contribute(self, inputs: dict, window: Window) -> Contribution:
        upper = inputs["upper_codes"]
        need = window.n_ctx // self.ratio
        if upper.shape[-1] != need:
            raise UserValueError(
                f"upper_codes has {upper.shape[-1]} codes per window; this upsampler needs "
                f"n_ctx / {self.ratio} = {need}"
            )
        return Contribution(tokens=self(upper))

    def forward(self, upper_codes: torch.Tensor) -> torch.Tensor:
        """(B, T_upper) codes -> (B, T_upper * ratio, width)."""
        x = self.x_emb(upper_codes).permute(0, 2, 1)
        return self.ln(self.cond(x).permute(0, 2, 1))


def _lyrics_or_error(inputs: dict, n_tokens: int) -> torch.Tensor:
    lyrics = inputs["lyrics"]
    if lyrics.shape[-1] != n_tokens:
        raise UserValueError(
            f"this prior reads {n_tokens} lyric characters per window; got lyrics {tuple(lyrics.shape)}"
        )
    return lyrics.long()


class LyricsEncoderConditioner(Conditioner):
    """The reference's separate lyrics encoder: a causal transformer over the lyric characters, projected to the
    prior's width, feeds the prior's cross-attention layers; its own next-character loss trains it (`aux_bits`).
    Registered flat on the prior (`prime_prior.*`, `prime_state_proj`, `prime_state_ln`, `prime_x_out`)."""

    batch_keys = ("lyrics",)
    flat = True
    describes = "lyric characters"

    def __init__(self, n_vocab: int, n_tokens: int, width: int, cfg, init_scale: float):
        super().__init__()
        self.n_tokens = n_tokens
        self.prime_prior = AutoregressiveTransformer(
            n_vocab, n_tokens, cfg.prime_width, cfg.prime_depth, cfg.prime_heads, cfg.prime_attn_order,
            cfg.prime_blocks, cfg.prime_m_attn, cfg.prime_m_mlp, cfg.prime_init_scale, cfg.prime_zero_out,
            cfg.prime_res_scale, checkpoint_res=cfg.prime_checkpoint_res, only_encode=True,
        )  # fmt: skip
        self.prime_state_proj = nn.Linear(cfg.prime_width, width)
        nn.init.normal_(self.prime_state_proj.weight, std=0.02 * cfg.prime_init_scale)
        nn.init.zeros_(self.prime_state_proj.bias)
        self.prime_state_ln = nn.LayerNorm(width)
        self.prime_x_out = nn.Linear(width, n_vocab, bias=False)
        nn.init.normal_(self.prime_x_out.weight, std=0.02 * init_scale)

    def encode(self, lyrics: torch.Tensor) -> torch.Tensor:
        """Lyric character ids (B, n_tokens) -> keys/values source for the cross-attention (B, n_tokens, width)."""
        return self.prime_state_ln(self.prime_state_proj(self.prime_prior(lyrics)))

    def contribute(self, inputs: dict, window: Window) -> Contribution:
        lyrics = _lyrics_or_error(inputs, self.n_tokens)
        kv = self.encode(lyrics)
        bits = AutoregressiveTransformer.bits_per_token(self.prime_x_out(kv), lyrics) if window.loss else None
        return Contribution(encoder_kv=kv, aux_bits=bits)


class MergedLyricsConditioner(Conditioner):
    """The reference's merged design: the lyric characters are the first `n_tokens` positions of the sequence."""

    batch_keys = ("lyrics",)
    flat = True  # no weights of its own
    describes = "lyric characters"

    def __init__(self, n_tokens: int):
        super().__init__()
        self.n_tokens = n_tokens

    def contribute(self, inputs: dict, window: Window) -> Contribution:
        return Contribution(prefix=_lyrics_or_error(inputs, self.n_tokens))
