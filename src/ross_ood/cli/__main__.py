"""``python -m ross_ood.cli``: the ``ross`` command (as torchrun launches it)."""
from ross_ood.cli.app import main

raise SystemExit(main())
