#!/bin/bash
# ross attack on one machine with 8 GPUs: one process per GPU (nccl), same results as 1 process.
set -euo pipefail
torchrun --standalone --nproc-per-node 8 -m ross_ood.cli attack \
  --benchmark openood-cifar100 --model openood-resnet18-cifar100 --checkpoint "$CKPT" \
  --data-root "$OPENOOD_DATA" --eps 2,4,8,16 --eps-space normalized --noise-space normalized \
  --out runs/cifar100-attack --no-progress
