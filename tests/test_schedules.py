"""Learning-rate schedules against torch.optim.lr_scheduler: the epochs they count (from 1,
where torch's count from 0) and ReduceLROnPlateau's rule over long runs, tiny rates too."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpunet as gn


def _torch_rates(torch, make, epochs, losses=None, lr=1.0):
    """The rate torch's scheduler ``make(optimizer)`` gives each 0-based epoch from ``lr``,
    stepped after each (with that epoch's loss where ``losses`` are given: ReduceLROnPlateau's)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make(opt)
    rates = []
    for e in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(*([] if losses is None else [losses[e]]))
    return rates


@pytest.mark.parametrize("epoch", [0, -1, 2.5, 1.0, True, "1", None])
def test_an_epoch_before_the_first_or_not_a_whole_number_is_refused(epoch):
    """lr(0) was 0.0 and lr(-1) -0.2 for step(step_size=2, gamma=0.5) from 0.1: a 0-based loop
    (torch's count) trained its first epoch at rate 0 and moved every decay by one."""
    s = gn.Schedule("step", base_lr=0.1, step_size=2, gamma=0.5)
    with pytest.raises(gn.ConfigError, match=r"epochs count from 1: lr\(1\) is the first "
                                             r"epoch's rate"):
        s.lr(epoch)


@pytest.mark.parametrize("name, make", [
    ("step", lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)),
    ("cosine", lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.1)),
])
def test_lr_of_epoch_e_plus_one_is_torchs_rate_of_its_epoch_e(torch, name, make):
    own = {"step": dict(step_size=2, gamma=0.5), "cosine": dict(min_lr=0.1)}[name]
    s = gn.Schedule(name, base_lr=1.0, epochs=5, **own)
    want = _torch_rates(torch, lambda o: make(torch, o), 5)
    np.testing.assert_allclose([s.lr(e) for e in range(1, 6)], want, rtol=1e-12)
    assert s.lr(np.int64(3)) == s.lr(3)  # (NumPy's integers count)


@pytest.mark.parametrize("base_lr, factor, patience, threshold, min_lr", [
    (1e-6, 0.5, 0, 1e-4, 0.0),  # halved down past 1e-8, where torch stops cutting
    (0.1, 0.1, 2, 1e-4, 0.0),  # tenths down to 1e-8 and below
    (3e-8, 0.5, 1, 0.0, 1e-9),  # starting in the tiny-rate regime, with a floor
    (0.05, 0.3, 1, 1e-2, 1e-3),  # the floor reached by a cut bigger than eps
])
def test_plateau_follows_torchs_reduce_lr_on_plateau_over_a_long_run(
        torch, base_lr, factor, patience, threshold, min_lr):
    """Below about 1e-8 gpunet kept cutting where torch holds (its eps: a cut of 1e-8 or
    less is skipped); 200 epochs of losses that mostly stall, with a few improvements."""
    rng = np.random.default_rng(0)
    losses = np.minimum.accumulate(1 + rng.random(200)) + rng.random(200) * 0.5
    losses[rng.random(200) < 0.1] -= 0.3  # (a few better epochs: the count starts over)
    s = gn.Schedule("plateau", base_lr=base_lr, factor=factor, patience=patience,
                    threshold=threshold, min_lr=min_lr)
    got = []
    for e, loss in enumerate(losses, start=1):
        got.append(s.lr(e))
        s.observe(loss)
    want = _torch_rates(torch, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, factor=factor, patience=patience, threshold=threshold, min_lr=min_lr),
        200, [float(v) for v in losses], lr=base_lr)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert min(got) < 1e-7 or min(got) == min_lr  # (the tiny rates, or the floor, reached)


def test_plateau_holds_the_rate_once_a_cut_would_be_eps_or_less(torch):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-8)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    s = gn.Schedule("plateau", base_lr=1e-8, patience=0, factor=0.5)
    got, want = [], []
    for e in range(1, 6):
        got.append(s.lr(e))
        want.append(opt.param_groups[0]["lr"])
        s.observe(1.0)
        ref.step(1.0)
    assert got == want == [1e-8] * 5


def test_observe_takes_a_0d_array_or_tensor_as_its_number(torch):
    """A 0-d array (or tensor) was stored as the best loss and broke a JSON save of the
    schedule's state; a string raised a bare TypeError."""
    s = gn.Schedule("plateau", base_lr=0.1, patience=0)
    s.observe(np.array(2.0))
    s.observe(torch.tensor(1.5, dtype=torch.float64))
    assert type(s.best) is float and s.best == 1.5
    again = gn.Schedule.from_state(json.loads(json.dumps(s.state_dict())))
    assert again.best == 1.5
    for bad in ("1.0", None, np.ones(3)):
        with pytest.raises(gn.ConfigError, match="observe takes the epoch's validation loss, "
                                                 "a number"):
            s.observe(bad)


@pytest.mark.parametrize("name, options, named", [
    ("plateau", dict(gamma=0.5), "plateau's factor is factor="),
    ("cosine", dict(step_size=3), "does not use step_size"),
    ("step", dict(min_lr=0.01), "does not use min_lr"),
    ("constant", dict(factor=0.5, patience=2), "does not use factor, patience"),
])
def test_an_option_the_schedule_does_not_use_is_refused(name, options, named):
    """Schedule("plateau", gamma=0.5) cut the rate by the default factor 0.1, without a
    word (plateau's factor is factor=, as torch's ReduceLROnPlateau); other schedules took
    options they have no use for silently too, where the command line refuses the flags."""
    with pytest.raises(gn.ConfigError, match=named):
        gn.Schedule(name, base_lr=1.0, **options)


def test_plateau_cuts_by_its_factor_and_states_round_trip(torch):
    s = gn.Schedule("plateau", base_lr=1.0, factor=0.5, patience=0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    for loss in (1.0, 2.0, 3.0, 0.5):
        s.observe(loss)
        ref.step(loss)
    assert s.lr(5) == opt.param_groups[0]["lr"] == 0.25
    for name in ("constant", "step", "cosine", "plateau"):
        t = gn.Schedule(name, base_lr=0.3, epochs=4)
        assert gn.Schedule.from_state(t.state_dict()).state_dict() == t.state_dict()


def test_a_plateau_run_resumes_with_its_own_gamma_repeated_and_refuses_another(tmp_path,
                                                                                capsys):
    """--gamma is plateau's factor; since Schedule keeps it as factor, a resume repeating the
    run's own --gamma was refused as a change (job scripts rerun their flags with --resume)."""
    from gpunet.cli import main

    run = tmp_path / "pl.npz"
    flags = ["--backend", "numpy", "--quiet"]
    assert main(["train", "--dataset", "iris", "--schedule", "plateau", "--gamma", "0.5",
                 "--epochs", "2", "--save", str(run), *flags]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--gamma", "0.5", *flags]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "4", "--gamma", "0.3", *flags]) == 1
    assert "--gamma cannot change them" in capsys.readouterr().err
