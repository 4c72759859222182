"""`save_pretrained` / `from_pretrained` / `push_to_hub` for jukebox-pl's plain models, through huggingface_hub's
`ModelHubMixin`: the folder holds `model.safetensors`, `config.json` (what the constructor needs, as plain data)
and a model card. Loading reads the config as data (checked like any config, conditioner targets through the
allow-list), builds the model from it and adopts the tensors: nothing in the folder is unpickled or imported.

A model class says what it writes and how it is rebuilt (`pretrained_config`, `from_pretrained_config`); a local
folder and a Hub id take the same path once the id is fetched (`resolve_folder`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import ModelCard, ModelHubMixin

from jukebox_pl.errors import JukeboxError, UserValueError
from jukebox_pl.hub.folder import CARD_NAME, CONFIG_NAME, read_config, resolve_folder, write_config
from jukebox_pl.hub.model_card import DEFAULT_LICENSE, LIBRARY, TAGS, CardFacts, render_card
from jukebox_pl.hub.weights import WEIGHTS_NAME, load_assigned, read_weights, write_weights


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters per top-level part of a model (a tied weight counted once, in the first part holding it)."""
    counts, seen = {}, set()
    for name, child in model.named_children():
        params = [p for p in child.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            counts[name] = sum(p.numel() for p in params)
    own = [p for p in model.parameters(recurse=False) if id(p) not in seen]
    if own:
        counts["(own)"] = sum(p.numel() for p in own)
    return counts


def named_error(err: JukeboxError, where: Path) -> JukeboxError:
    """The same kind of error with the file it came from in front (unless it names it already)."""
    if str(err).startswith(str(where)):
        return err
    message = f"{where}: {err}"
    try:
        return type(err)(message)
    except TypeError:
        return UserValueError(message)


class PretrainedMixin(ModelHubMixin, library_name=LIBRARY, tags=[*TAGS]):
    """The Hub layout for a plain `nn.Module` of jukebox-pl (mix in after `nn.Module`)."""

    pretrained_kind: ClassVar[str] = ""  # the `kind` of its config.json
    build_on_meta: ClassVar[bool] = False  # build without memory, then adopt the file's tensors (big priors)

    # -- what a model class provides ----------------------------------------------------------------------
    def pretrained_config(self) -> dict[str, Any]:
        """What config.json holds besides format and kind: plain data that rebuilds this model."""
        raise NotImplementedError

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], path: Path) -> PretrainedMixin:
        """The model (random weights) that a checked config.json describes."""
        raise NotImplementedError

    def adopt_pretrained_config(self, config: dict[str, Any]) -> None:
        """Keep what config.json records beyond the constructor (a prior's vocabulary and VQ-VAE fingerprint)."""

    def card_title(self) -> str:
        return f"jukebox-pl {self.pretrained_kind}"

    # -- writing ------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> str | None:
        """Write model.safetensors, config.json and a fresh README.md (model card) into `save_directory`;
        `model_card_kwargs={"license": ..., "data": ..., "repo_id": ...}` fill the card; `push_to_hub=True`
        (with `repo_id`) uploads the folder with your Hugging Face token."""
        (Path(save_directory) / CARD_NAME).unlink(missing_ok=True)  # the mixin keeps an old card otherwise
        return super().save_pretrained(save_directory, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        write_weights(save_directory / WEIGHTS_NAME, self.state_dict())
        write_config(save_directory / CONFIG_NAME, self.pretrained_kind, self.pretrained_config())

    def card_facts(
        self, license: str = DEFAULT_LICENSE, data: dict | None = None, repo_id: str | None = None
    ) -> CardFacts:
        config = self.pretrained_config()
        name = type(self).__name__
        load = f"from {type(self).__module__} import {name}\n\nmodel = {name}.from_pretrained({repo_id or 'FOLDER'!r})"
        return CardFacts(
            title=self.card_title(), load=load, parameters=parameter_counts(self), config=config, license=license,
            tags=[self.pretrained_kind], vocab=config.get("vocab"), data=data, pairing=config.get("vqvae_fingerprint"),
        )  # fmt: skip

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        return render_card(self.card_facts(*args, **kwargs))

    # -- reading ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
    ) -> Any:
        """The model in a folder written by `save_pretrained`, or in a Hub repository (`owner/name`, fetched
        with your token when it is private), in eval mode; a bad folder is one error line naming the file."""
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path), revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
        )  # fmt: skip

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
    ) -> Any:
        folder = resolve_folder(
            model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token,
        )  # fmt: skip
        return cls.load_folder(folder)

    @classmethod
    def load_folder(cls, folder: str | Path) -> Any:
        """The model of a local folder in the Hub layout (what `from_pretrained` does once a Hub id is fetched)."""
        folder = Path(folder)
        config_path = folder / CONFIG_NAME
        config = read_config(config_path, (cls.pretrained_kind,))
        try:
            with torch.device("meta") if cls.build_on_meta else contextlib.nullcontext():
                model = cls.from_pretrained_config(config, config_path)
        except JukeboxError as err:
            raise named_error(err, config_path) from None
        weights = folder / WEIGHTS_NAME
        load_assigned(model, read_weights(weights), weights, f"the {cls.pretrained_kind} its {CONFIG_NAME} describes")
        model.adopt_pretrained_config(config)
        return model.eval()
