#!/usr/bin/env bash
# Trains NIR-GAN on a Cloud TPU VM (single host or pod slice).
#
#   ./launch_tpu.sh --name nirgan-v4 --zone us-central2-b --accelerator-type v4-32 \
#       --runtime-version tpu-ubuntu2204-base --workdir gs://BUCKET/runs/multiscale \
#       [--project PROJECT] [--config configs/multiscale.py] [--spot] [--detach] [--dry-run] \
#       [-- --config.optim.lr=1e-4 ...]
#
# 1. creates the TPU VM unless one of that name exists in the zone;
# 2. copies this checkout (git archive of HEAD: commit your changes first; or the working
#    tree if it is not a git checkout) to every worker, where tpu_worker_setup.sh installs it
#    with jax[tpu] and the gcs extra (torch too if an argument names a .ckpt) into
#    ~/nirgan-venv, on a Python >= 3.11 (uv installs one where the runtime's is older);
# 3. runs `python -m nirgan_jax.train` on all workers at once with NIRGAN_DISTRIBUTED=1, so that
#    jax.distributed.initialize() connects them; checkpoints and TensorBoard logs go to the
#    gs:// workdir. Rerunning the same command resumes from the latest checkpoint there.
# Arguments after `--` go to the training module. --dry-run prints every command instead.
set -euo pipefail

name="" zone="" accelerator="" runtime="" project="" workdir=""
config="configs/multiscale.py" spot=0 detach=0 dry_run=0 train_args=()

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while (($#)); do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --accelerator-type) accelerator="$2"; shift 2 ;;
    --runtime-version) runtime="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --detach) detach=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) echo "launch_tpu.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done

missing=()
for var in name zone accelerator runtime workdir; do
  [[ -n "${!var}" ]] || missing+=("$var")
done
if ((${#missing[@]})); then
  echo "launch_tpu.sh: missing ${missing[*]} (see --help)" >&2
  exit 2
fi
if [[ "$workdir" != gs://* ]]; then
  echo "launch_tpu.sh: --workdir must be a gs:// path that every worker can write" >&2
  exit 2
fi
repo="$(cd "$(dirname "$0")" && pwd)"
if [[ ! -f "$repo/$config" ]]; then
  echo "launch_tpu.sh: $config: no such config file in $repo" >&2
  exit 2
fi

gcloud_args=(--zone "$zone")
[[ -n "$project" ]] && gcloud_args+=(--project "$project")

run() {  # prints the command; runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  ((dry_run)) || "$@"
}

# 1. The TPU VM.
if ((dry_run)) || ! gcloud compute tpus tpu-vm describe "$name" "${gcloud_args[@]}" \
    >/dev/null 2>&1; then
  create=(gcloud compute tpus tpu-vm create "$name" "${gcloud_args[@]}"
          --accelerator-type "$accelerator" --version "$runtime")
  ((spot)) && create+=(--spot)
  if ((dry_run)); then
    echo "# if $name does not exist yet:"
  fi
  run "${create[@]}"
else
  echo "# reusing TPU VM $name in $zone"
fi

# 2. The code, on every worker.
archive="${TMPDIR:-/tmp}/nirgan-jax-$$.tar.gz"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
else
  run tar -C "$repo" --exclude=.venv --exclude=runs --exclude=data -czf "$archive" .
fi
run gcloud compute tpus tpu-vm scp "$archive" "$name:~/nirgan-jax.tar.gz" --worker=all \
  "${gcloud_args[@]}"
extras=gcs  # the workdir is on Cloud Storage
for arg in "${train_args[@]}"; do
  if [[ "$arg" == *.ckpt ]]; then  # an original PyTorch checkpoint: torch reads it
    extras+=,torch
    break
  fi
done
install="set -e; rm -rf ~/nirgan-jax && mkdir ~/nirgan-jax && tar -xzf ~/nirgan-jax.tar.gz -C ~/nirgan-jax
bash ~/nirgan-jax/tpu_worker_setup.sh ~/nirgan-jax $extras"
run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${gcloud_args[@]}" --command "$install"

# 3. Training on all workers at once.
train="cd ~/nirgan-jax && NIRGAN_DISTRIBUTED=1 ~/nirgan-venv/bin/python -m nirgan_jax.train"
train+=" --config $(printf '%q' "$config") --workdir $(printf '%q' "$workdir")"
for arg in "${train_args[@]}"; do
  train+=" $(printf '%q' "$arg")"
done
if ((detach)); then
  train="nohup bash -c $(printf '%q' "$train") > ~/nirgan-train.log 2>&1 &"
fi
run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${gcloud_args[@]}" --command "$train"
if ((detach)); then
  echo "# training in the background; logs: ~/nirgan-train.log on each worker, TensorBoard:"
  echo "#   tensorboard --logdir $workdir"
fi
