"""The command line: argparse front (``app``), typed settings, config files, runtime (device,
torch.distributed, progress bars), ``ross reproduce`` and one job module per command."""
from ross_ood.cli.app import build_parser, main, resolve_settings

__all__ = ["main", "build_parser", "resolve_settings"]
