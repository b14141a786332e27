"""`python -m neurodelay` (also what torchrun launches)."""
from neurodelay.cli import main

main()
