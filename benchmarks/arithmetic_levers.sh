#!/usr/bin/env bash
# The arithmetic recipe's levers, one at a time: each run is configs/arithmetic.yaml for 20 GRPO steps from the
# same finished SFT adapter (1 epoch, as the recipe was when the sweep ran; it ships 2 since), with one override;
# then one `rftune eval` scores every run's final adapter on the same held-out problems, the unchanged 20-step run
# first, so each row's paired difference is that lever's effect.
#
#   bash benchmarks/arithmetic_levers.sh [OUT]      # OUT default runs/levers; about 75 minutes on 2 CPU cores
#
# Writes OUT/sft/ (the shared warm start), OUT/<lever>/ (a training run), OUT/<lever>.seconds (wall-clock GRPO
# time; SFT included for sft2epochs) and OUT/eval.json.
# A lever whose final adapter exists is not trained again, so an interrupted sweep continues where it stopped.
set -euo pipefail
OUT=${1:-runs/levers}
RFTUNE=${RFTUNE:-.venv/bin/rftune}
CONFIG=configs/arithmetic.yaml
WARM_START=(sft.epochs=1 "sft.output_dir=$OUT/sft")  # shared by every lever but the last

LEVERS=(  # name, then its overrides (word-split)
  "steps20"                                                          # the reference: the recipe, 20 steps
  "g4 generation.num_generations=4 train.batch_size=16"              # 4 prompts per step throughout
  "g16 generation.num_generations=16 train.batch_size=64"
  "prompts8 train.batch_size=64"                                     # 8 prompts x G 8
  "lr1e-4 train.learning_rate=1e-4"
  "cosine train.lr_scheduler=cosine"
  "beta0.04 algorithm.beta=0.04"
  "dapo algorithm.loss_type=dapo"
  "dr_grpo algorithm.loss_type=dr_grpo algorithm.scale_rewards=none"
  "iter2 algorithm.num_iterations=2"
  "iter2_cliphigh algorithm.num_iterations=2 algorithm.epsilon_high=0.28"
  "dynamic algorithm.dynamic_sampling=true"
  "steps80 train.max_steps=80"
  "sft2epochs sft.epochs=2 sft.output_dir=$OUT/sft2epochs-sft"       # its own warm start: 2 SFT epochs
)

mkdir -p "$OUT"
if [[ ! -f "$OUT/sft/adapter/adapter_config.json" ]]; then  # the shared warm start, once; `train` reuses it
  start=$SECONDS
  "$RFTUNE" sft "$CONFIG" "${WARM_START[@]}" "train.output_dir=$OUT"
  echo $((SECONDS - start)) > "$OUT/sft.seconds"
fi
adapters=()
for entry in "${LEVERS[@]}"; do
  read -r lever overrides <<< "$entry"
  run="$OUT/$lever"
  if [[ ! -f "$run/final/adapter_config.json" ]]; then
    start=$SECONDS
    # shellcheck disable=SC2086  # the overrides are word-split on purpose
    "$RFTUNE" train "$CONFIG" "${WARM_START[@]}" train.max_steps=20 "train.output_dir=$run" train.save_steps=0 \
      $overrides
    echo $((SECONDS - start)) > "$OUT/$lever.seconds"
  fi
  adapters+=(--adapter "$run/final")
done
"$RFTUNE" eval "$CONFIG" "train.output_dir=$OUT" --no-base "${adapters[@]}" --output "$OUT/eval.json"
