"""The ``gpunet`` command: train, evaluate, predict, gradcheck, info and bench.

Errors that gpunet raises on purpose (GpunetError) print as one line and exit with status 1;
bad flags exit with status 2 (argparse).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import re
import shlex
import sys
import time

from . import __version__
from .activations import HIDDEN_ACTIVATIONS
from .errors import GpunetError
from .model import NORMS
from .optim import optimizer_kwargs


def _number_type(kind, ok, what):
    """An argparse type: ``kind(text)`` where ``ok`` holds of it, else a usage error saying
    it expected ``what``."""
    def convert(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return v

    return convert


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number_type(float, lambda v: 0 < v < float("inf"), "a positive number")
_count = _number_type(int, lambda v: v >= 0, "a whole number >= 0")
_seconds = _number_type(float, lambda v: v >= 0, "seconds >= 0")
_nonnegative = _number_type(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
_fraction = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_factor = _number_type(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_seed = _number_type(int, lambda v: 0 <= v < 2**32, "a whole number in [0, 4294967295]")


def _path(text):
    """An argparse type: a path, not an empty string (which would name no file)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


#: what --plot writes, by the path's ending
PLOT_FORMATS = ("png", "pdf", "svg")


def _plot_path(text):
    text = _path(text)
    if not text.lower().endswith(tuple("." + f for f in PLOT_FORMATS)):
        raise argparse.ArgumentTypeError(f"expected a path ending in "
                                         f"{', '.join('.' + f for f in PLOT_FORMATS)}, "
                                         f"got {text!r}")
    return text


def _dataset(text):
    from .data import source_kind

    try:
        source_kind(text)
    except GpunetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _data_flags(p, defaults=True):
    """Flags that say where the data comes from (shared by train and evaluate)."""
    p.add_argument("--dataset", type=_dataset, default="digits" if defaults else None,
                   metavar="NAME|PATH",
                   help="a bundled or synthetic set, mnist/fashion_mnist (with --data-dir), or a "
                        ".csv/.npz/.npy file (default: "
                        + ("digits)" if defaults else "the checkpoint's own data; a saved "
                           "estimator's has none: give it)"))
    p.add_argument("--target", action="append", metavar="COLUMN",
                   help="CSV: the target column (numbers, or class names; text feature "
                        "columns are one-hot encoded), repeated for several (numbers: "
                        "regression targets, or 0/1 labels for multilabel); .npy: the targets "
                        "file")
    p.add_argument("--x-key", default=None, help=".npz: the features array (default x)")
    p.add_argument("--y-key", default=None, help=".npz: the targets array (default y)")
    p.add_argument("--data-dir", type=_path, metavar="DIR",
                   help="folder holding the four MNIST-format IDX files")
    p.add_argument("--drop-missing", action="store_true", default=None,
                   help="CSV: leave out rows with a missing value (empty, NA, N/A, null, ?, "
                        "NaN, #N/A, <NA>) instead of stopping at the first (with "
                        "--fill-missing: the rows whose target or weight is missing)")
    p.add_argument("--weight-column", metavar="COLUMN", default=None,
                   help="CSV: a column of sample weights (numbers >= 0), not a feature: each "
                        "row's loss counts that much")
    p.add_argument("--ignore", action="append", metavar="COLUMN", default=None,
                   help="CSV: a column that is not a feature (an identifier, free text, an "
                        "empty column), left out; repeat for more")
    p.add_argument("--fill-missing", choices=("mean",), default=None,
                   help="CSV: fill missing feature values in, a number with its column's mean "
                        "over the training rows, a category with none")


def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKEND_NAMES
    from .losses import LOSSES
    from .model import DTYPES
    from .optim import OPTIMIZERS
    from .schedules import SCHEDULES

    p = argparse.ArgumentParser(
        prog="gpunet", description="Train MLPs with hand-derived backward passes on NumPy or CuPy.",
        epilog="Environment: GPUNET_BACKEND (numpy, cupy or auto) picks the backend; "
               "GPUNET_LOG_LEVEL=error silences gpunet's notices (in worker processes too).")
    p.add_argument("--version", action="version", version=f"gpunet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train an MLP on a dataset")
    _data_flags(t)
    t.add_argument("--samples", type=_positive_int, default=1000,
                   help="synthetic sets: rows (default 1000)")
    t.add_argument("--noise", type=_nonnegative, default=0.1,
                   help="synthetic sets: noise level (default 0.1)")
    t.add_argument("--task", choices=("classification", "regression"),
                   help="default: inferred from the data and the loss")
    t.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="seeded validation rows, stratified by class where every class has "
                        "rows enough (default 0.1)")
    t.add_argument("--test-fraction", type=_fraction, default=0.2,
                   help="seeded test rows, stratified as --val-fraction's (default 0.2); "
                        "ignored where the dataset has its own test split (mnist)")
    t.add_argument("--class-weight", choices=("balanced",), default=None,
                   help="classification: weight each row's loss by n / (k * n_class) from the "
                        "training rows' class counts, so that every class counts the same")
    t.add_argument("--backend", default=None, choices=BACKEND_NAMES,
                   help="default: $GPUNET_BACKEND, else auto")
    t.add_argument("--hidden", type=_positive_int, action="append", metavar="N",
                   help="hidden layer width; repeat for more layers (default: one layer of 128)")
    t.add_argument("--activation", default="relu", choices=HIDDEN_ACTIVATIONS,
                   help="the hidden layers' activation (default relu)")
    t.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                   help="zero each hidden output with probability P while training (default 0)")
    t.add_argument("--norm", default=None, choices=NORMS,
                   help="normalise each hidden layer's pre-activation before the activation, "
                        "with a learned scale and shift: layer, over its features "
                        "(torch.nn.LayerNorm); batch, over the batch (torch.nn.BatchNorm1d; "
                        "running statistics for evaluate and predict)")
    t.add_argument("--loss", default=None, choices=sorted(LOSSES),
                   help="default: cross_entropy for classification, mse for regression; "
                        "huber: robust regression (torch.nn.HuberLoss)")
    t.add_argument("--label-smoothing", type=_number_type(float, lambda v: 0 <= v <= 1,
                                                          "a number in [0, 1]"),
                   default=None, metavar="E",
                   help="cross_entropy: targets (1 - E) one-hot + E / classes "
                        "(torch.nn.CrossEntropyLoss(label_smoothing=E))")
    t.add_argument("--huber-delta", type=_positive_float, default=None, metavar="D",
                   help="--loss huber: quadratic within D of the target, linear beyond "
                        "(default 1, in the standardised targets' units)")
    t.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS),
                   help="default adam")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 0.1 for sgd, 0.01 for sgd on a regression, "
                        "0.001 for adam/adamw)")
    t.add_argument("--momentum", type=_nonnegative, default=0.0, help="sgd momentum (default 0)")
    t.add_argument("--nesterov", action="store_true",
                   help="sgd: Nesterov momentum (needs --momentum > 0)")
    t.add_argument("--weight-decay", type=_nonnegative, default=None,
                   help="default: 0, or 0.01 for adamw (decoupled there, L2 for sgd/adam)")
    t.add_argument("--clip-grad-norm", type=_positive_float, default=None, metavar="MAX",
                   help="scale each step's gradients down to a 2-norm of at most MAX")
    t.add_argument("--schedule", default="constant", choices=SCHEDULES,
                   help="learning-rate schedule per epoch (plateau: times --gamma once more "
                        "than 5 epochs in a row bring no val_loss lower by over 0.01%%, as "
                        "torch's ReduceLROnPlateau(patience=5))")
    t.add_argument("--step-size", type=_positive_int, default=10,
                   help="step schedule: epochs (default 10)")
    t.add_argument("--warmup", type=_count, default=0, metavar="EPOCHS",
                   help="ramp the learning rate up linearly over the first EPOCHS epochs "
                        "(epoch e at e / (EPOCHS + 1) of the schedule's rate; default 0)")
    t.add_argument("--gamma", type=_factor, default=0.1,
                   help="step/plateau schedule: factor (default 0.1)")
    t.add_argument("--epochs", type=_positive_int, default=None,
                   help="default: 30 (with --resume: the run's)")
    t.add_argument("--batch-size", type=_positive_int, default=None,
                   help="default: 32 (with --resume: the run's)")
    t.add_argument("--monitor", default="val_loss",
                   choices=("val_loss", "val_accuracy", "val_r2", "val_mse"),
                   help="the validation figure early stopping and the best epoch go by "
                        "(default val_loss)")
    t.add_argument("--patience", type=_positive_int, default=None,
                   help="early stopping: epochs without a better --monitor figure, keeping "
                        "the best epoch's weights")
    t.add_argument("--min-delta", type=_nonnegative, default=None, metavar="D",
                   help="how much --monitor must improve on the best so far for an epoch to "
                        "count as better (default 0: any improvement)")
    t.add_argument("--seed", type=_seed, default=0,
                   help="one seed for weights, splits and shuffling (default 0)")
    t.add_argument("--dtype", default="float32", choices=DTYPES, help="default float32")
    t.add_argument("--save", metavar="PATH", type=_path,
                   help="write a checkpoint here after every epoch (and on Ctrl-C or SIGTERM)")
    t.add_argument("--resume", metavar="PATH", type=_path,
                   help="continue the run saved in this checkpoint up to --epochs, writing "
                        "its checkpoints to this file unless --save names another")
    t.add_argument("--metrics-json", metavar="PATH", type=_path,
                   help="write the final metrics as JSON, with the per-epoch history and "
                        "weights_epoch (the epoch whose weights the run ends with); a run that "
                        "diverges or is interrupted writes the epochs done (and --plot)")
    t.add_argument("--report", action="store_true",
                   help="also report on the test split: each class's precision, recall, F1 "
                        "and the confusion matrix, or each target's MAE, RMSE and R2")
    t.add_argument("--plot", metavar="PATH", type=_plot_path,
                   help="draw loss/metric curves (and a confusion matrix for classification): "
                        "a .png, .pdf or .svg file")
    t.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    t.add_argument("--tf32", action="store_true",
                   help="float32 GEMMs on TF32 tensor cores (cupy backend, Ampere or newer: "
                        "faster, about 3 significant digits per product)")
    t.add_argument("--no-graph", dest="graph", action="store_false",
                   help="step eagerly: no CUDA graph on the GPU, no fixed step buffers on the "
                        "CPU (the numbers are the same; this is for debugging and timing)")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of `mpiexec -n N gpunet train ...` "
                        "(needs gpunet[distributed])")
    t.add_argument("--collective-timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="--distributed: abort the job when a collective, or MPI's start, "
                        "waits this long for another rank (default: $GPUNET_COLLECTIVE_TIMEOUT, "
                        "else 600; 0: never)")

    e = sub.add_parser("evaluate", help="evaluate a checkpoint (by default on its test split)")
    e.add_argument("--checkpoint", required=True, metavar="PATH", type=_path,
                   help="a checkpoint of gpunet train or a saved estimator")
    _data_flags(e, defaults=False)
    e.add_argument("--split", default=None, choices=("test", "val", "train", "all"),
                   help="which rows: the run's own test, val or train split, or all of the "
                        "source (default: the test split of the run's own data, or of a file "
                        "of its name; all rows of another --dataset, and of any for a saved "
                        "estimator, which has no split of its own: it takes only all)")
    e.add_argument("--backend", default=None, choices=BACKEND_NAMES,
                   help="default: $GPUNET_BACKEND, else auto")
    e.add_argument("--metrics-json", metavar="PATH", type=_path,
                   help="write the metrics as JSON")
    e.add_argument("--report", action="store_true",
                   help="also each class's precision, recall, F1 and support and the confusion "
                        "matrix (scikit-learn's classification report), or each regression "
                        "target's MAE, RMSE and R2")

    r = sub.add_parser("predict", help="write a checkpoint's predictions for a file of features")
    r.add_argument("--checkpoint", required=True, metavar="PATH", type=_path,
                   help="a checkpoint of gpunet train or a saved estimator")
    r.add_argument("--input", required=True, metavar="FILE", type=_path,
                   help=".csv (header row), .npz (--x-key) or .npy")
    r.add_argument("--x-key", default=None,
                   help=".npz: the features array (default: the run's --x-key, else x)")
    r.add_argument("--output", required=True, metavar="FILE", type=_path,
                   help=".csv or .npy (/dev/stdout or a pipe: the CSV)")
    r.add_argument("--unseen-category", choices=("error", "none"), default="error",
                   help="a CSV cell of a category the model never saw: an error (default), or "
                        "none, encoded as no category (as a missing one), with a notice")
    r.add_argument("--ignore", action="append", metavar="COLUMN", default=None,
                   help="a column of the input CSV that is not a feature, left out (those "
                        "the run ignored are left out anyway); repeat for more")
    r.add_argument("--keep", action="append", metavar="COLUMN", default=None,
                   help="copy this column of the input CSV (an identifier, say) into the "
                        "output CSV, first, not as a feature; repeat for more")
    r.add_argument("--backend", default=None, choices=BACKEND_NAMES,
                   help="default: $GPUNET_BACKEND, else auto")

    g = sub.add_parser("gradcheck", help="finite-difference check of every activation x loss, "
                                         "with dropout and each norm")
    g.add_argument("--backend", default="numpy", choices=BACKEND_NAMES,
                   help="default numpy (the check runs in float64)")
    g.add_argument("--verbose", action="store_true", help="print a row for every tensor")

    i = sub.add_parser("info", help="backends, devices and versions; or what a checkpoint holds")
    i.add_argument("--checkpoint", metavar="PATH", default=None, type=_path,
                   help="describe this checkpoint (model, data, classes, training) instead")
    # listed for --help; main() hands `gpunet bench ...` to gpunet.bench, which has its own flags
    sub.add_parser("bench", help="time training steps against PyTorch (gpunet bench --help)")
    return p


