#!/bin/bash
# ross eval on a SLURM cluster: 2 nodes x 4 GPUs = 8 processes, launched by torchrun.
# Each process takes its round-robin share of every data set's blocks; rank 0 gathers the
# per-input scores and writes the results. The cache folder must be on a shared file system
# for a killed job to resume from every rank's finished blocks (results do not need it).
#SBATCH --job-name=ross-eval
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun \
  --nnodes "$SLURM_NNODES" --nproc-per-node 4 \
  --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$head_node:29500" \
  -m ross_ood.cli eval --benchmark openood-imagenet200 --model openood-resnet18-imagenet200 \
  --checkpoint "$CKPT" --data-root "$OPENOOD_DATA" --out "$SCRATCH/ross/imagenet200-eval" --no-progress
