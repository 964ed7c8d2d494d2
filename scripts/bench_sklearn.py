"""gpunet's MLPClassifier against scikit-learn's, side by side: the same data, network, optimiser
(Adam, lr 1e-3, no penalty), batch size and epochs, fitted in alternating rounds on one machine.

    python scripts/bench_sklearn.py [--rounds 3] [--backend numpy|cupy] [--json PATH]

Reports the median wall time of a whole ``fit`` (gpunet's standardisation included; scikit-learn
gets a StandardScaler in front, the same work) and each one's test accuracy. scikit-learn's
stopping rule is switched off (``tol=0``, ``n_iter_no_change`` above the epochs) so that both run
every epoch. Both get float32 features: scikit-learn's MLP then trains in float32, as gpunet
does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import gpunet as gn
from gpunet.estimators import MLPClassifier

PAUSE_S = 0.3  # rest between fits: BLAS threads keep spinning for ~0.1 s after their last call

CONFIGS = {
    # name: (loader, hidden, batch size, epochs)
    "digits": (lambda: load_digits(return_X_y=True), (128,), 32, 30),
    "synthetic-784": (lambda: make_classification(20000, 784, n_informative=64, n_redundant=0,
                                                  n_classes=10, n_clusters_per_class=1,
                                                  random_state=0), (256,), 128, 5),
}


def _data(name):
    x, y = CONFIGS[name][0]()
    return train_test_split(x.astype(np.float32), y, test_size=0.2, random_state=0, stratify=y)


def _timed(make, x_train, y_train, x_test, y_test):
    est = make()
    t0 = time.perf_counter()
    est.fit(x_train, y_train)
    seconds = time.perf_counter() - t0
    return seconds, float(est.score(x_test, y_test))


def run(config, rounds, backend):
    x_train, x_test, y_train, y_test = _data(config)
    _, hidden, batch, epochs = CONFIGS[config]
    contenders = {
        "gpunet": lambda: MLPClassifier(hidden=hidden, batch_size=batch, epochs=epochs, lr=1e-3,
                                        backend=backend, random_state=0),
        "sklearn": lambda: make_pipeline(StandardScaler(), SkMLP(
            hidden_layer_sizes=hidden, solver="adam", learning_rate_init=1e-3, alpha=0.0,
            batch_size=batch, max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
            shuffle=True, random_state=0)),
    }
    times = {k: [] for k in contenders}
    acc = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _timed(contenders["gpunet"], x_train[:256], y_train[:256], x_test, y_test)  # warm-up
        for r in range(rounds):
            order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
            for name in order:
                time.sleep(PAUSE_S)
                seconds, acc[name] = _timed(contenders[name], x_train, y_train, x_test, y_test)
                times[name].append(seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"config": config, "rows": len(x_train), "features": x_train.shape[1],
            "hidden": list(hidden), "classes": len(np.unique(y_train)), "batch_size": batch,
            "epochs": epochs, "backend": backend,
            "gpunet_s": med["gpunet"], "sklearn_s": med["sklearn"],
            "ratio": med["gpunet"] / med["sklearn"], "gpunet_accuracy": acc["gpunet"],
            "sklearn_accuracy": acc["sklearn"], "rounds": rounds}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", choices=sorted(CONFIGS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy", "auto"))
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.backend == "cupy" and not gn.cupy_status()[0]:
        print(f"gpunet: the cupy backend is unavailable: {gn.cupy_status()[1]}", file=sys.stderr)
        return 1
    rows = []
    print("| data | rows x features | net | batch x epochs | gpunet s | scikit-learn s | "
          "gpunet / scikit-learn | accuracy gpunet / scikit-learn |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for config in args.config or list(CONFIGS):
        row = run(config, args.rounds, args.backend)
        rows.append(row)
        net = "-".join(str(n) for n in [row["features"], *row["hidden"], row["classes"]])
        print(f"| {config} | {row['rows']} x {row['features']} | {net} | "
              f"{row['batch_size']} x {row['epochs']} | {row['gpunet_s']:.2f} | "
              f"{row['sklearn_s']:.2f} | {row['ratio']:.2f} | "
              f"{row['gpunet_accuracy']:.3f} / {row['sklearn_accuracy']:.3f} |", flush=True)
    print("fit time gpunet / scikit-learn: " + ", ".join(
        f"{r['config']} {r['ratio']:.2f}x (accuracy {r['gpunet_accuracy']:.3f} / "
        f"{r['sklearn_accuracy']:.3f})" for r in rows) + f"; gpunet on {args.backend}")
    if args.json:
        from gpunet.checkpoint import atomic_write

        atomic_write(args.json, lambda f: f.write(json.dumps(rows, indent=1).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
