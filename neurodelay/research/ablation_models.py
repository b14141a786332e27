"""The ablation's models (Hammouamri et al. 2023, Fig. 5) and how a run's config names its
model: what :mod:`neurodelay.research.study` trains and its report groups by.
"""
from __future__ import annotations

# name -> (train options, label); in the paper's order (Fig. 5)
MODELS: dict[str, tuple[dict, str]] = {
    "learned": (dict(delays="learned", sigma="decreasing", learn="weights+delays"),
                "Learned delays"),
    "constant-sigma": (dict(delays="learned", sigma="constant", learn="weights+delays"),
                       "Learned delays, constant sigma"),
    "fixed-random": (dict(delays="fixed-random", sigma="decreasing", learn="weights"),
                     "Fixed random delays"),
    "fixed-weights": (dict(delays="learned", sigma="decreasing", learn="delays"),
                      "Learned delays, fixed weights"),
    "no-delays": (dict(delays="none", sigma="decreasing", learn="weights"),
                  "No delays (wider layers)"),
}

# `ablate --recurrent`: the feed-forward learned-delay model against recurrent models whose
# hidden layers are narrowed to its parameter count (match_feedforward)
RECURRENT_MODELS: dict[str, tuple[dict, str]] = {
    "learned": MODELS["learned"],
    "recurrent": (dict(delays="learned", sigma="decreasing", learn="weights+delays",
                       recurrent=True, recurrent_delays="learned", match_feedforward=True),
                  "Recurrent, learned recurrent delays"),
    "recurrent-fixed-random": (dict(delays="learned", sigma="decreasing",
                                    learn="weights+delays", recurrent=True,
                                    recurrent_delays="fixed-random", match_feedforward=True),
                               "Recurrent, fixed random recurrent delays"),
    "recurrent-one-step": (dict(delays="learned", sigma="decreasing", learn="weights+delays",
                                recurrent=True, recurrent_delays="one-step",
                                match_feedforward=True),
                           "Recurrent, one-step recurrent delays (plain recurrent SNN)"),
}
ALL_MODELS: dict[str, tuple[dict, str]] = {**MODELS, **RECURRENT_MODELS}
REC_KEYS = {"learned": "recurrent", "fixed-random": "recurrent-fixed-random",
            "one-step": "recurrent-one-step"}


def model_key(cfg: dict) -> str:
    """The ablation model name of a run's config (one of MODELS, or a descriptive name),
    with ``+augment(SETTING)`` when it trained on augmented batches (``--augment``)."""
    mc = cfg.get("model", {})
    base = _feedforward_key(cfg)
    if mc.get("recurrent"):
        rec = REC_KEYS.get(mc.get("recurrent_delays", "learned"), "recurrent")
        base = rec if base == "learned" else f"{rec}+{base}"
    return with_augment(base, cfg.get("train", {}).get("augment") or "")


def with_augment(model: str, setting: str) -> str:
    """The key of ``model`` trained with the (canonical) augmentation ``setting``."""
    return f"{model}+augment({setting})" if setting else model


def split_augment(key: str) -> tuple[str, str]:
    """(model, augmentation setting or "") of a key made by :func:`with_augment`."""
    if key.endswith(")") and "+augment(" in key:
        model, _, setting = key.partition("+augment(")
        return model, setting[:-1]
    return key, ""


def folder_name(key: str) -> str:
    """A run-folder name for a model key: punctuation of augmentation settings
    (``,:=()``) becomes ``_``."""
    return "".join(c if c.isalnum() or c in ".+-" else "_" for c in key).rstrip("_")


def _feedforward_key(cfg: dict) -> str:
    mc, tc = cfg.get("model", {}), cfg.get("train", {})
    delays = mc.get("delays", "learned")
    sigma = tc.get("sigma", "decreasing")
    learn = tc.get("learn", "weights+delays")
    if delays == "none":
        return "no-delays" if learn != "delays" else "no-delays+fixed-weights"
    if delays == "fixed-random":
        return "fixed-random" if learn != "delays" else "fixed-random+fixed-weights"
    parts = ["learned"]  # learned delays
    if sigma == "constant":
        parts = ["constant-sigma"]
    if learn == "delays":
        parts = [*([] if parts == ["learned"] else parts), "fixed-weights"]
    elif learn == "weights":
        parts.append("frozen-positions")
    return "+".join(parts)


def model_label(key: str) -> str:
    model, setting = split_augment(key)
    if setting:
        return f"{model_label(model)}, augmented ({setting})"
    if key in ALL_MODELS:
        return ALL_MODELS[key][1]
    return key.replace("+", ", ")


def connectivity_label(connections) -> str:
    return "fully connected" if connections in (None, 0) else f"sparse K={int(connections)}"


def model_order(key: str) -> tuple:
    """Sort key: the MODELS in the paper's order, then any other model by name."""
    names = list(ALL_MODELS)
    model, setting = split_augment(key)
    return (names.index(model) if model in names else len(names), model, setting)
