"""Frozen sub-modules (a prior's EMA copy) stay in eval mode, and Lightning's "Found N module(s) in eval mode at
the start of training" warning is not raised for them in a user's project.

Lightning warns about every module in eval mode when training starts, to catch a forgotten `.train()`. A frozen
copy is in eval mode on purpose, so the warning is hidden for the one check at the start of a fit, and only when
every module in eval mode is a frozen one: any other module left in eval mode is still warned about.
"""

from __future__ import annotations

import warnings

from torch import nn

EVAL_MODE_WARNING = r"Found \d+ module\(s\) in eval mode at the start of training"


def frozen_prefixes(module: nn.Module, names: tuple[str, ...]) -> list[str]:
    """The dotted prefixes of the frozen sub-modules `names` that `module` holds now."""
    return [name for name in names if getattr(module, name, None) is not None]


def unintended_eval(module: nn.Module, names: tuple[str, ...]) -> list[str]:
    """Sub-modules in eval mode that are not (inside) one of the frozen sub-modules `names`."""
    frozen = frozen_prefixes(module, names)
    return [
        name for name, m in module.named_modules()
        if not m.training and not any(name == f or name.startswith(f + ".") for f in frozen)
    ]  # fmt: skip


def keep_frozen_in_eval(module: nn.Module, names: tuple[str, ...]) -> None:
    """Put the frozen sub-modules back in eval mode (after `module.train()`)."""
    for name in frozen_prefixes(module, names):
        getattr(module, name).eval()


def hide_eval_warning(module: nn.Module, names: tuple[str, ...]) -> None:
    """Before the fit's check (`on_fit_start`): ignore the warning when only frozen sub-modules are in eval mode.
    `show_eval_warning` removes the filter again (`on_train_start`, right after the check)."""
    show_eval_warning(module)
    if unintended_eval(module, names):
        return
    warnings.filterwarnings("ignore", message=EVAL_MODE_WARNING)
    module.__dict__["_eval_warning_filter"] = warnings.filters[0]


def show_eval_warning(module: nn.Module) -> None:
    """Remove the filter `hide_eval_warning` added, if it is still there."""
    entry = module.__dict__.pop("_eval_warning_filter", None)
    if entry is not None and entry in warnings.filters:
        warnings.filters.remove(entry)
        warnings._filters_mutated()  # the module's cache of filters (what filterwarnings itself calls)
