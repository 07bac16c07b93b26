#!/usr/bin/env bash
# One-thread cost of one student epoch for every distillation method, on 2,000 Fashion-MNIST
# images, against untrained width-2 and width-3 cnn-small teachers (the cost does not depend on
# the teacher's weights). Run it in an empty folder; it prints "width method [epoch seconds]".
# Made the measurements in the header of configs/study-distill-fmnist-long.yaml.
set -euo pipefail
export OMP_NUM_THREADS=1
python -c "
from samplewise.data import load_dataset
from samplewise.models import create_model, save_model
card = load_dataset('fashion-mnist').card
for w in (2, 3):
    save_model(f'teacher-w{w}.pt', create_model('cnn-small', card, bn=True, width=w))
"
for w in 2 3; do
  for m in ard rslad iad adaad igdm saad saad-measured; do
    samplewise -q distill --dataset fashion-mnist --teacher "teacher-w$w.pt" --method "$m" \
      --epochs 1 --train-size 2000 --batch-size 32 --steps 3 --threads 1 \
      --set "model_args={bn: true}" monitor_steps=0 eval_n=100 eval_steps=1 progress=false \
      --out "w$w-$m" > /dev/null
    python -c "import json; print('w$w', '$m', json.load(open('w$w-$m/result.json'))['epoch_seconds'])"
  done
done
