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


def model_key(cfg: dict) -> str:
    """The ablation model name of a run's config (one of MODELS, or a descriptive name)."""
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
    if key in MODELS:
        return MODELS[key][1]
    return key.replace("+", ", ")


def connectivity_label(connections) -> str:
    return "fully connected" if connections in (None, 0) else f"sparse K={int(connections)}"


def model_order(key: str) -> tuple:
    """Sort key: the MODELS in the paper's order, then any other model by name."""
    names = list(MODELS)
    return (names.index(key) if key in names else len(names), key)
