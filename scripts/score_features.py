#!/usr/bin/env python3
"""Scores features exported by `snnc features` with the classifier Spyker's harness uses.

../shared/peers/spyker_stdp.py scores Spyker's Kheradpisheh features with
sklearn.svm.LinearSVC(C=args.svm_C (default 2.4), random_state=0), fitted on the training
features as they are (no scaling) and scored on the test features. This script applies the
same classifier, with the same settings, to DIR/{train,test}_{features,labels}.npy, so that
the two sides differ only in their features (docs/training.md, "Accuracy protocol vs Spyker").

Run it in the Spyker venv (numpy + scikit-learn):
    /work/.venvs/spyker/bin/python scripts/score_features.py DIR [--svm-C 2.4] [--json]
Prints the test accuracy (and with --json one JSON line with the details).
"""
import argparse
import json
import os
import sys
import time
import warnings


def load(d, split):
    import numpy as np

    x = np.load(os.path.join(d, f"{split}_features.npy"))
    y = np.load(os.path.join(d, f"{split}_labels.npy"))
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        sys.exit(f"error: {d}: {split} features {x.shape} and labels {y.shape} do not match "
                 "(need [N, F] and [N])")
    # Labels are written as f32 holding whole numbers; the harness's are int64.
    return x, y.astype(np.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="the --out folder of `snnc features`")
    ap.add_argument("--svm-C", type=float, default=2.4, help="LinearSVC C (spyker_stdp.py's default)")
    ap.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = ap.parse_args()
    try:
        from sklearn.svm import LinearSVC
    except ImportError:
        sys.exit("error: scikit-learn is missing; run this in /work/.venvs/spyker "
                 "(or `pip install scikit-learn`)")
    trx, try_ = load(args.dir, "train")
    tex, tey = load(args.dir, "test")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        clf = LinearSVC(C=args.svm_C, random_state=0).fit(trx, try_)
    fit_s = time.perf_counter() - t0
    acc = float((clf.predict(tex) == tey).mean())
    train_acc = float((clf.predict(trx) == try_).mean())
    if args.json:
        print(json.dumps({
            "C": args.svm_C, "accuracy": round(acc, 4), "train_accuracy": round(train_acc, 4),
            "train": len(trx), "test": len(tex), "feature_dim": int(trx.shape[1]),
            "feature_density": round(float((trx != 0).mean()), 4),
            "fit_s": round(fit_s, 2), "convergence_warnings": len(w)}))
    else:
        print(f"LinearSVC(C={args.svm_C}): test accuracy {100 * acc:.2f}% "
              f"(train {100 * train_acc:.2f}%; {len(trx)} train / {len(tex)} test samples, "
              f"{trx.shape[1]} features, {len(w)} convergence warnings)")


if __name__ == "__main__":
    main()
