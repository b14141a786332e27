"""Named settings: the paper's SHD and SSC recipes and the embedded tiny task.

Times are in milliseconds here (as the paper states them); they are converted to
steps of ``dt`` when a ModelConfig is built.
"""
from __future__ import annotations

from neurodelay.errors import OptionError

PRESETS: dict[str, dict] = {
    # Hammouamri et al. 2023, SHD: 2 x 256, Td = 250 ms, tau = 10.05 ms, dropout 0.4,
    # 150 epochs, batch 256.
    "shd": dict(hidden=[256, 256], max_delay_ms=250.0, tau_ms=10.05, dropout=0.4,
                epochs=150, batch_size=256, dt_ms=10.0, threshold=1.0),
    # SSC: 2 x 512 (0.7 M parameters as the paper reports), Td = 300 ms (31 steps: an
    # odd window keeps the centred position range symmetric), tau = 15 ms, dropout 0.25,
    # 60 epochs, batch 128.
    "ssc": dict(hidden=[512, 512], max_delay_ms=310.0, tau_ms=15.0, dropout=0.25,
                epochs=60, batch_size=128, dt_ms=10.0, threshold=1.0),
    # The embedded synthetic timing task (neurodelay.data.make_synthetic): small enough
    # to train in a few minutes on 2 CPU cores.
    "tiny": dict(hidden=[64, 64], max_delay_ms=110.0, tau_ms=10.05, dropout=0.1,
                 epochs=10, batch_size=64, dt_ms=10.0, threshold=1.0),
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise OptionError(f"--preset {name!r}: unknown preset; choose one of "
                          f"{', '.join(PRESETS)}")
    return dict(PRESETS[name])