def _parse(parser, argv):
    """``parser.parse_args(argv)``, with an unknown option blamed on the command's own parser
    (argparse's top-level "gpunet: error: unrecognized arguments" named no command) and the
    command's nearest options suggested for a misspelt one."""
    import difflib

    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices[args.command]
    flags = [f for a in command._actions for f in a.option_strings if f.startswith("--")]
    hints = []
    for word in extra:
        near = difflib.get_close_matches(word.split("=")[0], flags, n=2, cutoff=0.6) \
            if word.startswith("--") else []
        if near:
            hints.append(f"{word}: did you mean {' or '.join(near)}?")
    command.error(f"unrecognized arguments: {' '.join(extra)}"
                  + (f" ({'; '.join(hints)})" if hints else ""))


def _given_options(argv) -> set:
    """The options ``argv`` gives itself (dests), whatever their values: argv parsed again
    with every default suppressed, so an option given at its default value counts too."""
    parser = build_parser()
    parsers = [parser]
    while parsers:
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif action.dest != "help":
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def main(argv=None) -> int:
    from .train import TrainingInterrupted

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own flags (gpunet bench --help); the errors below
        from .bench import main as bench_main

        command, args = (lambda _: bench_main(argv[1:])), None
    else:
        args = _parse(build_parser(), argv)
        args._given = _given_options(argv)
        if getattr(args, "target", None) is not None:  # one column: its name; several: a list
            args.target = args.target[0] if len(args.target) == 1 else args.target
        command = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                   "gradcheck": cmd_gradcheck, "info": cmd_info}[args.command]
    launched = _launcher_ranks(slurm=False)
    if launched > 1 and args is not None and args.command in ("evaluate", "predict", "info"):
        print(f"gpunet: warning: started as one of {launched} MPI processes: each runs the "
              f"whole {args.command} (and writes its files); run it without mpiexec",
              file=sys.stderr)
    started = time.time()
    try:
        code = command(args)
        sys.stdout.flush()  # (here, where a reader gone away is caught, not at the exit)
        return code
    except GpunetError as e:
        print(f"gpunet: error: {_in_flags(str(e))}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"gpunet: {e}", file=sys.stderr)
        if e.checkpoint and not getattr(e.history, "stopped_early", False):  # (a run that
            # stopped early has nothing to resume)
            print(f"gpunet: resume with: gpunet train --resume {shlex.quote(str(e.checkpoint))} "
                  f"[--epochs N]", file=sys.stderr)
        return 128 + int(e.signum)  # (130 for Ctrl-C, 143 for SIGTERM: as a shell reports)
    except KeyboardInterrupt:  # (a second Ctrl-C, before the first one's checkpoint was said)
        print("gpunet: interrupted", file=sys.stderr)
        saved = getattr(args, "save", None) or getattr(args, "resume", None)
        if getattr(args, "command", None) == "train" and saved and _written_since(saved, started):
            print(f"gpunet: resume with: gpunet train --resume {shlex.quote(str(saved))} "
                  f"[--epochs N]", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (gpunet info | head -1): stop quietly, as
        try:  # a Unix tool does (Python's own advice: stdout on devnull, so the exit's flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # says nothing)
        except (OSError, ValueError):  # (a stdout without a file descriptor)
            pass
        return 141  # (128 + SIGPIPE, what a shell reports for such a tool)
    except OSError as e:  # a file that cannot be read or written: say which, no traceback
        if e.filename is None:
            raise
        print(f"gpunet: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:
        if not _out_of_memory(e):
            raise
        where = "device" if type(e).__module__.startswith("cupy") else "host"
        print(f"gpunet: error: out of {where} memory ({_first_line(e)}); "
              "try a smaller --batch-size or smaller --hidden layers", file=sys.stderr)
        return 1


def _streamed(path) -> bool:
    """Whether ``path`` is written in place (standard output, a pipe, a device), not a file."""
    from .checkpoint import _written_in_place

    return _written_in_place(path) is not None


def _written_since(path, when) -> bool:
    """Whether ``path`` is a file written at or after ``when`` (seconds since the epoch)."""
    try:
        return os.path.isfile(path) and os.stat(path).st_mtime >= when - 1
    except OSError:
        return False


def _out_of_memory(e: BaseException) -> bool:
    """CuPy's OutOfMemoryError (whatever CuPy's version calls home) or the host's MemoryError."""
    return isinstance(e, MemoryError) or (
        type(e).__name__ == "OutOfMemoryError" and type(e).__module__.startswith("cupy"))


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _in_flags(message: str) -> str:
    """A GpunetError's message as the command line says it. A setting's Python name becomes
    its flag (val_fraction: --val-fraction) where the words around it show it is the setting:
    before "must", "applies", "was" or "+", after "with", "in", "+", "run's", "but" or "and" (a
    plain word such as seed: only as the subject that must or applies); "data_dir
    (--data-dir)" becomes
    the flag alone; the advice for Python (", or DataSpec(...)", "(in Python: ...)") goes.
    Quoted text, a listing of the data's columns and what a malformed file holds stay as
    they are."""
    import re

    if "malformed" in message:  # (a file's stored settings, by the names the file holds)
        return message
    parsers, flags = [build_parser()], {}
    while parsers:
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif "--" + action.dest.replace("_", "-") in action.option_strings:
                flags[action.dest] = "--" + action.dest.replace("_", "-")
    nested = r"\((?:[^()]|\([^()]*\))*\)"
    message = re.sub(rf",? or DataSpec{nested}|\s*\(in Python: (?:[^()]|{nested})*\)", "",
                     message)
    message = re.sub(r"^(\w+)(?= (?:must|applies) )",
                     lambda m: flags.get(m[1], m[1]), message)
    names = "|".join(sorted((n for n in flags if "_" in n), key=len, reverse=True))
    parts = re.split(r"""((?<!\w)'[^'\n]*'(?!\w)|(?<!\w)"[^"\n]*"(?!\w))""", message)
    for i in range(0, len(parts), 2):  # (the odd ones are quoted)
        parts[i] = re.sub(r"\b(\w+) \((--[\w-]+)\)",
                          lambda m: m[2] if flags.get(m[1]) == m[2] else m[0], parts[i])
        parts[i] = re.sub(rf"(?:(?<=\+ )|(?<=with )|(?<=in )|(?<=run's )|(?<=but )|(?<=and ))"
                          rf"({names})\b(?![.-]\w)"
                          rf"|\b({names})(?= (?:must|applies|was|\+) )",
                          lambda m: flags[m[1] or m[2]], parts[i])
    return "".join(parts)


def _write_json(path, obj) -> None:
    """``obj`` as JSON, written atomically; a NaN or infinite number (an R^2 of a constant
    target, a diverged figure) is written as null, which JSON has, rather than NaN, which it
    has not."""
    from .checkpoint import atomic_write

    def strict(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: strict(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [strict(x) for x in v]
        return v

    text = json.dumps(strict(obj), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _data_files(spec) -> list:
    """The files a data spec reads, as ("data file", path): its dataset file and a .npy target,
    or (mnist) the files of its data folder; none for a bundled or synthetic set (a file of
    that name is not its data)."""
    from .data import source_kind

    try:
        kind = source_kind(spec.dataset)
    except GpunetError:
        return []
    files = []
    if kind in ("csv", "npz", "npy"):
        files.append(spec.dataset)
        if isinstance(spec.target, str) and spec.target.lower().endswith(".npy"):
            files.append(spec.target)
    elif kind == "idx" and isinstance(spec.data_dir, str) and os.path.isdir(spec.data_dir):
        files += [os.path.join(spec.data_dir, f) for f in os.listdir(spec.data_dir)]
    return [("data file", f) for f in files if isinstance(f, str) and os.path.isfile(f)]


def _refuse_unused_flags(args) -> None:
    """ConfigError for a flag given to a new run that it would not use, as --momentum with adam
    is: --gamma and --step-size with a schedule that has no such figure, --samples and --noise
    for a dataset that is not synthetic, --collective-timeout without --distributed."""
    from .data import SYNTHETIC
    from .errors import ConfigError

    given = getattr(args, "_given", None) or ()  # (None: args made in Python, not by main)
    if "collective_timeout" in given and not args.distributed:
        raise ConfigError("--collective-timeout is for a --distributed run")
    if args.resume:  # (the run's own settings: checked against the checkpoint's)
        return
    uses = {"gamma": ("step", "plateau"), "step_size": ("step",)}
    for key, schedules in uses.items():
        if key in given and args.schedule not in schedules:
            raise ConfigError(f"--{key.replace('_', '-')} is for --schedule "
                              f"{' or '.join(schedules)}, not {args.schedule}")
    for key in ("samples", "noise"):
        if key in given and args.dataset not in SYNTHETIC:
            raise ConfigError(f"--{key} is for the synthetic datasets ({', '.join(SYNTHETIC)}), "
                              f"not {args.dataset}")


def _check_checkpoint_file(path) -> None:
    """ConfigError for a ``--save`` path that is not a file (standard output, a pipe, a FIFO, a
    device): a checkpoint is written again after every epoch and read back by ``--resume``, so
    a run would send a stream of whole checkpoints there, and block at its first save, SIGTERM
    or not, where no reader has opened a FIFO."""
    from .errors import ConfigError

    if _streamed(path):
        raise ConfigError(f"--save {path}: is not a regular file (standard output, a pipe or a "
                          "device); a checkpoint is rewritten after every epoch and read back "
                          "by --resume: save to a file, and copy it where it should go")


def _refuse_overwriting(inputs, *outputs) -> None:
    """ConfigError where an output (flag, path) is one of the ``inputs`` (what, path) (a
    checkpoint saved over the dataset, metrics written over the checkpoint evaluated), or two
    outputs name one file (each would replace the other)."""
    from .errors import ConfigError

    named = [(flag, path) for flag, path in outputs if path]
    for flag, path in named:
        for what, source in inputs:
            if source and os.path.exists(path) and os.path.exists(source) \
                    and os.path.samefile(path, source):
                raise ConfigError(f"{flag} {path} is the {what} {source}: writing it would "
                                  f"replace the {what}; choose another path")
    seen = {}
    for flag, path in named:
        other = seen.setdefault(os.path.realpath(path), flag)
        if other != flag:
            raise ConfigError(f"{other} and {flag} name one file, {path}: each would replace "
                              "the other; choose two paths")


def _spec_from_args(args, base=None):
    """A DataSpec from the data flags; ``base`` (a checkpoint's spec) fills what is not given."""
    from dataclasses import replace

    from .data import DataSpec

    given = {k: getattr(args, k, None) for k in ("dataset", "target", "x_key", "y_key",
                                                  "data_dir", "drop_missing", "fill_missing",
                                                  "weight_column", "ignore")}
    given = {k: v for k, v in given.items() if v is not None}
    if base is None:
        return DataSpec(**given, samples=args.samples, noise=args.noise, task=args.task,
                        seed=args.seed, val_fraction=args.val_fraction,
                        test_fraction=args.test_fraction, class_weight=args.class_weight)
    if isinstance(base.target, list) and isinstance(given.get("target"), list) \
            and sorted(given["target"]) == sorted(base.target):
        given["target"] = base.target  # the run's columns, in the order of its outputs
    if given.get("ignore") and base.ignore:  # (more columns left out: the run's stay out)
        given["ignore"] = list(dict.fromkeys([*base.ignore, *given["ignore"]]))
    if given.get("dataset", base.dataset) != base.dataset:
        # another source: the stored options that do not apply to its kind go (a CSV run's
        # target column on an .npz file, say), unless given again
        from .data import source_kind

        kind = source_kind(given["dataset"])
        applies = {"target": ("csv", "npy"), "x_key": ("npz",), "y_key": ("npz",),
                   "data_dir": ("idx",), "drop_missing": ("csv",), "fill_missing": ("csv",),
                   "weight_column": ("csv",), "ignore": ("csv",)}
        base = replace(base, **{k: False if k == "drop_missing" else None
                                for k, kinds in applies.items()
                                if kind not in kinds and k not in given})
    return replace(base, **given)


def _train_distributed(args) -> int:
    """``gpunet train --distributed``: one rank of an mpiexec job. Rank 0 speaks, plots and
    writes; an unexpected exception on any rank aborts the whole job (one line, then
    MPI_Abort), while a diverged loss or Ctrl-C, which every rank sees together, ends it as in
    one process."""
    from .distributed import Communicator
    from .train import TrainingDiverged, TrainingInterrupted

    comm = Communicator(timeout=args.collective_timeout)
    if not comm.is_root:
        from . import backends

        args.quiet = True
        backends._notice_shown = True  # rank 0 says which backend runs and why
    try:
        with comm.abort_on_error(passthrough=(TrainingInterrupted, TrainingDiverged),
                                 describe=_described):
            return cmd_train(args, comm)
    except TrainingInterrupted as e:
        if comm.is_root:
            print(f"gpunet: {e}", file=sys.stderr)
            if e.checkpoint:
                print(f"gpunet: resume with: mpiexec -n {comm.size} gpunet train --resume "
                      f"{shlex.quote(str(e.checkpoint))} --distributed [--epochs N]",
                      file=sys.stderr)
        return 128 + int(e.signum)
    except TrainingDiverged:
        if comm.is_root:
            raise
        return 1


def _described(e: BaseException) -> str | None:
    """An error's line as ``main`` words it for the command line (a rank's abort says it so
    too), or None for one it does not word."""
    if isinstance(e, GpunetError):
        return _in_flags(str(e).strip().splitlines()[0]) if str(e).strip() else None
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return None


def _launcher_ranks(slurm=True) -> int:
    """How many processes an MPI launcher (MPICH/Hydra, Open MPI, Slurm) started, from the
    variables it sets; 1 when none did. ``slurm=False``: not Slurm's task count, which a
    batch script's own single commands see too."""
    names = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE") + (("SLURM_NTASKS",) if slurm
                                                                 else ())
    for var in names:
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    return 1


def cmd_train(args, comm=None) -> int:
    """``gpunet train``; ``comm``: this rank's Communicator under --distributed."""
    if getattr(args, "distributed", False) and comm is None:
        return _train_distributed(args)
    import numpy as np

    from .backends import default_backend_name, get_backend
    from .checkpoint import check_writable, load_checkpoint
    from .data import DataSpec, load_data
    from .losses import get_loss
    from .model import MLP
    from .optim import get_optimizer
    from .schedules import Schedule, schedule_options
    from .train import (OUTPUT_FOR_LOSS, TrainingDiverged, TrainingInterrupted,
                        check_resume, confusion_matrix, figure, fit)

    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    _refuse_unused_flags(args)
    # (--resume without --save writes its checkpoints over the file it resumes)
    for flag, path in (("--save" if args.save else "--resume", args.save or args.resume),
                       ("--metrics-json", args.metrics_json), ("--plot", args.plot)):
        if path and (comm is None or comm.is_root):
            check_writable(path, flag)
    if args.save and (comm is None or comm.is_root):
        _check_checkpoint_file(args.save)
    if args.plot and (comm is None or comm.is_root):  # (not only once the run is over)
        from .plot import check_matplotlib

        check_matplotlib()
    launched = _launcher_ranks()
    if comm is None and launched > 1:
        print(f"gpunet: warning: started as one of {launched} MPI processes without "
              "--distributed: each trains its own copy and they share --save; add --distributed",
              file=sys.stderr)
    if comm is not None and (args.backend or default_backend_name()) != "numpy":
        comm.use_local_device()  # before any CuPy work: ranks of a host spread over its GPUs
    epochs = args.epochs or 30
    resume = None
    if args.resume:
        resume = load_checkpoint(args.resume)
        resume.check_sections(args.resume)
        training = resume.extra.get("training")
        if "estimator" in resume.extra:  # (its run record is for evaluate and info)
            from .errors import ConfigError

            raise ConfigError(f"{args.resume} is a saved estimator's: go on training it in "
                              "Python with MLPClassifier.load / MLPRegressor.load and "
                              "partial_fit (or warm_start)")
        if training is None or resume.extra.get("data") is None:
            raise GpunetError(f"{args.resume!r} holds no training state to resume from")
        ranks = training.get("ranks", 1)
        if comm is None and launched > 1 and ranks > 1:  # (fit would say "not 1": one rank)
            from .errors import ConfigError

            raise ConfigError(f"this run was trained on {ranks} ranks and this process is one of "
                              f"{launched} started without --distributed: " + (
                                  "add --distributed" if launched == ranks else
                                  f"resume it with mpiexec -n {ranks} gpunet train --resume "
                                  f"{shlex.quote(str(args.resume))} --distributed"))
        _refuse_changes_on_resume(args, resume)
        spec = DataSpec.from_json(resume.extra["data"])
        if not _readable_source(resume.extra["data"]):
            from .errors import ConfigError

            raise ConfigError(f"this run trained on data given in Python ({spec.dataset!r}, "
                              "from make_dataset): resume it there, with fit(..., "
                              f"resume={args.resume!r}) on the same data")
        data = load_data(spec, dtype=(resume.header.get("model") or {}).get("dtype"))
        backend = get_backend(args.backend)
        model = resume.build_model(backend)
        if args.hidden and list(args.hidden) != model.sizes[1:-1]:
            from .errors import ConfigError

            raise ConfigError(f"--hidden {args.hidden} does not match the checkpoint's hidden "
                              f"layers {model.sizes[1:-1]}")
        loss_fn = _checkpoint_loss(resume, None, None)
        loss_name = loss_fn.name
        opt = resume.header.get("optimizer")
        if opt is None:
            from .errors import CheckpointError

            raise CheckpointError(f"{args.resume!r} holds no optimizer state to resume with")
        # The saved rate may be a schedule's floor of 0, which the constructor refuses: build
        # with the schedule's base rate, then put the saved one back (as fit's resume does).
        lr = opt["hyperparameters"]["lr"]
        base = (training.get("schedule") or {}).get("base_lr", 1.0)
        optimizer = get_optimizer(opt["name"], model, lr=lr if lr > 0 else base)
        resume.load_optimizer(optimizer)  # (the run's settings: fit's resume loads them too)
        epochs = args.epochs or training["epochs"]
        batch_size = args.batch_size or training["batch_size"]
        seed, patience, schedule = training["seed"], training.get("patience"), None
        monitor = training.get("monitor", "val_loss")
        min_delta = training.get("min_delta", 0.0)
        save = args.save or args.resume
        done, step = training["state"]["epoch"], training["state"]["step"]
        check_resume(training, epochs, batch_size)  # (fit asks again; before the line below)
        say(f"gpunet: resuming {args.resume} " + (
            f"in epoch {done + 1} at step {step} ({done} epochs done)" if step else
            f"after epoch {done}") + f", up to epoch {epochs}")
    else:
        spec = _spec_from_args(args)
        data = load_data(spec, loss=args.loss, dtype=args.dtype)
        backend = get_backend(args.backend)
        # multilabel targets (several 0/1 columns): one logistic output per label
        loss_name = args.loss or ("bce_logits" if data.multilabel else "cross_entropy"
                                  if data.task == "classification" else "mse")
        n_out = data.n_outputs
        if data.task == "classification" and loss_name in ("bce", "bce_logits") \
                and data.n_classes == 2 and not data.multilabel:
            n_out = 1
        model = MLP([data.n_features, *(args.hidden or [128]), n_out],
                    activation=args.activation, output=OUTPUT_FOR_LOSS[loss_name],
                    backend=backend, seed=args.seed, dtype=args.dtype, dropout=args.dropout,
                    norm=args.norm)
        opt_kw = optimizer_kwargs(args.optimizer, args.lr, args.weight_decay, args.momentum,
                                  args.clip_grad_norm, args.nesterov, task=data.task)
        optimizer = get_optimizer(args.optimizer, model, **opt_kw)
        options = {}
        for flag, value, loss, key in (("--huber-delta", args.huber_delta, "huber", "delta"),
                                       ("--label-smoothing", args.label_smoothing,
                                        "cross_entropy", "label_smoothing")):
            if value is not None and loss_name != loss:
                from .errors import ConfigError

                raise ConfigError(f"{flag} is for --loss {loss}, not {loss_name}")
            if value is not None:
                options[key] = value
        loss_fn = get_loss(loss_name, **options)
        batch_size, seed = args.batch_size or 32, args.seed
        patience, save, monitor = args.patience, args.save, args.monitor
        min_delta = args.min_delta or 0.0
        schedule = Schedule(args.schedule, base_lr=opt_kw["lr"], epochs=epochs,
                            warmup=args.warmup, **schedule_options(args.schedule,
                                                                    args.step_size, args.gamma))

    _refuse_overwriting([("checkpoint", args.resume)], ("--metrics-json", args.metrics_json),
                        ("--plot", args.plot))  # (--save may be it: the run goes on there)
    _refuse_overwriting(_data_files(data.spec), ("--save", save),
                        ("--metrics-json", args.metrics_json), ("--plot", args.plot))
    objective = loss_name + (" on standardised targets" if data.target_standardizer else "")
    say(f"gpunet: {data.name} ({len(data.x_train)} train / {len(data.x_val)} validation / "
        f"{len(data.x_test)} test), {model!r}, {model.n_params} parameters, {objective}, "
        f"{optimizer.name} lr={optimizer.lr:g}")
    if data.rows_dropped:
        say(f"gpunet: left out {data.rows_dropped} rows with a missing "
            + ("target or weight" if data.spec.fill_missing else "value") + " (--drop-missing)")
    if not (args.resume or args.task or args.loss) and data.classes is None \
            and not data.multilabel and _file_source(data.spec):  # (a named set has its own)
        detail = ""
        if data.task == "classification":
            seen = np.unique(np.concatenate([data.y_train, data.y_val, data.y_test]))
            n, low = data.n_classes, int(seen[0]) if len(seen) else 0
            gaps = [k for k in range(n) if k not in set(seen.tolist())]
            unused = "" if not gaps else (
                f", output{'s' if len(gaps) > 1 else ''} "
                + (f"0..{low - 1}" if gaps == list(range(low)) and low > 1 else
                   ", ".join(map(str, gaps[:8])) + (", ..." if len(gaps) > 8 else ""))
                + " unused")
            detail = (f" (whole numbers {low}..{n - 1}: {n} classes{unused}"
                      + (": label k is output k" if gaps else "")
                      + "; --task regression fits them as values)")
        elif len(data.y_train) and np.size(data.y_train) == len(data.y_train):  # one target
            whole = np.concatenate([data.y_train, data.y_val, data.y_test]).reshape(-1, 1)
            if data.target_standardizer is not None:
                whole = data.target_standardizer.inverse(whole)
            if np.all(np.abs(whole - np.round(whole)) < 1e-6) and np.min(whole) >= 0 \
                    and np.max(whole) > 99:  # (the rule's bound: 0..99 are classes)
                detail = " (whole numbers past 99: values; --task classification takes them " \
                         "as classes)"
        say(f"gpunet: task {data.task}, read off the targets{detail}")
    if not (args.resume or args.task or args.loss) and data.classes is not None \
            and not data.multilabel and (comm is None or comm.is_root):
        _warn_numbers_as_class_names(data)
    if any(e["name"] == "" for e in data.features or ()) and (comm is None or comm.is_root):
        print("gpunet: warning: a feature column has no name (a row index, as pandas' to_csv "
              "writes one?): --ignore '' leaves it out", file=sys.stderr)
    # which columns became categories: numbers written as text (dates, "1,234", "12%") show
    text = [f"{e['name']} ({len(e['categories'])})" for e in data.features or ()
            if "categories" in e]
    if text and not args.resume:
        say("gpunet: text columns one-hot encoded (categories): " + ", ".join(text))
        if comm is None or comm.is_root:
            _warn_numbers_as_categories(data.features)
    if data.values_filled:
        say(f"gpunet: filled in {data.values_filled} missing values with the training rows' "
            "means (--fill-missing)")
    if data.class_weights is not None:
        names = data.classes if data.classes is not None else range(len(data.class_weights))
        say("gpunet: class weights (" + data.spec.class_weight + "): " + ", ".join(
            f"{c} {w:.3g}" for c, w in zip(names, data.class_weights)))
    if args.tf32 and not backend.set_tf32(True) and (comm is None or comm.is_root):
        print(f"gpunet: --tf32 has no effect on the {backend.name} backend", file=sys.stderr)
    alone = [f"--{k.replace('_', '-')}" for k in ("monitor", "min_delta")
             if k in (getattr(args, "_given", None) or ())]
    if alone and not args.resume and patience is None and (comm is None or comm.is_root):
        print(f"gpunet: {' and '.join(alone)} without --patience only "
              f"{'picks' if len(alone) == 1 else 'pick'} the best_epoch that --metrics-json "
              "names: the run keeps its last epoch's weights; add --patience N to stop early "
              "and keep the best epoch's", file=sys.stderr)
    if comm is not None:
        comm.prepare(backend)
        say(f"gpunet: data-parallel over {comm.describe()}; global batch {batch_size}")
    t0 = time.perf_counter()
    try:
        history = fit(model, data, loss_fn, optimizer, epochs=epochs, batch_size=batch_size,
                      seed=seed, patience=patience, schedule=schedule,
                      progress=False if args.quiet else None, save=save, log=say,
                      resume=resume, data_spec=data.spec.to_json(), comm=comm,
                      graph=args.graph, monitor=monitor, min_delta=min_delta)
    except (TrainingDiverged, TrainingInterrupted) as stop:
        # the epochs done, to the metrics and the plot asked for: a diverging curve is what
        # tells why (the error or the interrupt is said after them)
        if (comm is None or comm.is_root) and stop.history is not None:
            stopped = "diverged" if isinstance(stop, TrainingDiverged) else "interrupted"
            _write_run_so_far(args, stop.history, stopped, str(stop), time.perf_counter() - t0,
                              data, backend, say)
        raise
    seconds = time.perf_counter() - t0
    if comm is not None and not comm.is_root:
        return 0  # rank 0 prints the result, writes the metrics and the plot
    result = {"backend": backend.name, "device": backend.device_name, "dataset": data.name,
              "task": data.task, "epochs": len(history), "seconds": seconds,
              "best_epoch": history.best_epoch or None,  # (None: no validation rows)
              "stopped_early": history.stopped_early}
    weights_epoch = None
    if history:  # the figures of the epoch whose weights the run ends with (and tests)
        kept = patience is not None and history.best_epoch
        row = next((r for r in history if r["epoch"] == history.best_epoch), None) if kept \
            else None
        row = row or history[-1]
        weights_epoch = result["weights_epoch"] = row["epoch"]
        result.update({k: v for k, v in row.items() if k.startswith(("train_", "val_"))})
    result.update(history.test)
    if data.classes is not None:
        result["classes"] = data.classes.tolist()
    report = None
    if args.report and len(data.x_test):  # the test split's per-class or per-target figures
        from .report import evaluation_report

        classify = data.task == "classification"
        report = evaluation_report(
            model, data.x_test, data.y_test, data.task,
            names=_report_names(data.classes, data.multilabel, data.spec, data.task,
                                model.sizes[-1]),
            n_classes=data.n_classes if classify else None,
            target=None if classify else data.target_standardizer)
        result["report"] = {k: v for k, v in report.items() if k != "text"}
    result["history"] = list(history)
    # the files asked for first: they do not hang on a reader of standard output (train | head);
    # into standard output or a pipe itself, after the result (below)
    streamed = bool(args.metrics_json) and _streamed(args.metrics_json)
    if args.metrics_json and not streamed:
        _write_json(args.metrics_json, result)
    if args.plot and history:
        from .plot import plot_history

        confusion = None
        if data.task == "classification" and len(data.x_test) and not data.multilabel:
            confusion = confusion_matrix(model, data.x_test, data.y_test, data.n_outputs
                                         if model.sizes[-1] > 1 else 2)
        plot_history(history, args.plot, confusion=confusion, class_names=data.classes,
                     weights_epoch=result.get("weights_epoch"),
                     title=f"gpunet: {data.name}, {model.sizes}, {model.activation}, "
                           f"{optimizer.name} ({backend.name})")
    if not history.test:
        print("no test rows (--test-fraction 0" + ("; --report needs them" if args.report
                                                     else "")
              + f")  ({seconds:.1f}s on {backend.name})")
    elif data.task == "classification":
        print(f"test accuracy: {figure(history.test.get('test_accuracy', float('nan')))}  "
              f"({seconds:.1f}s on {backend.name})")
    else:
        print(f"test mse: {figure(history.test.get('test_mse', float('nan')))}  "
              f"test r2: {figure(history.test.get('test_r2', float('nan')))}  "
              f"({seconds:.1f}s on {backend.name})")
    if report is not None:
        print("\n" + report["text"], end="")
    if streamed:
        _write_json(args.metrics_json, result)
    if args.metrics_json:
        say(f"metrics written to {args.metrics_json}")
    if args.plot and history:
        say(f"plot written to {args.plot}")
    if save:
        say(f"checkpoint written to {save}" + (
            f" (the weights of epoch {weights_epoch})" if weights_epoch is not None
            and weights_epoch != len(history) else ""))
    return 0


def _number_as_text(text) -> bool:
    """Whether ``text`` is a number once currency signs, per cent, thousands separators (or a
    decimal comma) and underscores are taken off: "$315,446", "12%", "0,126"."""
    try:
        float(text.strip().strip("$€£¥%").replace(",", "").replace("_", "").strip())
        return True
    except ValueError:
        return False


def _date_as_text(text) -> bool:
    """Whether ``text`` is an ISO date or time ("2024-01-05", "2024-01-05 10:00:00+00:00")."""
    import datetime

    try:
        datetime.datetime.fromisoformat(text.strip())
        return True
    except ValueError:
        return False


#: a number as a spreadsheet or pandas writes it as text: thousands separators ("5,038.14"), a
#: currency sign ("$4563.56"), per cent ("12.3%"), a decimal comma ("5038,14")
_NUMBER_TEXT = re.compile(r"[-+]?[$€£¥]?\s?(\d{1,3}(,\d{3})+(\.\d+)?|\d+(\.\d+)?|\d+,\d+)"
                          r"\s?%?")


def _written_number(text) -> bool:
    """Whether ``text`` is a number written as text (``_NUMBER_TEXT``), not a code such as "1_1"
    or a set of answers "1,2,3"."""
    return _NUMBER_TEXT.fullmatch(text.strip()) is not None


def _warn_numbers_as_categories(features) -> None:
    """A warning, which --quiet keeps, for each text feature column whose categories are
    numbers or dates written as text (nine in ten of them, more than 2): one-hot encoded,
    every value is a category of its own and the numbers' order and distances are lost."""
    for e in features or ():
        names = [str(c) for c in e.get("categories") or ()]
        if len(names) <= 2:
            continue
        if any(name.count(",") > 1 and "." not in name and not _written_number(name)
               for name in names):  # (sets of answers, "1,2,3": codes, not numbers)
            continue
        for test, what, how in (
                (_written_number, "numbers written as text (a thousands separator, a decimal "
                                  "comma, a currency or per cent sign)",
                 "write them as plain numbers (pandas: to_numeric, or to_csv's defaults)"),
                (_date_as_text, "dates written as text", "write them as numbers (days since a "
                                                         "date, say)")):
            if sum(map(test, names)) >= 0.9 * len(names):
                print(f"gpunet: warning: feature column {e['name']!r} holds {what}, such as "
                      f"{names[len(names) // 2]!r}: one-hot encoded as {len(names)} "
                      f"categories, their order and distances lost; {how}, or --ignore it",
                      file=sys.stderr)
                break


def _warn_numbers_as_class_names(data) -> None:
    """A warning where text targets look like numbers written as text ("$315,446", "1,234",
    "12%"): more than 10 class names, nine in ten of them numbers once currency signs, thousands
    separators and per cent are taken off, or more classes than half the rows. Such a column
    would train as one class per value (and most of them with no training rows)."""
    names = [str(c) for c in data.classes]
    rows = len(data.y_train) + len(data.y_val) + len(data.y_test)
    numeric = sum(map(_number_as_text, names))
    if not (len(names) > 10 and numeric >= 0.9 * len(names)) and len(names) <= rows / 2:
        return
    print(f"gpunet: warning: the target column is text with {len(names)} distinct values in "
          f"{rows} rows (such as {names[len(names) // 2]!r}), trained as {len(names)} classes"
          + ("; numbers written as text? Write them as plain numbers and pass --task "
             "regression" if numeric >= 0.9 * len(names) else "; pass --task classification "
             "to keep them as classes without this warning"), file=sys.stderr)


def _write_run_so_far(args, history, stopped, why, seconds, data, backend, say) -> None:
    """--metrics-json and --plot of a run that ``stopped`` ("diverged", "interrupted") with
    the epochs of ``history`` done (no test figures: those come at the end of a run). The
    JSON is written with no epoch done too (a stale file from an earlier run must not pass for
    this one's); a plot of none is not drawn, and the message says so."""
    if args.metrics_json:
        _write_json(args.metrics_json, {
            "backend": backend.name, "device": backend.device_name, "dataset": data.name,
            "task": data.task, "epochs": len(history), "seconds": seconds, "stopped": stopped,
            "error": why, "history": list(history)})
        say(f"metrics of the {len(history)} epoch(s) done written to {args.metrics_json}")
    if args.plot and not history:
        print(f"gpunet: no epoch finished: no plot written to {args.plot}", file=sys.stderr)
    elif args.plot:
        from .plot import plot_history

        plot_history(history, args.plot, title=f"gpunet: {data.name} ({stopped} after "
                                                f"{len(history)} epoch(s))")
        say(f"plot of the {len(history)} epoch(s) done written to {args.plot}")


#: ``train`` options that --resume may be given: where and how to go on, not what the run is
#: (--hidden and --batch-size are checked against the checkpoint)
_RESUME_OPTIONS = {"command", "resume", "epochs", "save", "metrics_json", "plot", "report", "quiet",
                   "tf32", "graph", "distributed", "collective_timeout", "backend", "hidden",
                   "batch_size"}


def _file_source(spec) -> bool:
    """Whether a DataSpec names a data file (whose task is read off its targets)."""
    from .data import source_kind

    return source_kind(spec.dataset) in ("csv", "npz", "npy")


def _readable_source(spec) -> bool:
    """Whether a stored data spec names data a command can read (a bundled or synthetic set,
    or a file), not arrays that were given in Python (``make_dataset``'s name)."""
    from .data import source_kind

    try:
        source_kind(str((spec or {}).get("dataset")))
    except GpunetError:
        return False
    return True


def _same_path(a, b) -> bool:
    """Whether two dataset names are one: equal, or paths to one file (./data.csv is
    data.csv)."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    return os.path.abspath(a) == os.path.abspath(b) or (
        os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


def _refuse_changes_on_resume(args, resume) -> None:
    """ConfigError for options given with --resume that the checkpoint fixes (the data, the
    model, the optimiser, the schedule, early stopping, the seed) at another value than the
    saved one, which would otherwise be dropped without a word, and for --epochs short of the
    epochs already trained."""
    from .errors import ConfigError

    training = resume.extra.get("training") or {}
    model, opt = resume.header.get("model") or {}, resume.header.get("optimizer") or {}
    hyper, schedule = opt.get("hyperparameters") or {}, training.get("schedule") or {}
    saved = {**(resume.extra.get("data") or {}),
             # the optimiser's and the schedule's: a flag repeating one of them is no change
             "lr": schedule.get("base_lr", hyper.get("lr")),
             **{k: hyper.get(k) for k in ("momentum", "weight_decay", "nesterov")},
             # (an optimiser without momentum has momentum 0, as the flags' defaults say)
             **({} if "momentum" in hyper else {"momentum": 0.0, "nesterov": False}),
             "clip_grad_norm": hyper.get("clip_norm"), "schedule": schedule.get("name"),
             "step_size": schedule.get("step_size"),  # (--gamma is plateau's factor there)
             "gamma": schedule.get("factor" if schedule.get("name") == "plateau" else "gamma"),
             **{k: model.get(k) for k in ("activation", "dropout", "norm", "dtype")},
             "optimizer": opt.get("name"), "seed": training.get("seed"),
             "warmup": (training.get("schedule") or {}).get("warmup", 0),
             "loss": (training.get("loss") or {}).get("name"),
             "huber_delta": (training.get("loss") or {}).get("delta"),
             "label_smoothing": (training.get("loss") or {}).get("label_smoothing"),
             "patience": training.get("patience"), "monitor": training.get("monitor"),
             "min_delta": training.get("min_delta", 0.0)}
    defaults = vars(build_parser().parse_args(["train"]))
    given = getattr(args, "_given", None)  # (None: args made in Python, not by main)

    def same(k, v):  # (a path may be spelt another way; the target columns in any order)
        if k in ("dataset", "data_dir"):
            return _same_path(v, saved[k])
        if k in ("target", "ignore") and isinstance(v, list) and isinstance(saved[k], list):
            return sorted(v) == sorted(saved[k])
        return v == saved[k]

    changed = sorted("--" + k.replace("_", "-") for k, v in vars(args).items()
                     if k in defaults and k not in _RESUME_OPTIONS
                     and (k in given if given is not None else v != defaults[k])
                     and (k not in saved or not same(k, v)))
    if changed:
        raise ConfigError(f"--resume goes on with the saved run's own settings; "
                          f"{', '.join(changed)} cannot change them (start a new run for that)")
    done = (training.get("state") or {}).get("epoch", 0)
    if args.epochs is not None and isinstance(done, int) and args.epochs < done:
        raise ConfigError(f"that run has trained {done} epochs already; --epochs "
                          f"{args.epochs} would end before it (give more, or leave it out)")


def _checkpoint_loss(ckpt, model, task):
    """The loss the checkpoint's run used (older/plain checkpoints: the natural one)."""
    from .losses import get_loss

    loss = (ckpt.extra.get("training") or {}).get("loss")
    if loss:  # its name and its constructor's arguments (a huber loss's delta)
        return get_loss(loss["name"], **{k: v for k, v in loss.items() if k != "name"})
    if task != "classification":
        return get_loss("mse")
    if model.sizes[-1] == 1 or ckpt.extra.get("multilabel"):  # (a multilabel estimator's)
        return get_loss("bce" if model.output == "sigmoid" else "bce_logits")
    return get_loss("cross_entropy")


def _stopped_within_an_epoch(ckpt, path):
    """(epoch, step) where the checkpoint's run stopped within an epoch (Ctrl-C, SIGTERM) and
    the weights taken are that step's, not an early-stopping best epoch's, with a notice
    saying so in ``gpunet info``'s words; else None."""
    from .log import notice
    from .train import run_position

    training = ckpt.extra.get("training") or {}
    state = training.get("state") or {}
    if not state.get("step") or ckpt.group("best"):
        return None
    notice(f"{path}: these weights are the run's as it stopped within an epoch "
           f"({run_position(state, training.get('epochs'))}), not those of an epoch's end")
    return state["epoch"] + 1, state["step"]


def _stored_numbers(ckpt, key, what, ok, expected):
    """The list of numbers a checkpoint holds under ``key`` (None where it holds none);
    CheckpointError, naming ``what``, unless each one is a number that ``ok`` accepts."""
    from .errors import CheckpointError

    values = ckpt.extra.get(key)
    if values is not None and not (isinstance(values, list) and values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and ok(v) for v in values)):
        raise CheckpointError(f"the checkpoint's {what} are malformed (expected a list of "
                              f"{expected})")
    return values


def _fill_values(ckpt):
    """The checkpoint's fill values for missing features (a run with --fill-missing), or
    None."""
    import math

    return _stored_numbers(ckpt, "fill_values", "fill values", math.isfinite, "finite numbers")


def _class_weighted(ckpt, labels):
    """The rows' weights for a run trained with class weights (their loss is weighted as in
    training), else None."""
    import numpy as np

    per_class = _stored_numbers(ckpt, "class_weights", "class weights", lambda v: v >= 0,
                                "numbers >= 0")
    if per_class is None:
        return None
    per_class = np.asarray(per_class, dtype=np.float64)
    if np.ndim(labels) == 2:
        from .errors import CheckpointError

        raise CheckpointError("the checkpoint holds class weights, but the targets are "
                              "multilabel (a row has no one class to weigh it by)")
    labels = np.asarray(labels).reshape(-1)
    known = labels < len(per_class)
    return np.where(known, per_class[np.where(known, labels, 0)], 1.0)


def cmd_evaluate(args) -> int:
    from .checkpoint import check_writable, load_checkpoint
    from .data import DataSpec, check_header_row, load_split
    from .errors import CheckpointError
    from .train import figure, metrics, prepare_targets

    if args.metrics_json:
        check_writable(args.metrics_json, "--metrics-json")
    ckpt = load_checkpoint(args.checkpoint)
    ckpt.check_sections(args.checkpoint)
    model = ckpt.build_model(args.backend, weights="best")
    base = ckpt.extra.get("data")
    if base is None and args.dataset is None:
        raise CheckpointError(f"{args.checkpoint!r} names no dataset; pass --dataset")
    if args.dataset is None and not _readable_source(base):
        from .errors import ConfigError

        raise ConfigError(f"this run trained on data given in Python ({base.get('dataset')!r}, "
                          "from make_dataset), which no command can read: pass --dataset FILE "
                          "(a .csv, .npz or .npy of rows to score), or evaluate it in Python")
    task = ckpt.extra.get("task")  # (a saved estimator's: no data spec, but its task, and
    estimator = ckpt.extra.get("estimator")  # the names of a pandas target it was fitted on)
    if base is None and args.split not in (None, "all"):
        from .errors import ConfigError

        raise ConfigError(f"{args.checkpoint!r} is " + (
            "a saved estimator, fitted on the arrays given to fit" if estimator else
            "a checkpoint without its run's data") + f": it has no {args.split} split of its "
            f"own, and --split {args.split} would split {args.dataset} anew, scoring rows it "
            "may have been fitted on; give it a file of held-out rows, all of which evaluate "
            "scores (--split all, the default)")
    names = estimator.get("target_names") if isinstance(estimator, dict) else None
    both = sorted({str(n) for n in names or ()} & {e["name"] for e in ckpt.features or ()})
    if both and not args.target and str(args.dataset).lower().endswith(".csv"):
        from .errors import ConfigError  # (a forecast of x from x: the Series kept x's name)

        raise ConfigError(f"the model's target {both[0]!r} is also one of its features (a "
                          f"target made from a feature, such as df[{both[0]!r}].shift(-1), "
                          "keeps its name): the file needs the target as a column of a name "
                          "of its own (a copy, for a target equal to a feature), named with "
                          "--target")
    spec = _spec_from_args(args, DataSpec.from_json(base) if base else DataSpec(
        args.dataset, task=task if task in ("classification", "regression") else None,
        # in a CSV, its target columns by those names, in the order of its outputs
        target=(names[0] if len(names) == 1 else list(names))
        if names and str(args.dataset).lower().endswith(".csv") else None))
    if args.split is None:  # the run's own held-out rows, or all of a file it never split
        saved = base.get("dataset") if base is not None else None
        own = base is not None and (  # (a file of its name from another directory: its)
            args.dataset is None or _same_path(args.dataset, saved)
            or os.path.basename(str(args.dataset)) == os.path.basename(str(saved)))
        args.split = "test" if own else "all"
    # (a multilabel estimator's classes are its labels' columns 0..k-1, not names to map)
    classes = None if ckpt.extra.get("multilabel") else ckpt.classes
    _refuse_overwriting(_data_files(spec) + [("checkpoint", args.checkpoint)],
                        ("--metrics-json", args.metrics_json))
    if not ckpt.features and str(spec.dataset).lower().endswith(".csv"):
        check_header_row(spec.dataset)  # (its columns by position: a row of numbers is no header)
    run_rows = (ckpt.extra.get("training") or {}).get("rows")  # (the run's split sizes: its
    # own splits only come from its own rows, which a relative path may no longer name)
    x, y, task, n_classes, w_rows = load_split(
        spec, args.split, ckpt.standardizer, ckpt.target_standardizer, classes,
        ckpt.features, _fill_values(ckpt), with_weights=True,
        numbered=max(model.sizes[-1], 2) if ckpt.classes is None
        and ckpt.extra.get("task") == "classification" else 0,  # (one logit: classes 0, 1)
        run_rows=run_rows if isinstance(run_rows, list) and len(run_rows) == 3 else None,
        run_checksums=(ckpt.extra.get("training") or {}).get("checksums"))
    if not len(x):
        from .errors import ConfigError

        raise ConfigError(f"the {args.split} split of {spec.dataset} has no rows (the run's "
                          f"{args.split}_fraction was 0): choose another --split ("
                          + ", ".join(s for s in ("test", "val", "train", "all")
                                      if s != args.split) + ")")
    loss_fn = _checkpoint_loss(ckpt, model, task)
    weight = _class_weighted(ckpt, y) if task == "classification" else None
    if w_rows is not None:  # the weight column, times the class weights
        weight = w_rows if weight is None else weight * w_rows
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):  # (outputs that overflow: said below)
        m = metrics(model, x, prepare_targets(y, task, loss_fn, model.sizes[-1]), loss_fn,
                    task, target=ckpt.target_standardizer if task == "regression" else None,
                    weight=weight)
        if len(x) and not math.isfinite(float(m["loss"])):  # (finite inputs: they overflow)
            _check_finite_outputs(model, model.predict(x, batch_size=4096), x,
                                  args.checkpoint, spec.dataset)
    result = {"checkpoint": args.checkpoint, "dataset": spec.dataset, "split": args.split,
              "rows": int(len(x)), "backend": model.backend.name, "epoch": ckpt.epoch}
    within = _stopped_within_an_epoch(ckpt, args.checkpoint)
    if within:  # (epoch N done: the weights are epoch N + 1's, some steps in)
        result["epoch"], result["stopped_at_step"] = within
    if ckpt.group("best"):  # early stopping kept an earlier epoch's weights: those are these
        state = (ckpt.extra.get("training") or {}).get("state") or {}
        if isinstance(state.get("best_epoch"), int) and state["best_epoch"] > 0:
            result["weights_epoch"] = state["best_epoch"]
    result.update({f"{args.split}_{k}": v for k, v in m.items()})
    lines = [f"{k}: {figure(v, 6)}" if isinstance(v, float) else f"{k}: {v}"
             for k, v in result.items()]
    if args.report:
        from .report import evaluation_report

        names = _report_names(ckpt.classes, bool(ckpt.extra.get("multilabel")), spec, task,
                              model.sizes[-1], names)
        classes = None  # (the model's: a file of some of them names the others alike)
        if task == "classification" and not ckpt.extra.get("multilabel"):
            classes = len(ckpt.classes) if ckpt.classes is not None else \
                max(model.sizes[-1], 2)
        report = evaluation_report(model, x, y, task, names=names, n_classes=classes,
                                   target=ckpt.target_standardizer
                                   if task == "regression" else None)
        lines.append("\n" + report.pop("text").rstrip("\n"))
        result["report"] = report
    # a file first: it does not hang on a reader of standard output (evaluate | head); into
    # standard output or a pipe itself, after the figures, as they were asked in that order
    streamed = bool(args.metrics_json) and _streamed(args.metrics_json)
    if args.metrics_json and not streamed:
        _write_json(args.metrics_json, result)
    print("\n".join(lines))
    if streamed:
        _write_json(args.metrics_json, result)
    return 0


def _report_names(classes, multilabel, spec, task, outputs, estimator_targets=None):
    """What ``--report`` calls the classes, labels or targets: a single-label classifier's
    class names, else a CSV run's target columns or a saved estimator's target names, where
    there is one a model output (None: numbered)."""
    from .data import target_columns

    if task == "classification" and not multilabel:
        return None if classes is None else list(classes)
    named = target_columns(spec.target) if str(spec.dataset).lower().endswith(".csv") else \
        estimator_targets or []
    return list(named) if len(named) == outputs else None


def _check_finite_outputs(model, y_hat, x, checkpoint, source, whole=None) -> None:
    """A DataError where the model's outputs for the (finite) inputs x are not finite: weights
    that overflow the model's dtype (a float32's past 3.4e38), or inputs far outside the
    training data's range; its probabilities or values would be NaN, labelled as a class.
    ``whole``: x and y_hat are a block of the source, whose (rows not finite, rows, first such
    row) these are."""
    import numpy as np

    from .errors import DataError

    backend = model.backend
    bad = np.flatnonzero(~backend.to_host(backend.xp.isfinite(y_hat).all(axis=1)))
    if not bad.size:
        return
    top = max(float(backend.xp.abs(p).max()) for p in model.params.values())
    row = backend.to_host(backend.xp.abs(backend.asarray(x[int(bad[0])])).max())
    count, rows, at = whole or (bad.size, len(y_hat), int(bad[0]))
    raise DataError(f"{checkpoint}: the model's outputs are not finite (they overflow "
                    f"{model.dtype}) for {count} of {rows} rows of {source}, the "
                    f"first row {at + 1}: its largest weight is {top:.3g}, that row's "
                    f"largest input {float(row):.3g} (standardised); a model trained to "
                    "such weights, or inputs far outside the training data's range?")


def cmd_predict(args) -> int:
    import numpy as np

    from .checkpoint import atomic_write, check_writable, load_checkpoint
    from . import data
    from .data import check_header_row, feature_blocks, target_columns
    from .errors import ConfigError, DataError
    from .train import predicted_classes

    from .checkpoint import _written_in_place

    out = str(args.output)
    kind = os.path.splitext(out)[1].lower()  # (.CSV as .csv)
    if kind not in (".csv", ".npy") and _written_in_place(out) is not None:
        kind = ".csv"  # (/dev/stdout, a pipe: the CSV, written into it)
    if kind not in (".csv", ".npy"):
        raise ConfigError(f"--output must end in .csv or .npy (or be /dev/stdout, a pipe), "
                          f"got {out!r}")
    keep = list(dict.fromkeys(args.keep or ()))
    if keep and not (kind == ".csv" and str(args.input).lower().endswith(".csv")):
        raise ConfigError("--keep copies columns of a .csv input into a .csv output")
    if args.x_key is not None and not str(args.input).lower().endswith(".npz"):
        raise ConfigError("--x-key names the features array of an .npz input")
    check_writable(out, "--output")
    _refuse_overwriting([("input file", args.input), ("checkpoint", args.checkpoint)],
                        ("--output", out))
    ckpt = load_checkpoint(args.checkpoint)
    ckpt.check_sections(args.checkpoint)
    if kind == ".npy" and ckpt.classes is not None and not ckpt.extra.get("multilabel") \
            and np.asarray(ckpt.classes).dtype.kind in "OSU":  # (before any work)
        raise ConfigError("this model's class labels are text: write the predictions to a "
                          ".csv file")
    model = ckpt.build_model(args.backend, weights="best")
    _stopped_within_an_epoch(ckpt, args.checkpoint)
    spec = ckpt.extra.get("data") if isinstance(ckpt.extra.get("data"), dict) else {}
    if spec:  # nor the data the run was trained on (a spec check_sections has read)
        from .data import DataSpec

        _refuse_overwriting(_data_files(DataSpec.from_json(spec)), ("--output", out))
    estimator = ckpt.extra.get("estimator") if isinstance(ckpt.extra.get("estimator"),
                                                          dict) else {}
    # a saved estimator's pandas target's name: left out, unless it names a feature too (a
    # forecast of x from x)
    features = {e["name"] for e in ckpt.features or ()}
    targets = [str(t) for t in estimator.get("target_names") or () if str(t) not in features]
    named = target_columns(spec.get("target")) if str(spec.get("dataset")).lower().endswith(
        ".csv") else []  # (a CSV run's target columns: they name the outputs)
    if not ckpt.features and str(args.input).lower().endswith(".csv"):
        check_header_row(args.input)  # (its columns by position: a row of numbers is no header)
    # a block of rows at a time (FEATURE_BLOCK_ROWS), read, standardised, predicted and
    # written before the next is read: memory is a block's, not the file's (2M rows of 20
    # columns were 512 MB); the outputs are the whole file's, bit for bit
    blocks = feature_blocks(args.input, ckpt.features, _fill_values(ckpt),
                            ignore=named
                            + ([spec["weight_column"]] if spec.get("weight_column") else [])
                            + targets + list(spec.get("ignore") or ()) + list(args.ignore or ())
                            + [k for k in keep if k not in features],  # (a feature is copied)
                            keep_float32=True,
                            unseen_none=args.unseen_category == "none",
                            x_key=args.x_key or spec.get("x_key") or "x", keep=keep)
    blocks = _regrouped(blocks, -(-data.FEATURE_BLOCK_ROWS // PREDICT_BATCH_ROWS)
                        * PREDICT_BATCH_ROWS)
    first = next(blocks)  # (the header's errors and the first rows', before any notice)
    if not ckpt.features and str(args.input).lower().endswith(".csv"):
        from .log import notice

        notice(f"this model was trained on arrays, without column names: the columns of "
               f"{args.input} are taken by position, its first as the model's first feature "
               f"(scikit-learn warns alike)")
    elif ckpt.features and not str(args.input).lower().endswith(".csv"):
        from .data import _some
        from .log import notice

        columns = [n for e in ckpt.features for n in (  # (a text column's one-hot block)
            [f"{e['name']}={c}" for c in e["categories"]] if "categories" in e else [e["name"]])]
        notice(f"this model was trained on named columns, which {args.input} has none of: its "
               f"columns are taken by position, as the model's {len(columns)} inputs in their "
               f"order: {_some(columns, last=True)} (scikit-learn warns alike)")
    if ckpt.standardizer is not None and first[0].shape[1] != len(ckpt.standardizer.mean):
        from .errors import ShapeError

        raise ShapeError(f"{args.input!r} has {first[0].shape[1]} feature columns; the model "
                         f"expects {len(ckpt.standardizer.mean)}")
    backend = model.backend
    labelled = [str(t) for t in estimator.get("target_names") or ()]  # (a DataFrame's)
    task = ckpt.extra.get("task") or ("classification" if model.output in ("softmax", "sigmoid")
                                      else "regression")
    # probabilities with every digit that reads back to the model's own: 9 significant ones
    # for a float32 (8 lost the last bit of 1 in 80), a float64's shortest repr
    real = "%.9g" if model.dtype == np.float32 else "%r"
    done = 0  # rows predicted before the block

    def predicted(x):
        """The block's outputs, or a DataError where some are not finite (their count and
        first row are the whole file's: the blocks after are predicted to count them)."""
        if ckpt.standardizer is not None:
            x = ckpt.standardizer(x, dtype=model.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # (outputs that overflow:
            y_hat = model.predict(x, batch_size=PREDICT_BATCH_ROWS)  # (said below)
        try:
            _check_finite_outputs(model, y_hat, x, args.checkpoint, args.input)
        except DataError:
            bad = np.flatnonzero(~backend.to_host(backend.xp.isfinite(y_hat).all(axis=1)))
            at, count, rows = done + int(bad[0]), bad.size, done + len(y_hat)
            for rest, _ in blocks:  # (the rest only counted)
                if ckpt.standardizer is not None:
                    rest = ckpt.standardizer(rest, dtype=model.dtype)
                with np.errstate(over="ignore", invalid="ignore"):
                    more = model.predict(rest, batch_size=PREDICT_BATCH_ROWS)
                count += int((~backend.to_host(backend.xp.isfinite(more).all(axis=1))).sum())
                rows += len(more)
            _check_finite_outputs(model, y_hat, x, args.checkpoint, args.input,
                                  whole=(count, rows, at))
        return y_hat

    def tabled(y_hat):
        """(table, text labels or None, header, fmt) of a block's outputs."""
        text = None  # text class labels: the CSV's first column
        if task == "classification" and ckpt.extra.get("multilabel"):  # each label on its own
            probs = y_hat if model.output == "sigmoid" else \
                _probabilities(backend, "sigmoid", y_hat)
            probs = backend.to_host(probs).astype(np.float64)
            names = labelled if len(labelled) == probs.shape[1] > 1 else ckpt.classes \
                if ckpt.classes is not None else \
                named if len(named) == probs.shape[1] > 1 else range(probs.shape[1])
            header = [f"label_{c}" for c in names] + [f"p_{c}" for c in names]
            table = np.column_stack([backend.to_host(predicted_classes(model, y_hat, True)),
                                     probs])
            fmt = ["%d"] * probs.shape[1] + [real] * probs.shape[1]
        elif task == "classification":
            if model.sizes[-1] == 1:
                p1 = y_hat if model.output == "sigmoid" else \
                    _probabilities(backend, "sigmoid", y_hat)
                probs = backend.xp.concatenate([1 - p1, p1], axis=1)
            else:
                probs = y_hat if model.output == "softmax" else \
                    _probabilities(backend, "softmax", y_hat)
            probs = backend.to_host(probs).astype(np.float64)
            # the logits' argmax, as evaluate and the estimators take it: two logits a hair
            # apart may round to one probability, whose argmax is the first
            labels = backend.to_host(predicted_classes(model, y_hat))
            classes = ckpt.classes  # the data's class names (text labels, a saved estimator's)
            names = None if classes is None else np.array([  # (floats: 1.0 as 1, 0.1 as 0.1)
                _float_text(c) if isinstance(c, (float, np.floating)) else str(c)
                for c in classes])
            header = ["label"] + ([f"p_{c}" for c in names] if names is not None
                                  else [f"p_{k}" for k in range(probs.shape[1])])
            if classes is not None:
                names, labels = names[labels], classes[labels]
            # bool labels (True/False), integers past float64's 2^53 and floats do not survive
            # a column of numbers written alike: in a CSV they are written as text, as class
            # names (a block's integers under 2^53 read the same either way)
            inexact = labels.dtype.kind in "iu" and len(labels) and (
                np.abs(labels.astype(object)).max() > 2**53)
            if labels.dtype.kind in "biuf" and not (kind == ".csv" and (
                    labels.dtype.kind in "bf" or inexact)):
                if inexact:
                    raise ConfigError("this model's class labels are integers past 2^53, "
                                      "which a .npy of floats cannot hold exactly: write the "
                                      "predictions to a .csv file")
                table = np.column_stack([labels, probs])
                fmt = ["%d"] + [real] * probs.shape[1]  # (a .npy's floats: unformatted)
            else:  # text labels: only a CSV can hold them (a first column of text)
                table, text, fmt = probs, names, [real] * probs.shape[1]
        else:
            table = backend.to_host(y_hat).astype(np.float64)
            if ckpt.target_standardizer is not None:  # the model predicts standardised targets
                table = ckpt.target_standardizer.inverse(table)
            header = named if len(named) == table.shape[1] else labelled \
                if len(labelled) == table.shape[1] else [f"y{k}" for k in range(table.shape[1])]
            fmt = None  # every digit float64 needs, as csv writes a float (its shortest repr):
            # targets far from 0 (1e8 + a few units) lose their spread in 8 significant digits
        return table, text, header, fmt

    def tables():
        """Each block's (table, text, kept cells), the first's already predicted."""
        nonlocal done
        yield first_table, first_text, first[1]
        done += len(first_table)
        for x, kept in blocks:
            table, text, _, _ = tabled(predicted(x))
            yield table, text, kept
            done += len(table)

    first_table, first_text, header, fmt = tabled(predicted(first[0]))
    if kind == ".npy":  # (the output's memory: a .npy is written once its row count is known)
        parts = [table for table, _, _ in tables()]
        table = parts[0] if len(parts) == 1 else np.concatenate(parts)
        del parts
        atomic_write(out, lambda f: np.save(f, table))
    else:
        def write_csv(f):
            import csv

            stream = io.TextIOWrapper(f, encoding="utf-8", newline="")
            writer = csv.writer(stream, lineterminator="\n")  # (quotes a name with a comma)
            # a kept column named as an output (the true label beside the predicted one):
            # input_<name>, so that the two read apart
            writer.writerow([f"input_{k}" if k in header else k for k in keep] + header)
            line = None if fmt is None else ",".join(fmt)
            for whole, text, kept in tables():
                # a part of rows at a time (no text of them all held), of about
                # PREDICT_CSV_CELLS cells: 65536 rows of 1000 class probabilities were 2 GB of
                # Python floats
                block = max(1, PREDICT_CSV_CELLS // max(
                    whole.shape[1] if whole.ndim == 2 else 1, 1))
                for lo in range(0, len(whole), block):
                    part = whole[lo:lo + block].tolist()
                    rows = part if line is None else ((line % tuple(r)).split(",") for r in part)
                    if text is not None:  # (floats as csv writes them: their shortest repr)
                        rows = ([str(c), *r] for c, r in zip(text[lo:lo + block], rows))
                    if kept is not None:
                        rows = ([*k, *r] for k, r in zip(kept[lo:lo + block], rows))
                    writer.writerows(rows)
            stream.flush()
            stream.detach()  # (f stays open: atomic_write fsyncs it)

        atomic_write(out, write_csv)
    print(f"wrote {done} predictions to {out}", file=sys.stderr)
    return 0


#: cells of predictions (rows times columns) turned into text at a time as predict writes a
#: CSV
PREDICT_CSV_CELLS = 1 << 20

#: rows a batch of predict's takes; it predicts blocks of whole batches of rows (the
#: FEATURE_BLOCK_ROWS a block of the input has, rounded up), so that the batches, and so the
#: outputs to the bit, are the whole file's (BLAS sums a float32 row otherwise in a batch of
#: another size)
PREDICT_BATCH_ROWS = 4096


def _regrouped(blocks, n):
    """The (x, kept) blocks of ``feature_blocks`` regrouped into blocks of n rows each, the
    last fewer (a block of the input's lines holds fewer rows where some are blank)."""
    import numpy as np

    xs, ks, have = [], [], 0
    for x, kept in blocks:
        xs.append(x)
        ks.append(kept)
        have += len(x)
        while have >= n:
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            kept = None if ks[0] is None else [c for part in ks for c in part]
            yield x[:n], None if kept is None else kept[:n]
            have -= n
            xs = [x[n:]] if have else []
            ks = [None if kept is None else kept[n:]] if have else []
    if have:
        yield (xs[0] if len(xs) == 1 else np.concatenate(xs),
               None if ks[0] is None else [c for part in ks for c in part])


def _float_text(v) -> str:
    """A float as the shortest text that reads back to it (its repr), a whole number without
    its ".0" (1 and 2, as class labels are written)."""
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def _probabilities(backend, how, logits):
    """The sigmoid or softmax of ``logits``, with the ops predictions take
    (``Backend.evaluating``: array ops, so that a command run once compiles no kernel)."""
    with backend.evaluating():
        return backend.softmax(logits) if how == "softmax" else \
            backend.act_forward("sigmoid", logits)


def cmd_gradcheck(args) -> int:
    from .backends import get_backend
    from .gradcheck import check_all

    backend = get_backend(args.backend)
    print(f"finite-difference gradient check, float64, backend {backend.name}")
    print(f"{'hidden f':<11}{'output g':<12}{'loss':<14}{'targets':<14}{'dropout':<8}"
          f"{'norm':<6}{'max |err|':>11}{'worst/tol':>11}  result")
    import warnings

    failed = total = 0
    with warnings.catch_warnings(record=True) as caught:  # (said below, in the command's
        warnings.simplefilter("always")                   # words, not with a source line)
        for (f, g, loss, kind), p, norm, r in check_all(backend):
            total += 1
            failed += not r.ok
            worst = max(r.ratios.values())
            print(f"{f:<11}{g:<12}{loss:<14}{kind:<14}{p:<8g}{norm or '-':<6}"
                  f"{r.worst:>11.2e}{worst:>11.2e}  {'ok' if r.ok else 'FAIL'}")
            if args.verbose:
                for name in r.errors:
                    print(f"    {name:<6} max |err| {r.errors[name]:.2e}  "
                          f"err/tol {r.ratios[name]:.2e}")
    print(f"{total - failed} passed, {failed} failed")
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"gpunet: warning: {message.removeprefix('gradcheck: ')}", file=sys.stderr)
    return 1 if failed else 0


def _settings_text(settings: dict) -> str:
    """``{"lr": 0.1, "betas": [0.9, 0.999]}`` as "lr 0.1, betas (0.9, 0.999)"."""
    def shown(v):
        if isinstance(v, (list, tuple)):
            return "(" + ", ".join(shown(e) for e in v) + ")"
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k.replace('_', ' ')} {shown(v)}" for k, v in settings.items())


def _schedule_text(state: dict) -> str:
    """A checkpoint's schedule (``Schedule.state_dict()``) in one line: its own settings, the
    warmup, and where plateau stands (the rate it is at, its epochs without a better loss)."""
    from .schedules import OPTIONS

    name = state.get("name")
    own = {k: state[k] for k in OPTIONS.get(name, ()) if k in state}
    line = f"schedule: {name}" + (f" ({_settings_text(own)})" if own else "")
    if state.get("warmup"):
        line += f", warmup {state['warmup']} epochs"
    if name == "plateau" and isinstance(state.get("current"), (int, float)):
        line += (f"; now at lr {state['current']:g}, {state.get('bad_epochs', 0)} epoch(s) "
                 "without a better validation loss")
    return line


def cmd_info(args) -> int:
    if getattr(args, "checkpoint", None):
        return _describe_checkpoint(args.checkpoint)
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
    print(f"numba {version('numba')}, numba-cuda {version('numba_cuda')}")
    print(f"cupy {version('cupy')}" + (f" ({cuda_versions()})" if usable else ""))
    try:
        import torch

        on = f"CUDA {torch.version.cuda}; " if getattr(torch.version, "cuda", None) else ""
    except Exception:
        on = ""
    print(f"torch {version('torch')} ({on}optional; tests use it as the autograd oracle)")
    print("backends: numpy (cpu)" + (", cupy" if usable else ""))
    if usable:
        from .backends import get_backend

        cupy_backend = get_backend("cupy")
        print(f"cupy: usable on {cupy_backend.device_name}")
        graphs = ("possible: gpunet's own cuBLAS handle works (a static step tries its capture "
                  "at its first step, and steps eagerly, saying why, where it fails)"
                  if cupy_backend.cublas() is not None
                  else "no (see the notice above): the cupy backend steps eagerly")
        print(f"cuda graphs: {graphs}")
    else:
        print(f"cupy: not usable: {why}")
    from .backends.numpy_backend import NumpyBackend

    kernels = "off (GPUNET_KERNELS=0)" if os.environ.get("GPUNET_KERNELS", "1").strip() == "0" \
        else (f"on for arrays of at least {NumpyBackend.kernel_min_size} elements on the CPU "
              "(compiled on first use)")
    print(f"fused kernels: {kernels}")
    print(f"default backend: {default_backend_name()} "
          f"(auto picks {'cupy' if usable else 'numpy'}; set GPUNET_BACKEND to change)")
    return 0


def cuda_versions() -> str:
    """The CUDA runtime CuPy was built with and the driver's CUDA, as "CUDA runtime 13.0,
    driver 13.0" (benchmark tables name them); "" where CuPy cannot say."""
    try:
        import cupy

        runtime = cupy.cuda.runtime
        got = [(what, int(get())) for what, get in (("CUDA runtime", runtime.runtimeGetVersion),
                                                   ("driver", runtime.driverGetVersion))]
    except Exception:
        return ""
    return ", ".join(f"{what} {v // 1000}.{v % 1000 // 10}" for what, v in got)


def _describe_checkpoint(path) -> int:
    """``gpunet info --checkpoint PATH``: what the file holds, read without building anything
    on a device."""
    from .checkpoint import load_checkpoint
    from .train import figure, resume_command, run_position

    ckpt = load_checkpoint(path)
    ckpt.check_sections(path)
    h, extra = ckpt.header, ckpt.extra
    cfg = h["model"]
    n_params = sum(int(v.size) for k, v in ckpt.params.items()
                   if not k.startswith(("running_mean", "running_var")))  # (buffers)
    print(f"checkpoint: {path} (format version {h['version']})")
    print(f"model: sizes {cfg['sizes']}, activation {cfg['activation']}, output "
          f"{cfg['output']}, {cfg['dtype']}, {n_params} parameters"
          + (f", dropout {cfg['dropout']:g}" if cfg.get("dropout") else "")
          + (f", {cfg['norm']} norm (eps {cfg.get('norm_eps', 1e-5):g}"
             + (f", momentum {cfg.get('norm_momentum', 0.1):g}" if cfg["norm"] == "batch"
                else "") + ")" if cfg.get("norm") else ""))
    estimator = extra.get("estimator")
    if estimator:
        print(f"saved estimator: {estimator['class']} (load it with "
              f"gpunet.{estimator['class']}.load)")
    task = extra.get("task")
    if task:
        line = f"task: {task}"
        if extra.get("multilabel"):
            line += f", multilabel: {cfg['sizes'][-1]} labels, each 0 or 1"
        elif ckpt.classes is not None:
            line += f", {len(ckpt.classes)} classes: {', '.join(map(str, ckpt.classes))}"
        elif task == "classification" and cfg["sizes"][-1] == 1:  # (one logit: two classes)
            line += ", 2 classes (labels 0 and 1: one output, the probability of 1)"
        elif task == "classification":
            line += f", {cfg['sizes'][-1]} outputs (labels 0..{cfg['sizes'][-1] - 1})"
        print(line)
    if ckpt.features:
        cols = [f"{c['name']} ({', '.join(c['categories'])})" if "categories" in c
                else c["name"] for c in ckpt.features]
        print(f"features: {cfg['sizes'][0]} inputs from {len(cols)} columns: {', '.join(cols)}")
    print("standardised: features " + ("yes" if ckpt.standardizer is not None else "no")
          + (", targets yes" if ckpt.target_standardizer is not None else ""))
    data = extra.get("data")
    if data:
        target = data.get("target")
        where = data["dataset"] + (
            f" (target {target})" if isinstance(target, str) else
            f" (targets {', '.join(map(str, target))})" if target else "")
        own_test = data.get("data_dir") is not None  # (mnist: its own test files)
        print(f"data: {where}, seed {data['seed']}, validation {data['val_fraction']:g}, "
              + ("test its own files" if own_test else f"test {data['test_fraction']:g}")
              + (", rows with a missing " + ("target or weight" if data.get("fill_missing")
                                             else "value") + " left out"
                 if data.get("drop_missing") else "")
              + (f", missing values filled ({data['fill_missing']})"
                 if data.get("fill_missing") else "")
              + (f", rows weighted by column {data['weight_column']!r}"
                 if data.get("weight_column") else "")
              + (", columns left out: " + ", ".join(map(repr, data["ignore"]))
                 if data.get("ignore") else "")
              + (f", classes weighted ({data['class_weight']})" if data.get("class_weight")
                 else ""))
    weights = extra.get("class_weights")
    if weights:
        names = ckpt.classes if ckpt.classes is not None else range(len(weights))
        print("class weights: " + ", ".join(f"{c} {_figure(w, '.3g')}"
                                            for c, w in zip(names, weights)))
    training = extra.get("training")
    opt = h.get("optimizer")
    if training:
        state = training["state"]
        loss = training.get("loss") or {"name": "(not recorded)"}
        options = [f"{k.replace('_', ' ')} {v:g}" for k, v in loss.items()
                   if k in ("delta", "label_smoothing") and v]
        ranks = training.get("ranks", 1)
        ranks = ranks if isinstance(ranks, int) and ranks > 1 else 1
        line = (f"training: {run_position(state, training['epochs'])}, batch "
                f"{training['batch_size']}" + (f" over {ranks} ranks" if ranks > 1 else "")
                + f", seed {training['seed']}, loss {loss['name']}"
                + (f" ({', '.join(options)})" if options else ""))
        if opt:
            line += f", {opt['name']} lr={opt['hyperparameters']['lr']:g} ({opt['steps']} steps)"
        if state.get("stopped_early"):
            line += f"; stopped early, keeping epoch {state.get('best_epoch', '?')}"
        elif not state.get("finished"):
            line += "; unfinished (" + (
                f"resume with: {resume_command(path, ranks)})"
                if _readable_source(extra.get("data")) else
                f"its data were given in Python: resume it there, fit(..., resume={path!r}))")
        print(line)
        if opt and isinstance(opt.get("hyperparameters"), dict):  # (what a resume goes on
            print(f"optimizer: {opt['name']} " + _settings_text(  # with: its flags are refused)
                {k: v for k, v in opt["hyperparameters"].items()
                 if v is not None and v is not False and not (
                     k in ("weight_decay", "dampening") and v == 0)}))
        schedule = training.get("schedule")
        if isinstance(schedule, dict) and (schedule.get("name") not in (None, "constant")
                                           or schedule.get("warmup")):
            print(_schedule_text(schedule))
        rows = training.get("rows")
        if isinstance(rows, list) and len(rows) == 3:
            print(f"rows: {rows[0]} train / {rows[1]} validation / {rows[2]} test")
        if training.get("patience") is not None:
            delta = training.get("min_delta") or 0
            print(f"early stopping: patience {training['patience']} on "
                  f"{training.get('monitor', 'val_loss')}"
                  + (f", min_delta {delta:g}" if delta else "")
                  + (f"; best epoch {state['best_epoch']}" if state.get("best_epoch") else ""))
        if state["history"]:
            last = state["history"][-1]
            print("last epoch: " + "  ".join(f"{k} {'nan' if v is None else figure(v)}"
                                              for k, v in last.items()
                                              if k not in ("epoch", "seconds", "lr")))
    elif estimator and estimator.get("history"):
        line = f"training: {len(estimator['history'])} epochs"
        if opt:  # what partial_fit goes on with
            line += f", {opt['name']} lr={opt['hyperparameters']['lr']:g} ({opt['steps']} steps)"
        print(line)
    return 0


def _figure(v, spec) -> str:
    """A stored figure as ``format(v, spec)``; null (how a checkpoint's JSON writes NaN) as
    nan."""
    return "nan" if v is None else format(v, spec)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
