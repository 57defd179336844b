"""Scores with masked gradients, as a plugin (``ross attack --plugin benchmarks/masked_plugin.py``).

Each has the values of Energy (logsumexp of the logits) and a gradient that an attack cannot use:
- ``masked_energy``: a zero input gradient (straight-through: the value detached, plus 0 x logits);
- ``nograd_energy``: computed under ``torch.no_grad`` (no gradient at all; the attacks warn);
- ``staircase_energy``: Energy rounded down to steps of 0.5 (a gradient of zero almost everywhere).
A detector built on them is as robust as Energy, no more: only a gradient-free attack shows it
(``tests/test_square.py``, ``benchmarks/bench_square.py``)."""
import torch

from ross_ood import Score, register_score


class MaskedEnergy(Score):
    name = "masked_energy"
    pass_level = True

    def from_outputs(self, out, model):
        z = out.logits.float()
        return torch.logsumexp(z, 1).detach() + 0 * z.sum(1)


class NoGradEnergy(Score):
    name = "nograd_energy"

    def __call__(self, model, x):
        with torch.no_grad():
            return torch.logsumexp(model(x).float(), 1)


class StaircaseEnergy(Score):
    name = "staircase_energy"
    pass_level = True

    def from_outputs(self, out, model):
        return torch.floor(2 * torch.logsumexp(out.logits.float(), 1)) / 2


for _cls in (MaskedEnergy, NoGradEnergy, StaircaseEnergy):
    register_score(_cls.name, _cls)
