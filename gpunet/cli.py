"""The ``gpunet`` command: train, evaluate, gradcheck, info.

Errors that gpunet raises on purpose (GpunetError) print as one line and exit with status 1;
bad flags exit with status 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from . import __version__
from .activations import HIDDEN_ACTIVATIONS
from .errors import GpunetError

DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKEND_NAMES
    from .data import BUNDLED
    from .losses import LOSSES
    from .model import DTYPES
    from .optim import OPTIMIZERS

    p = argparse.ArgumentParser(
        prog="gpunet", description="Train MLPs with hand-derived backward passes on NumPy or CuPy."
    )
    p.add_argument("--version", action="version", version=f"gpunet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train an MLP on a dataset")
    t.add_argument("--dataset", default="digits", choices=sorted(BUNDLED))
    t.add_argument("--backend", default=None, choices=BACKEND_NAMES,
                   help="default: $GPUNET_BACKEND, else auto")
    t.add_argument("--hidden", type=_positive_int, action="append", metavar="N",
                   help="hidden layer width; repeat for more layers (default: one layer of 128)")
    t.add_argument("--activation", default="relu", choices=HIDDEN_ACTIVATIONS)
    t.add_argument("--loss", default=None, choices=sorted(LOSSES),
                   help="default: cross_entropy for classification, mse for regression")
    t.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS))
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 0.1 for sgd, 0.001 for adam/adamw)")
    t.add_argument("--momentum", type=float, default=0.0, help="sgd momentum")
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--epochs", type=_positive_int, default=30)
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dtype", default="float32", choices=DTYPES)
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--save", metavar="PATH", help="write a checkpoint here after every epoch")
    t.add_argument("--metrics-json", metavar="PATH", help="write the final metrics as JSON")
    t.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on its dataset's test split")
    e.add_argument("--checkpoint", required=True, metavar="PATH")
    e.add_argument("--dataset", default=None, choices=sorted(BUNDLED),
                   help="default: the dataset the checkpoint was trained on")
    e.add_argument("--backend", default=None, choices=BACKEND_NAMES)
    e.add_argument("--metrics-json", metavar="PATH")

    g = sub.add_parser("gradcheck", help="finite-difference check of every activation x loss")
    g.add_argument("--backend", default="numpy", choices=BACKEND_NAMES)
    g.add_argument("--verbose", action="store_true", help="print a row for every tensor")

    sub.add_parser("info", help="backends, devices and versions")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate, "gradcheck": cmd_gradcheck,
                "info": cmd_info}[args.command](args)
    except GpunetError as e:
        print(f"gpunet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpunet: interrupted", file=sys.stderr)
        return 130


def _write_json(path, obj) -> None:
    from .checkpoint import atomic_write

    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def cmd_train(args) -> int:
    from .backends import get_backend
    from .data import load_dataset
    from .losses import get_loss
    from .model import MLP
    from .optim import get_optimizer
    from .train import OUTPUT_FOR_LOSS, fit

    backend = get_backend(args.backend)
    data = load_dataset(args.dataset, seed=args.seed, test_fraction=args.test_fraction)
    loss_name = args.loss or ("cross_entropy" if data.task == "classification" else "mse")
    n_out = data.n_outputs
    if data.task == "classification" and loss_name in ("bce", "bce_logits") and data.n_classes == 2:
        n_out = 1
    hidden = args.hidden or [128]
    model = MLP([data.n_features, *hidden, n_out], activation=args.activation,
                output=OUTPUT_FOR_LOSS[loss_name], backend=backend, seed=args.seed,
                dtype=args.dtype)
    opt_kw = {"lr": args.lr or DEFAULT_LR[args.optimizer]}
    if args.weight_decay is not None:
        opt_kw["weight_decay"] = args.weight_decay
    if args.optimizer == "sgd":
        opt_kw["momentum"] = args.momentum
    optimizer = get_optimizer(args.optimizer, model, **opt_kw)
    loss_fn = get_loss(loss_name)

    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    say(f"gpunet: {data.name} ({len(data.x_train)} train / {len(data.x_test)} test), "
        f"{model!r}, {model.n_params} parameters, {loss_name}, {args.optimizer} lr={opt_kw['lr']}")
    t0 = time.perf_counter()
    history = fit(model, data, loss_fn, optimizer, epochs=args.epochs,
                  batch_size=args.batch_size, seed=args.seed,
                  progress=False if args.quiet else None, save=args.save, log=say)
    seconds = time.perf_counter() - t0
    final = history[-1]
    result = {"backend": backend.name, "device": backend.device_name, "dataset": data.name,
              "task": data.task, "epochs": args.epochs, "seconds": seconds}
    result.update({k: v for k, v in final.items() if k.startswith("test_")})
    result["train_loss"] = final["train_loss"]
    result["history"] = history
    if data.task == "classification":
        print(f"test accuracy: {final['test_accuracy']:.4f}  ({seconds:.1f}s on {backend.name})")
    else:
        print(f"test mse: {final['test_mse']:.4f}  test r2: {final['test_r2']:.4f}  "
              f"({seconds:.1f}s on {backend.name})")
    if args.metrics_json:
        _write_json(args.metrics_json, result)
    if args.save:
        say(f"checkpoint written to {args.save}")
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoint import load_checkpoint
    from .data import BUNDLED, _read_bundled, make_dataset
    from .errors import CheckpointError
    from .losses import get_loss
    from .train import metrics, prepare_targets

    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model(args.backend)
    extra = ckpt.extra
    name = args.dataset or extra.get("dataset")
    if name not in BUNDLED:
        raise CheckpointError(f"checkpoint names no known dataset ({name!r}); pass --dataset")
    split = extra.get("split") or {"seed": 0, "test_fraction": 0.2}
    x, y, task = _read_bundled(name)
    data = make_dataset(name, x, y, task, seed=split["seed"], test_fraction=split["test_fraction"],
                        standardize=ckpt.standardizer is None)
    if ckpt.standardizer is not None:
        data.x_test = ckpt.standardizer(data.x_test)
    loss_name = {"identity": "cross_entropy", "sigmoid": "bce"}.get(model.output, "mse") \
        if task == "classification" else "mse"
    if task == "classification" and model.sizes[-1] == 1 and model.output == "identity":
        loss_name = "bce_logits"
    loss_fn = get_loss(loss_name)
    y_test = prepare_targets(data.y_test, task, loss_fn, model.sizes[-1])
    m = metrics(model, data.x_test, y_test, loss_fn, task)
    result = {"checkpoint": args.checkpoint, "dataset": name, "backend": model.backend.name,
              "epoch": ckpt.epoch, **{f"test_{k}": v for k, v in m.items()}}
    for k, v in result.items():
        print(f"{k}: {v:.6f}" if isinstance(v, float) else f"{k}: {v}")
    if args.metrics_json:
        _write_json(args.metrics_json, result)
    return 0


def cmd_gradcheck(args) -> int:
    from .backends import get_backend
    from .gradcheck import check_all

    backend = get_backend(args.backend)
    print(f"finite-difference gradient check, float64, backend {backend.name}")
    print(f"{'hidden f':<11}{'output g':<10}{'loss':<14}{'targets':<14}{'max |err|':>11}"
          f"{'worst/tol':>11}  result")
    failed = total = 0
    for (f, g, loss, kind), r in check_all(backend):
        total += 1
        failed += not r.ok
        worst = max(r.ratios.values())
        print(f"{f:<11}{g:<10}{loss:<14}{kind:<14}{r.worst:>11.2e}{worst:>11.2e}  "
              f"{'ok' if r.ok else 'FAIL'}")
        if args.verbose:
            for name in r.errors:
                print(f"    {name:<6} max |err| {r.errors[name]:.2e}  err/tol {r.ratios[name]:.2e}")
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_info(args) -> int:
    import numpy

    from .backends import cupy_status, default_backend_name

    def version(module):
        try:
            return __import__(module).__version__
        except Exception:
            return "not installed"

    usable, why = cupy_status()
    print(f"gpunet {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()})")
    print(f"numpy {numpy.__version__}")
    print(f"numba {version('numba')}")
    print(f"cupy {version('cupy')}")
    print(f"torch {version('torch')} (optional; tests use it as the autograd oracle)")
    print("backends: numpy (cpu)" + (", cupy" if usable else ""))
    if usable:
        from .backends import get_backend

        print(f"cupy: usable on {get_backend('cupy').device_name}")
    else:
        print(f"cupy: not usable: {why}")
    print(f"default backend: {default_backend_name()} "
          f"(auto picks {'cupy' if usable else 'numpy'}; set GPUNET_BACKEND to change)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
