"""torch's CPU thread count for the length of one library call."""
from __future__ import annotations

import torch

from neurodelay import options as O


class torch_threads:
    """Context manager: torch uses ``n`` CPU threads inside, the previous count after
    (None: leave it alone). Library calls must leave global state as they found it.
    ``n`` is validated at construction (OptionError for anything but an int >= 1)."""

    def __init__(self, n: int | None):
        self.n, self.before = O.check_threads(n), None

    def __enter__(self):
        if self.n is not None:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.before is not None:
            torch.set_num_threads(self.before)
