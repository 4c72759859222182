"""Low-rank adapters on the prior: the adapted model starts as the base, trains only its adapters, and merges
back into plain weights that compute what the adapted model computes."""

from __future__ import annotations

import pytest
import torch
from sampling_models import tiny_models
from torch import nn

from jukebox_pl.prior.lora import LoRALinear, add_lora, lora_parameters, merge_lora


def test_a_fresh_adapter_is_the_identity_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    adapter = LoRALinear(base, rank=2, alpha=4)
    x = torch.randn(3, 6)
    assert torch.equal(adapter(x), base(x))  # B starts at zero
    with torch.no_grad():
        adapter.lora_b.normal_()
    torch.testing.assert_close(adapter.merged()(x), adapter(x), atol=1e-6, rtol=0)
    assert not adapter.base.weight.requires_grad and adapter.lora_a.requires_grad
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRALinear(base, 0)


@pytest.fixture
def prior():
    top = tiny_models().priors[2]  # lyrics encoder + prior, both with attention and MLP projections
    return top.train()


def codes_and_labels(prior):
    torch.manual_seed(1)
    codes = torch.randint(0, 32, (2, prior.n_ctx))
    labels = {"artist": torch.tensor([1, 2]), "genres": torch.tensor([[1, -1], [2, -1]]),
              "total_length": torch.tensor([44100, 44100]), "offset": torch.tensor([0, 4096]),
              "lyrics": torch.randint(0, 20, (2, prior.n_tokens))}  # fmt: skip
    return codes, {k: v for k, v in labels.items() if k in prior.batch_keys}


def test_adapters_start_as_the_base_train_alone_and_merge_back(prior):
    codes, labels = codes_and_labels(prior)
    prior.eval()
    with torch.no_grad():
        before = prior(codes, return_logits=True, **labels).logits
    base = {k: v.clone() for k, v in prior.state_dict().items()}
    n_adapted = add_lora(prior, rank=2)
    assert n_adapted == sum(p.numel() for p in lora_parameters(prior)) > 0
    wrapped = [m for m in prior.modules() if isinstance(m, LoRALinear)]
    assert {type(m.base) for m in wrapped} == {nn.Linear} and len(wrapped) >= 4 * len(
        prior.prior.transformer._attn_mods
    )
    with torch.no_grad():
        assert torch.equal(prior(codes, return_logits=True, **labels).logits, before)

    for p in prior.parameters():
        p.requires_grad_(False)
    trained = lora_parameters(prior)
    for p in trained:
        p.requires_grad_(True)
    optim = torch.optim.Adam(trained, lr=1e-2)
    prior.train()
    for _ in range(2):
        optim.zero_grad()
        prior(codes, **labels).loss.backward()
        optim.step()
    prior.eval()
    state = prior.state_dict()
    frozen = {k: v for k, v in state.items() if "lora_" not in k}
    assert all(torch.equal(v, base[k.replace(".base.", ".")]) for k, v in frozen.items()), "a frozen weight moved"
    with torch.no_grad():
        adapted = prior(codes, return_logits=True, **labels).logits
        assert not torch.allclose(adapted, before)
        merge_lora(prior)
        merged = prior(codes, return_logits=True, **labels).logits
    assert not any(isinstance(m, LoRALinear) for m in prior.modules())
    assert set(prior.state_dict()) == set(base), "merged weights keep the base's key names"
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=0)
