"""CPU-seconds of one cell's study evaluations: PGD-20 on n=1000 and AutoAttack (apgd-ce +
apgd-t) on n=200 at one radius, single-threaded (the numbers in the issue-12 config headers).

    OMP_NUM_THREADS=1 PYTHONPATH=src python tools/eval_cost.py RUN_DIR EPS
"""
import sys, time
import torch, yaml
torch.set_num_threads(1)
from samplewise.evaluate import evaluate
from samplewise.models import load_model
from samplewise.data import load_dataset
run, eps = sys.argv[1], float(sys.argv[2])
model = load_model(run)
test = load_dataset(yaml.safe_load(open(f"{run}/config.yaml"))["dataset"]).test
for name, kw in (("pgd20 n=1000", dict(attack="pgd", eps=eps, alpha=eps / 4, steps=20, n=1000)),
                 ("AA apgd-ce+apgd-t n=200", dict(attack="autoattack", eps=eps, n=200, aa_version="custom",
                                                  aa_attacks=["apgd-ce", "apgd-t"]))):
    t = time.process_time(); r = evaluate(model, test, **kw)
    print(f"{run} eps={eps:.5g} {name}: robust {100 * r['robust_acc']:.2f}% clean {100 * r['clean_acc']:.2f}%  {time.process_time() - t:.1f} CPU-s", flush=True)
