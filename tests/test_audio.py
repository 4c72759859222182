import numpy as np
import pytest

from jukebox_pl.audio import AudioDecodeError, encode_audio, level_dbfs, read_audio, resample, to_mono, write_audio


def test_flac_round_trip_and_seek_read(tmp_path):
    sr = 22050
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)[None].repeat(2, 0)
    data = encode_audio(x, sr, "FLAC", "PCM_16")
    y, sr2 = read_audio(data)
    assert sr2 == sr and y.shape == (2, sr) and np.abs(y - x).max() < 1e-4
    part, _ = read_audio(data, start=1000, frames=500)
    np.testing.assert_array_equal(part, y[:, 1000:1500])
    path = write_audio(tmp_path / "a.wav", x[0], sr)
    z, _ = read_audio(path)
    assert z.shape == (1, sr)


def test_encode_clips_instead_of_wrapping():
    y, _ = read_audio(encode_audio(np.full((1, 100), 1.7, np.float32), 8000))
    assert y.min() > 0.99


def test_resample_length_and_pitch():
    sr_in, sr_out = 48000, 22050
    t = np.arange(sr_in) / sr_in
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None]
    y = resample(x, sr_in, sr_out)
    assert y.shape == (1, sr_out) and y.dtype == np.float32
    peak_bin = np.argmax(np.abs(np.fft.rfft(y[0])))
    assert abs(peak_bin - 1000) <= 1
    assert resample(x, sr_in, sr_in) is x


def test_mono_blend_and_levels():
    st = np.stack([np.ones(4), np.zeros(4)]).astype(np.float32)
    assert to_mono(st).tolist() == [[0.5] * 4]
    assert to_mono(st, blend=0.25).tolist() == [[0.25] * 4]
    peak, rms = level_dbfs(np.zeros((1, 10)))
    assert peak == rms == -np.inf


def test_garbage_raises_named_error():
    with pytest.raises(AudioDecodeError, match="<bytes>"):
        read_audio(b"definitely not audio" * 10)
