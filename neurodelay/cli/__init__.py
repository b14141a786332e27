"""`neurodelay` command line: thin click wrappers over library calls.

One module per stage registers its commands on :data:`main` (defined in
:mod:`neurodelay.cli.common`, with the error handling every command shares).
"""
from neurodelay.cli.common import main
from neurodelay.cli import train_cmds, deploy_cmds, research_cmds  # noqa: F401,E402
from neurodelay.cli import nir_cmds, finetune_cmds  # noqa: F401,E402

__all__ = ["main"]
