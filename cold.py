import sys, time
t = time.perf_counter()
import numpy as np, gpunet as gn
from gpunet.data import make_dataset
import tqdm.auto, gpunet.train
t_imp = time.perf_counter() - t
sys.path.insert(0, "/tmp/hunt34"); import tim; tim.install()
case = sys.argv[1]
cfg = {"b": (16000, [256], 128), "c": (50000, [64, 64], 32)}[case]
rng = np.random.default_rng(123)
X = rng.standard_normal((cfg[0], 784)); W = rng.standard_normal((784, 10))
Y = (X @ W + 0.5 * rng.standard_normal((cfg[0], 10))).argmax(1)
t = time.perf_counter(); c = time.thread_time()
data = make_dataset("synth", X, Y, "classification", seed=0, val_fraction=0.1, test_fraction=0.0)
t_make = time.perf_counter() - t; c_make = time.thread_time() - c
had = "numba" in sys.modules
def run():
    tim.reset()
    model = gn.MLP([784, *cfg[1], 10], backend="numpy", seed=0)
    opt = gn.Adam(model, lr=1e-3)
    t, c = time.perf_counter(), time.thread_time()
    gn.fit(model, data, gn.CrossEntropyLoss(), opt, epochs=5, batch_size=cfg[2], progress=False)
    return time.perf_counter() - t, time.thread_time() - c, tim.snapshot()[0]
w1, c1, d1 = run()
now = "numba" in sys.modules
w2, c2, d2 = run()
print(f"{case}: import gpunet+train+tqdm {t_imp:.3f}s; make_dataset {t_make:.3f}s wall {c_make:.3f} cpu; numba before {had} after {now}")
print(f"  cold fit {w1:.3f} wall {c1:.3f} cpu; warm fit {w2:.3f} wall {c2:.3f} cpu; cold-warm {w1-w2:.3f} wall {c1-c2:.3f} cpu; compile events {d1['numba_compile']:.3f}s")
for k in ("step_call", "metrics"):
    print(f"  {k}: cold {d1[k]:.3f}/{d1['cpu:'+k]:.3f} warm {d2[k]:.3f}/{d2['cpu:'+k]:.3f} (wall/cpu)")
