"""The Hugging Face Hub layout, offline: a VQ-VAE level, a prior and a whole run saved with `save_pretrained`,
copied elsewhere and loaded with `from_pretrained` give the same outputs; tampered folders are refused in one
line; the model card says what a user needs; a Hub id takes the same path once fetched."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from sampling_models import SR, VOCAB, tiny_models

from jukebox_pl.cli import main
from jukebox_pl.config.conditioner_targets import allow_conditioners
from jukebox_pl.config.levels import level_name
from jukebox_pl.config.loader import ConfigError
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.config.typed import plain
from jukebox_pl.errors import MissingInputError, RefusedError, UnsafeFileError, UserValueError
from jukebox_pl.hub import folder as hub_folder
from jukebox_pl.hub.weights import read_weights
from jukebox_pl.prior.model import JukeboxPrior
from jukebox_pl.sampling.models import SamplingModels
from jukebox_pl.stages.export_hub import export_hub
from jukebox_pl.training.checkpoints.read_write import EXPORT_FORMAT, atomic_torch_save
from jukebox_pl.vqvae.fingerprint import VQVAEMismatch, codes_fingerprint
from jukebox_pl.vqvae.model import VQVAELevelModel

pytestmark = pytest.mark.usefixtures("one_thread")


def moved(src: Path, dst: Path) -> Path:
    """The folder copied elsewhere and the original removed: nothing may refer back to it."""
    shutil.copytree(src, dst)
    shutil.rmtree(src)
    return dst


def tiny_level(level: int = 1) -> VQVAELevelModel:
    torch.manual_seed(3)
    model = VQVAELevelModel(vqvae_config(levels=3, l_bins=32, emb_width=8, width=8, depth=1), level).eval()
    model.bottleneck.k.normal_()  # a codebook that is not all zeros, so the codes differ
    model.sample_rate = SR
    return model


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_a_vqvae_level_loads_elsewhere_and_encodes_and_decodes_the_same(tmp_path):
    model = tiny_level()
    model.save_pretrained(tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {"model.safetensors", "config.json", "README.md"}
    loaded = VQVAELevelModel.from_pretrained(moved(tmp_path / "saved", tmp_path / "elsewhere"))
    assert not loaded.training and loaded.level == 1 and loaded.sample_rate == SR
    audio = torch.randn(2, 1, 4096, generator=torch.Generator().manual_seed(0))
    codes = model.encode(audio)
    assert torch.equal(loaded.encode(audio), codes) and codes.unique().numel() > 1
    assert torch.equal(loaded.decode(codes), model.decode(codes))


def test_a_prior_loads_elsewhere_with_the_same_logits_and_greedy_sample(tmp_path):
    prior = tiny_models().priors[1]  # an upsampler: conditioned on the level above, tied embedding and head
    prior.vqvae_fingerprint = {"middle": {"codebook": "ab" * 8, "hop": 32, "l_bins": 32}}
    prior.save_pretrained(tmp_path / "saved")
    loaded = JukeboxPrior.from_pretrained(moved(tmp_path / "saved", tmp_path / "elsewhere"))
    assert loaded.vqvae_fingerprint == prior.vqvae_fingerprint and loaded.upper == (2, 2)
    assert loaded.prior.x_out.weight is loaded.prior.x_emb.weight  # tied again after loading
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 32, (2, 32), generator=gen)
    upper = torch.randint(0, 32, (2, 8), generator=gen)
    labels = {"artist": torch.tensor([1, 2]), "genres": torch.tensor([[1, -1], [2, 1]])}
    inputs = {"upper_codes": upper, **labels}
    want = prior(codes, return_logits=True, **inputs).logits
    assert torch.equal(loaded(codes, return_logits=True, **inputs).logits, want)
    draws = []
    for model in (prior, loaded):
        cond = model.condition(2, **inputs)
        draws.append(model.sample(cond, 2, length=8, top_k=1, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(draws[0], draws[1])


def write_run(models: SamplingModels, run: Path, data: dict | None = None) -> Path:
    """A run folder holding exports, as `jukebox-pl export` (or `import-openai`) writes them."""
    n, vcfg = models.n_levels, plain(models.vqvae.level(0).cfg)
    for i in models.vqvae.available():
        state = {f"model.{k}": v for k, v in models.vqvae.level(i).state_dict().items()}
        hp = {"vqvae": vcfg, "level": i, "sample_rate": SR, "config": None}
        atomic_torch_save({"format": EXPORT_FORMAT, "kind": "vqvae-level", "hparams": hp, "state_dict": state,
                           "meta": {}}, run / f"vqvae_{level_name(i, n)}" / "export.pt")  # fmt: skip
    for i, prior in models.priors.items():
        hp = {"prior": plain(prior.cfg), "level": i, "vqvae_cfg": vcfg, "sample_rate": SR, "y_bins": [3, 3],
              "vqvae_checkpoints": None, "config": {"data": data or {}}, "vocab": VOCAB.to_dict()}  # fmt: skip
        state = {f"model.{k}": v for k, v in prior.state_dict().items()}
        meta = {"vqvae_fingerprint": codes_fingerprint(models.vqvae, i)}
        atomic_torch_save({"format": EXPORT_FORMAT, "kind": "prior", "hparams": hp, "state_dict": state,
                           "meta": meta}, run / f"prior_{level_name(i, n)}" / "export.pt")  # fmt: skip
        (run / f"prior_{level_name(i, n)}" / "config.yaml").write_text(yaml.safe_dump({"data": data or {}}))
    return run


@pytest.fixture
def run(tmp_path) -> Path:
    shards = tmp_path / "shards"
    shards.mkdir()
    manifest = {"sample_rate": SR, "counts": {"tracks": {"train": 5, "val": 2}}, "hours": {"total": 0.25}}
    (shards / "manifest.json").write_text(json.dumps(manifest))
    return write_run(tiny_models(), tmp_path / "run", {"shards": str(shards), "sample_rate": SR})


def sample_codes(run: Path, out: Path, capsys) -> dict:
    code = main(["sample", "--run", str(run), "--out", str(out), "--levels", "2", "--seconds", "0.3", "--seed", "7",
                 "--artist", "Organ Ondine", "--genre", "waltz", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    return torch.load(out / "codes.pt", weights_only=True)["codes"]


def test_a_run_exported_to_the_hub_layout_samples_the_same_codes(run, tmp_path, capsys):
    hub, url = export_hub(tmp_path / "hub", run=str(run), license="cc-by-nc-4.0")
    assert url is None
    assert {p.name for p in hub.iterdir()} == {"config.json", "README.md", "vqvae_bottom", "vqvae_middle",
                                               "vqvae_top", "prior_middle", "prior_top", "prior_bottom"}  # fmt: skip
    assert not list(hub.rglob("*.pt")) and not list(hub.rglob("*.ckpt"))
    hub = moved(hub, tmp_path / "downloaded")
    want, got = sample_codes(run, tmp_path / "a", capsys), sample_codes(hub, tmp_path / "b", capsys)
    assert set(want) == set(got) == {"top", "middle"}
    assert all(torch.equal(want[k], got[k]) for k in want)
    models = SamplingModels.from_pretrained(hub)  # every prior the run holds, and the vocabulary of the top one
    assert sorted(models.priors) == [0, 1, 2] and models.vocab.artist_id("Reed Rasmus") == 2
    card = (hub / "README.md").read_text()
    assert card.startswith("---\n") and "license: cc-by-nc-4.0" in card and "library_name: jukebox-pl" in card
    assert "`organ ondine`" in card and "`waltz`" in card  # the vocabulary (its keys)
    assert "Tracks: 7" in card and "Hours of audio: 0.25" in card and "Sample rate (Hz): 22050" in card
    total = sum(p.numel() for p in models.priors[2].parameters())
    assert f"| prior_top | {total:,} |" in card
    prior_card = (hub / "prior_top" / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in prior_card and "## VQ-VAE pairing" in prior_card and "Tracks: 7" in prior_card


def test_the_pairing_check_holds_for_a_hub_run(run, tmp_path):
    hub, _ = export_hub(tmp_path / "hub", run=str(run))
    other = tiny_level(2)  # another VQ-VAE's top level, same shapes
    other.save_pretrained(hub / "vqvae_top")
    with pytest.raises(VQVAEMismatch, match="another VQ-VAE than .*vqvae_top.*top codebook"):
        SamplingModels.from_pretrained(hub)


def test_one_checkpoint_exports_to_one_model_folder(run, tmp_path):
    folder, _ = export_hub(tmp_path / "prior", ckpt=str(run / "prior_top" / "export.pt"), license="mit")
    prior = JukeboxPrior.from_pretrained(folder)
    assert prior.vocab["artists"] == VOCAB.artists and prior.vqvae_fingerprint["top"]["l_bins"] == 32
    assert "license: mit" in (folder / "README.md").read_text()
    with pytest.raises(RefusedError, match="holds other files"):
        export_hub(run, ckpt=str(run / "prior_top" / "export.pt"))
    with pytest.raises(UserValueError, match="--license 'MIT License'"):
        export_hub(tmp_path / "x", ckpt=str(run / "prior_top" / "export.pt"), license="MIT License")


@pytest.fixture
def saved_prior(tmp_path) -> Path:
    tiny_models().priors[2].save_pretrained(tmp_path / "prior")
    return tmp_path / "prior"


def test_a_tampered_config_is_refused_in_one_line(saved_prior):
    edit_config(saved_prior, lambda c: c.__setitem__("hook", "os.system"))
    with pytest.raises(ConfigError, match=r"config.json: unknown key 'hook'") as err:
        JukeboxPrior.from_pretrained(saved_prior)
    assert "\n" not in str(err.value)
    edit_config(saved_prior, lambda c: (c.pop("hook"), c["prior"].__setitem__("widht", 8)))
    with pytest.raises(ConfigError, match=r"config.json.*prior.widht") as err:
        JukeboxPrior.from_pretrained(saved_prior)
    assert "\n" not in str(err.value)
    edit_config(saved_prior, lambda c: (c["prior"].pop("widht"), c.__setitem__("levels", 99)))
    with pytest.raises(ConfigError, match=r"levels=99 must be an integer in \[1, 8\]"):
        JukeboxPrior.from_pretrained(saved_prior)
    (saved_prior / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        JukeboxPrior.from_pretrained(saved_prior)


def test_a_conditioner_target_a_folder_names_is_refused_before_import(saved_prior, monkeypatch):
    target = "hub_evil_module_never_imported.Evil"
    spec = {"target": target}
    edit_config(saved_prior, lambda c: c["prior"].__setitem__("conditioners", {"evil": spec}))
    with pytest.raises(UnsafeFileError, match="conditioner target 'hub_evil_module_never_imported.Evil'.*refused"):
        JukeboxPrior.from_pretrained(saved_prior)
    import sys

    assert "hub_evil_module_never_imported" not in sys.modules
    monkeypatch.setattr("jukebox_pl.config.conditioner_targets._ALLOWED", set())
    allow_conditioners(target)  # allowed: it gets as far as importing it (which fails: no such module)
    with pytest.raises(Exception, match="hub_evil_module_never_imported"):
        JukeboxPrior.from_pretrained(saved_prior)


def test_a_pickle_named_model_safetensors_is_refused_unread(saved_prior, tmp_path):
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Boom()}, saved_prior / "model.safetensors")
    with pytest.raises(UnsafeFileError, match="model.safetensors is refused: it is a pickle"):
        JukeboxPrior.from_pretrained(saved_prior)
    assert not marker.exists()
    (saved_prior / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage-garbage!")
    with pytest.raises(UserValueError, match="not a safetensors file"):
        read_weights(saved_prior / "model.safetensors")


def test_a_flipped_byte_in_the_weights_is_refused_naming_the_tensor(tmp_path):
    tiny_level().save_pretrained(tmp_path / "level")
    path = tmp_path / "level" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # in the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(UserValueError, match="is damaged: 1 tensor"):
        VQVAELevelModel.from_pretrained(tmp_path / "level")


def test_a_hub_id_is_fetched_then_read_like_a_local_folder(tmp_path, monkeypatch):
    tiny_level().save_pretrained(tmp_path / "repo")
    asked = {}

    def fake_snapshot_download(repo_id, **kwargs):
        asked.update(repo_id=repo_id, **kwargs)
        return str(tmp_path / "repo")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    model = VQVAELevelModel.from_pretrained("someone/tiny-vqvae", revision="v1")
    assert model.level == 1 and asked["repo_id"] == "someone/tiny-vqvae" and asked["revision"] == "v1"
    assert "*.safetensors" in asked["allow_patterns"] and "*.pt" not in asked["allow_patterns"]


def test_an_unreachable_hub_id_or_a_missing_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingInputError, match="could not be fetched from the Hugging Face Hub"):
        hub_folder.resolve_folder("someone/absent", cache_dir=tmp_path / "cache", local_files_only=True)
    with pytest.raises(MissingInputError, match="does not exist"):
        VQVAELevelModel.from_pretrained(str(tmp_path / "nowhere" / "model"))


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            uploaded["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            uploaded["config"] = json.loads((Path(folder_path) / "config.json").read_text())
            return f"https://hub.example/{repo_id}/commit/1"

    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", FakeApi)
    url = tiny_level().push_to_hub("someone/tiny", token="hf_test")
    assert url.endswith("someone/tiny/commit/1") and uploaded["token"] == "hf_test"
    assert uploaded["files"] == ["README.md", "config.json", "model.safetensors"]
    assert uploaded["config"]["kind"] == "vqvae-level"
