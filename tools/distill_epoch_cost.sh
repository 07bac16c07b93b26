#!/usr/bin/env bash
# One-thread cost of one student epoch for every distillation method, on 2,000 training images,
# against untrained wider cnn-small teachers (the cost does not depend on the teacher's weights).
# Run it in an empty folder; it prints "width method [epoch seconds]".
#   bash tools/distill_epoch_cost.sh                      # Fashion-MNIST: batch 32, PGD-3
#   DATASET=cifar10-jpeg BATCH=64 STEPS=5 bash tools/distill_epoch_cost.sh   # needs the data root
#   STUDENT_WIDTH=0.25 WIDTHS="2 3" METHODS="rslad igdm saad" bash tools/distill_epoch_cost.sh
# Made the measurements in the headers of configs/study-distill-fmnist-long.yaml and
# configs/study-distill-cifar10-long.yaml.
set -euo pipefail
export OMP_NUM_THREADS=1
DATASET=${DATASET:-fashion-mnist}
BATCH=${BATCH:-32}
STEPS=${STEPS:-3}
WIDTHS=${WIDTHS:-2 3}
METHODS=${METHODS:-ard rslad iad adaad igdm saad saad-measured}
STUDENT_WIDTH=${STUDENT_WIDTH:-1}
python -c "
from samplewise.data import load_dataset
from samplewise.models import create_model, save_model
card = load_dataset('$DATASET', train_size=2000).card
for w in '$WIDTHS'.split():
    save_model(f'teacher-w{w}.pt', create_model('cnn-small', card, bn=True, width=int(w)))
"
for w in $WIDTHS; do
  for m in $METHODS; do
    samplewise -q distill --dataset "$DATASET" --teacher "teacher-w$w.pt" --method "$m" \
      --epochs 1 --train-size 2000 --batch-size "$BATCH" --steps "$STEPS" --threads 1 \
      --set "model_args={bn: true, width: $STUDENT_WIDTH}" monitor_steps=0 eval_n=100 eval_steps=1 progress=false \
      --out "w$w-$m" > /dev/null
    python -c "import json; print('w$w', '$m', json.load(open('w$w-$m/result.json'))['epoch_seconds'])"
  done
done
