"""`neurodelay` command line: thin click wrappers over library calls.

One module per stage registers its commands on :data:`main` (defined in
:mod:`neurodelay.cli.common`, with the error handling every command shares).
"""
# importing a command module registers its commands on main
from neurodelay.cli import deploy_cmds, finetune_cmds, nir_cmds, research_cmds, train_cmds  # noqa: F401
from neurodelay.cli.common import main

__all__ = ["main"]
