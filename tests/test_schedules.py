import pytest
import torch

from jukebox_pl.config.schema import OptimConfig
from jukebox_pl.training.schedules import build_optimizer, lr_multiplier


def test_warmup_then_constant():
    assert lr_multiplier(0, 10, "none", 0, 0.0) == pytest.approx(0.1)
    assert lr_multiplier(9, 10, "none", 0, 0.0) == 1.0
    assert lr_multiplier(500, 10, "none", 0, 0.0) == 1.0


@pytest.mark.parametrize(("decay", "mid"), [("linear", 0.5), ("cosine", 0.5)])
def test_decay_reaches_the_floor(decay, mid):
    assert lr_multiplier(10 + 45, 10, decay, 100, 0.0) == pytest.approx(mid)
    assert lr_multiplier(100, 10, decay, 100, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(1000, 10, decay, 100, 0.0) == pytest.approx(0.0)


def test_optimizer_factory_and_bad_decay():
    p = [torch.nn.Parameter(torch.zeros(2))]
    out = build_optimizer(p, OptimConfig(lr=1.0, warmup_steps=4, decay="linear"), max_steps=8)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and lrs[-1] < 0.5
    assert isinstance(build_optimizer(p, OptimConfig(weight_decay=0.01), 10)["optimizer"], torch.optim.AdamW)
    with pytest.raises(ValueError, match="decay"):
        build_optimizer(p, OptimConfig(decay="exp"), 10)
