"""Pruning side by side, in one run: structured criteria x ratios, unstructured sparsity (and
what it does *not* speed up), CSR Linear execution, iterative pruning with rewinding, pruning at
initialization.

    .venv/bin/python benchmarks/pruning.py [--quick] [--only structured,unstructured,csr,imp,init]
    .venv/bin/python benchmarks/pruning.py --only imp-seeds [--seeds 5] [--model resnet]

Writes benchmarks/results/pruning.{json,md}.

- Model: the ResNet-style example trained on digits (benchmarks/work/example/resnet.pt2), pruned
  at its trained 32x32 resolution. The same pruned module (channel counts do not depend on the
  resolution) is also exported at 224x224 for latency.
- Latency: p50 at batch 1 on the `cpu` target, torch and ONNX Runtime. Each candidate is timed
  against the unpruned baseline in ONE fresh process in alternating blocks
  (`advisor.measure.latency.measure_speedup`): the baseline p50 is printed beside every row
  and the speed-up is the ratio of the fastest calls (robust on a shared 2-core host).
- `imp-seeds` repeats one-shot vs IMP with learning-rate rewinding at 90% over several training
  seeds (one test image is 0.28 points, so single runs differ by noise) and reports mean, spread
  and paired wins; recorded as pruning-imp-seeds[-MODEL].
- Accuracy: digits test split (359 images: one image = 0.28 points), right after pruning and
  after a short fine-tune (the shared loop, OneCycle). Training runs single-threaded.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (RUNTIMES, SHAPES, WORK, ensure_examples,  # noqa: E402
                                export_for, latency_cells, markdown_table, paired_latency,
                                record, run_pass)

OUT = WORK / "pruning"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer settings and epochs")
    ap.add_argument("--only", default="structured,unstructured,csr,imp,init")
    ap.add_argument("--seeds", type=int, default=5, help="training seeds for imp-seeds")
    ap.add_argument("--model", default="resnet", choices=("resnet", "mobilenet", "vgg"),
                    help="example to prune")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)

    from advisor.examples.digits import load_digits_splits, loader
    from advisor.model_io import load_model
    from advisor.targets import load_target
    from advisor.train import evaluate

    example = ensure_examples((args.model,))
    model = load_model(str(example / f"{args.model}.pt2")).module.eval()
    splits = load_digits_splits()
    data = {"train": loader(splits["train"], 64, shuffle=True), "val": loader(splits["val"], 256),
            "test": loader(splits["test"], 256)}
    target = load_target("cpu")
    dense_acc = evaluate(model, data["test"])
    bench = Bench(model, data, target, dense_acc)
    results: dict = {"dense_test_accuracy": dense_acc, "quick": args.quick}
    md = [f"# Pruning benchmark\n\nExample `{args.model}`, digits test accuracy of the dense "
          f"model: **{dense_acc:.2%}** (359 test images). Latency: p50 ms at batch 1 on the "
          "`cpu` target; every candidate timed against the unpruned model in the same process "
          "(speed-up = ratio of the fastest calls)."]
    started = time.perf_counter()
    if "structured" in parts:
        results["structured"], text = bench.structured(args.quick)
        md.append(text)
    if "unstructured" in parts:
        results["unstructured"], text = bench.unstructured(args.quick)
        md.append(text)
    if "csr" in parts:
        results["csr"], text = csr_linear(data, args.quick)
        md.append(text)
    if "imp" in parts:
        results["imp"], text = bench.iterative(args.quick)
        md.append(text)
    if "imp-seeds" in parts:
        results["imp_seeds"], text = bench.iterative_seeds(args.seeds, args.quick)
        md.append(text)
    if "init" in parts:
        results["at_init"], text = bench.at_init(args.quick)
        md.append(text)
    results["seconds"] = round(time.perf_counter() - started, 1)
    md.append(f"\nWhole run: {results['seconds'] / 60:.1f} min.")
    name = "pruning" if args.only == ap.get_default("only") else \
        "pruning-" + "-".join(sorted(parts))
    if args.model != "resnet":
        name += "-" + args.model
    record(name + ("-quick" if args.quick else ""), results, "\n\n".join(md))


class Bench:
    def __init__(self, model, data, target, dense_acc):
        self.model, self.data, self.target, self.dense_acc = model, data, target, dense_acc
        self.baseline = {}  # (runtime, res) -> exported baseline file
        for res, shape in SHAPES.items():
            for rt in RUNTIMES:
                self.baseline[(rt, res)] = export_for(model, OUT / f"base-{res}", shape, rt)

    def ctx(self, budget: str = "finetune", seed: int = 0):
        return make_ctx(self.data, self.target, budget, seed=seed)

    def test_acc(self, model) -> float:
        from advisor.train import evaluate
        return evaluate(model, self.data["test"])

    def finetune(self, model, epochs: int):
        return run_pass("finetune", model, self.ctx(), epochs=epochs).model

    def latency(self, model, tag: str) -> dict:
        return paired_latency(model, self.baseline, OUT / tag, self.target)

    # ---- structured ------------------------------------------------------------------------
    def structured(self, quick: bool):
        from advisor.passes.structured import count_flops

        criteria = ("l1", "bn_scale") if quick else ("l1", "l2", "bn_scale", "hrank", "taylor")
        ratios = (0.5,) if quick else (0.3, 0.5, 0.7)
        epochs = 2 if quick else 5
        settings = [(c, r, 16) for c in criteria for r in ratios]
        settings += [("l1", r, None) for r in ratios]  # free channel counts, for comparison
        flops0 = {res: count_flops(self.model, SHAPES[res])[0] for res in SHAPES}
        params0 = sum(p.numel() for p in self.model.parameters())
        rows, recs = [], []
        for criterion, ratio, round_to in settings:
            tag = f"s-{criterion}-{ratio}-{round_to}"
            print(f"structured {criterion} {ratio} round_to={round_to}", flush=True)
            res = run_pass("prune_structured", self.model, self.ctx(), criterion=criterion,
                           ratio=ratio, round_to=round_to, calibration_samples=128)
            acc_pruned = self.test_acc(res.model)
            tuned = self.finetune(res.model, epochs)
            acc_tuned = self.test_acc(tuned)
            lat = self.latency(tuned, tag)
            params = sum(p.numel() for p in tuned.parameters())
            flops = {r: count_flops(tuned, SHAPES[r])[0] for r in SHAPES}
            rec = {"criterion": criterion, "ratio": ratio, "round_to": round_to,
                   "params": params, "params_ratio": params / params0,
                   "flops_32": flops["32"], "flops_224": flops["224"],
                   "flops_ratio": flops["224"] / flops0["224"],
                   "test_acc_pruned": acc_pruned, "test_acc_finetuned": acc_tuned,
                   "finetune_epochs": epochs, "latency": lat,
                   "slimming": res.info.get("sparsity_training")}
            recs.append(rec)
            rows.append([criterion, f"{ratio:.0%}", round_to or "free",
                         f"{params / 1e3:.1f}k ({params / params0:.2f})",
                         f"{flops['224'] / 1e6:.0f}M ({flops['224'] / flops0['224']:.2f})",
                         *latency_cells(lat), f"{acc_pruned:.2%}", f"{acc_tuned:.2%}",
                         f"{(acc_tuned - self.dense_acc) * 100:+.2f}"])
        base = recs[0]["latency"] if recs else {}
        head = (f"## Structured pruning (channels removed, DepGraph)\n\nDense: "
                f"{params0 / 1e3:.1f}k params, {flops0['224'] / 1e6:.0f}M FLOPs at 224 px "
                f"({flops0['32'] / 1e6:.1f}M at 32 px); baseline p50 (ms) " +
                ", ".join(f"{k} {v['base_p50']:.3f}" for k, v in base.items()) +
                f". Fine-tune: {epochs} epochs. Channel counts rounded to 16 (the AVX-512 "
                "block the rules choose on this host) unless 'free'. bn_scale includes 3 "
                "epochs of L1-on-gamma sparsity training before pruning.\n\n")
        headers = ["criterion", "channels removed", "round_to", "params", "FLOPs@224",
                   "torch@32 ms (x)", "ORT@32 ms (x)", "torch@224 ms (x)", "ORT@224 ms (x)",
                   "acc pruned", "acc fine-tuned", "Δ pts"]
        return recs, head + markdown_table(headers, rows)

    # ---- unstructured ----------------------------------------------------------------------
    def unstructured(self, quick: bool):
        epochs = 2 if quick else 5
        rows, recs = [], []
        for scope in ("global", "local"):
            print(f"unstructured 80% {scope}", flush=True)
            res = run_pass("prune_unstructured", self.model, self.ctx(), sparsity=0.8,
                           scope=scope)
            acc_pruned = self.test_acc(res.model)
            tuned = self.finetune(res.model, epochs)
            acc_tuned = self.test_acc(tuned)
            from advisor.sparse import storage_report
            storage = storage_report(tuned)
            lat = self.latency(tuned, f"u-{scope}")
            rec = {"scope": scope, "sparsity": res.info["sparsity"],
                   "dense_bytes": storage["dense_bytes"],
                   "compressed_bytes": storage["compressed_bytes"],
                   "zlib_bytes": storage["zlib_bytes"], "test_acc_pruned": acc_pruned,
                   "test_acc_finetuned": acc_tuned, "latency": lat,
                   "latency_effect": res.info["latency_effect"]}
            recs.append(rec)
            rows.append([scope, f"{res.info['sparsity']:.0%}",
                         f"{storage['dense_bytes'] / 1e3:.0f} kB",
                         f"{storage['compressed_bytes'] / 1e3:.0f} kB "
                         f"({storage['dense_bytes'] / storage['compressed_bytes']:.1f}x)",
                         *latency_cells(lat), f"{acc_pruned:.2%}", f"{acc_tuned:.2%}",
                         f"{(acc_tuned - self.dense_acc) * 100:+.2f}"])
        text = ("## Unstructured sparsity (80%, masks made permanent)\n\nDense kernels skip no "
                "zeros: the latency columns should show ~1.0x, and do. What shrinks is the "
                "stored size (CSR/bitmap per layer, the smaller of the two). Fine-tune: "
                f"{epochs} epochs with the zeros held.\n\n")
        headers = ["scope", "sparsity", "dense size", "compressed", "torch@32 ms (x)",
                   "ORT@32 ms (x)", "torch@224 ms (x)", "ORT@224 ms (x)", "acc pruned",
                   "acc fine-tuned", "Δ pts"]
        return recs, text + markdown_table(headers, rows)

    # ---- iterative magnitude pruning at 90% -------------------------------------------------
    def iterative(self, quick: bool):
        rounds, per_round = (2, 2) if quick else (3, 3)
        total = rounds * per_round
        # (label, rewind, epochs per round): the same total epochs first, then every round
        # with the whole one-shot budget (the lottery-ticket papers' setting: IMP costs more)
        runs = [("one-shot + fine-tune", None, total),
                ("IMP, learning-rate rewinding", "lr", per_round),
                ("IMP, weight rewinding (to the trained weights)", "weight", per_round),
                ("IMP, fine-tuning (no rewinding)", "none", per_round)]
        if not quick:
            runs += [("one-shot + fine-tune, long", None, total * rounds),
                     ("IMP, learning-rate rewinding, full rounds", "lr", total)]
        rows, recs = [], []
        for sparsity in ((0.9,) if quick else (0.9, 0.97)):
            for label, rewind, epochs in runs:
                print(f"{label} {sparsity:.0%}", flush=True)
                t = time.perf_counter()
                if rewind is None:
                    pruned = run_pass("prune_unstructured", self.model, self.ctx(),
                                      sparsity=sparsity)
                    model = run_pass("finetune", pruned.model, self.ctx(), epochs=epochs).model
                    rounds_info, spent = None, epochs
                else:
                    res = run_pass("prune_unstructured_iterative", self.model, self.ctx(),
                                   sparsity=sparsity, rounds=rounds, epochs_per_round=epochs,
                                   rewind=rewind, rewind_epoch=0)
                    model, rounds_info, spent = res.model, res.info["rounds"], epochs * rounds
                from advisor.sparse import overall_sparsity
                acc = self.test_acc(model)
                rec = {"method": label, "target_sparsity": sparsity, "rewind": rewind,
                       "epochs": spent, "sparsity": overall_sparsity(model), "test_acc": acc,
                       "seconds": round(time.perf_counter() - t, 1), "rounds": rounds_info}
                recs.append(rec)
                rows.append([f"{sparsity:.0%}", label,
                             spent if rewind is None else f"{rounds} x {epochs}",
                             f"{rec['sparsity']:.1%}", f"{acc:.2%}",
                             f"{(acc - self.dense_acc) * 100:+.2f}", rec["seconds"]])
        text = ("## Iterative vs one-shot magnitude pruning\n\n"
                f"IMP: {rounds} rounds, each removing the same share of the remaining weights; "
                f"first all methods get the same {total} epochs in total, then (\"long\", "
                "\"full rounds\") every IMP round gets the whole one-shot budget, as in the "
                "lottery-ticket papers, against a one-shot run given the same total. Target "
                "sparsity is over the pruned layers; the sparsity column counts every "
                "Conv/Linear weight (the classifier is kept dense).\n\n")
        return recs, text + markdown_table(["target", "method", "epochs", "sparsity",
                                            "test acc", "Δ pts", "s"], rows)

    # ---- one-shot vs IMP over several seeds -------------------------------------------------
    def iterative_seeds(self, seeds: int, quick: bool):
        """Paired runs per training seed: the seed sets batch order and augmentation-free
        shuffling of every method alike, so a per-seed difference compares the methods."""
        from statistics import mean, stdev

        from advisor.sparse import overall_sparsity
        from advisor.train import evaluate

        rounds, per_round = (2, 1) if quick else (3, 3)
        total = rounds * per_round
        sparsities = (0.9,) if quick else (0.9, 0.95)
        # (label, rewind, epochs per round): one-shot gets one round's worth and the total;
        # IMP gets the total split over rounds, and every round the one-shot budget (the
        # lottery-ticket papers' comparison, where IMP costs `rounds` times more)
        runs = [("one-shot", None, total), ("IMP-lr", "lr", per_round),
                ("IMP-lr, full rounds", "lr", total)]
        recs, per_method = [], {}
        for sparsity in sparsities:
            for seed in range(seeds):
                for label, rewind, epochs in runs:
                    print(f"{label} {sparsity:.0%} seed {seed}", flush=True)
                    t = time.perf_counter()
                    ctx = self.ctx(seed=seed)
                    if rewind is None:
                        pruned = run_pass("prune_unstructured", self.model, ctx,
                                          sparsity=sparsity)
                        model = run_pass("finetune", pruned.model, ctx, epochs=epochs).model
                        spent = epochs
                    else:
                        model = run_pass("prune_unstructured_iterative", self.model, ctx,
                                         sparsity=sparsity, rounds=rounds,
                                         epochs_per_round=epochs, rewind=rewind).model
                        spent = epochs * rounds
                    rec = {"method": label, "target_sparsity": sparsity, "seed": seed,
                           "epochs": spent, "sparsity": overall_sparsity(model),
                           "test_acc": evaluate(model, self.data["test"]),
                           "val_acc": evaluate(model, self.data["val"]),
                           "seconds": round(time.perf_counter() - t, 1)}
                    recs.append(rec)
                    per_method.setdefault((sparsity, label), []).append(rec)
        rows = []
        for (sparsity, label), rs in per_method.items():
            accs = [r["test_acc"] for r in rs]
            base = {r["seed"]: r["test_acc"] for r in per_method[(sparsity, "one-shot")]}
            diffs = [r["test_acc"] - base[r["seed"]] for r in rs]
            wins = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), sum(d < 0 for d in diffs)
            rows.append([f"{sparsity:.0%}", label, rs[0]["epochs"] if label == "one-shot"
                         else f"{rounds} x {rs[0]['epochs'] // rounds}",
                         " / ".join(f"{a:.2%}" for a in accs), f"{mean(accs):.2%}",
                         f"{stdev(accs) * 100:.2f}" if len(accs) > 1 else "—",
                         "—" if label == "one-shot" else f"{mean(diffs) * 100:+.2f}",
                         "—" if label == "one-shot" else "{} / {} / {}".format(*wins),
                         f"{mean(r['val_acc'] for r in rs):.2%}",
                         f"{mean(r['seconds'] for r in rs):.0f}"])
        text = ("## One-shot vs IMP with learning-rate rewinding, several seeds\n\n"
                f"{seeds} training seeds, each shared by all methods (paired). One-shot: prune "
                f"to the target, fine-tune {total} epochs (OneCycle). IMP-lr: {rounds} rounds "
                "removing the same share of the remaining weights, each round retrained with "
                "the whole learning-rate schedule from the current weights; first the same "
                "total epochs as one-shot, then every round the whole one-shot budget. "
                f"Dense test accuracy {self.dense_acc:.2%}.\n\n")
        headers = ["target", "method", "epochs", "test acc per seed", "mean", "std (pts)",
                   "mean Δ vs one-shot (pts)", "wins / ties / losses vs one-shot",
                   "mean val acc", "s per run"]
        return recs, text + markdown_table(headers, rows)

    # ---- pruning at initialization ------------------------------------------------------------
    def at_init(self, quick: bool):
        epochs = 4 if quick else 15
        rows, recs = [], []
        for method, sparsity in (("synflow", 0.8), ("snip", 0.8)):
            print(f"at init {method}", flush=True)
            t = time.perf_counter()
            res = run_pass("prune_at_init", self.model, self.ctx("full"), method=method,
                           sparsity=sparsity, epochs=epochs)
            acc = self.test_acc(res.model)
            rec = {"method": method, "sparsity": res.info["sparsity"], "epochs": epochs,
                   "test_acc": acc, "compressed_bytes": res.info["compressed_bytes"],
                   "dense_bytes": res.info["dense_bytes"],
                   "seconds": round(time.perf_counter() - t, 1)}
            recs.append(rec)
            rows.append([method, f"{rec['sparsity']:.0%}", epochs, f"{acc:.2%}",
                         f"{(acc - self.dense_acc) * 100:+.2f}",
                         f"{rec['dense_bytes'] / rec['compressed_bytes']:.1f}x", rec["seconds"]])
        text = ("## Pruning at initialization (re-initialised, pruned, trained from scratch)\n\n"
                "The dense reference was trained by `advisor example` (its own schedule).\n\n")
        return recs, text + markdown_table(["method", "sparsity", "epochs", "test acc",
                                            "Δ pts vs dense", "smaller (compressed)", "s"], rows)


# ---- CSR Linear ----------------------------------------------------------------------------

def csr_linear(data, quick: bool):
    """A 4096x4096 Linear at 90% (dense vs CSR, in-process) and an MLP on digits."""
    from advisor.examples.models import mlp
    from advisor.measure.latency import measure_speedup
    from advisor.sparse import CSRLinear, time_ms
    from advisor.train import TrainConfig, evaluate, train

    rows, recs = [], []
    torch.manual_seed(0)
    for sparsity in (0.8, 0.9, 0.95):
        lin = torch.nn.Linear(4096, 4096).eval()
        with torch.no_grad():
            w = lin.weight
            w[w.abs() < w.abs().flatten().kthvalue(int(sparsity * w.numel())).values] = 0
        csr = CSRLinear(lin)
        for batch in (1, 8):
            x = torch.randn(batch, 4096)
            d, c = time_ms(lambda: lin(x)), time_ms(lambda: csr(x))
            recs.append({"layer": "4096x4096", "sparsity": sparsity, "batch": batch,
                         "dense_ms": d, "csr_ms": c, "speedup": d / c})
            rows.append(["Linear 4096x4096", f"{sparsity:.0%}", batch, f"{d:.3f}", f"{c:.3f}",
                         f"{d / c:.2f}x", "—"])
    # a whole MLP on digits: train, prune 90% + fine-tune, CSR where faster, timed as deployed
    hidden = (1024, 1024) if quick else (2048, 2048)
    torch.manual_seed(0)
    model = mlp(hidden=hidden)
    train(model, data["train"], TrainConfig(epochs=4, lr=1e-3), progress=False)
    dense_acc = evaluate(model, data["test"])
    ctx = make_ctx(data, None, "finetune")
    pruned = run_pass("prune_unstructured", model, ctx, sparsity=0.9, csr_linear=True,
                      csr_min_sparsity=0.8)
    sparse = run_pass("finetune", pruned.model, ctx, epochs=3).model
    acc = evaluate(sparse, data["test"])
    from advisor.export import save_torch_artifact
    dense_path = save_torch_artifact(model.eval(), OUT / "mlp-dense.pt2", SHAPES["32"])
    sparse_path = save_torch_artifact(sparse, OUT / "mlp-csr.pt2", SHAPES["32"])
    p = measure_speedup(sparse_path, dense_path, "torch", SHAPES["32"], repeats=150,
                        max_seconds=3.0)
    recs.append({"layer": f"MLP {hidden} on digits", "sparsity": 0.9, "batch": 1,
                 "dense_ms": p.reference_p50, "csr_ms": p.p50, "speedup": p.speedup,
                 "csr_layers": pruned.info["csr_layers"], "dense_test_acc": dense_acc,
                 "sparse_test_acc": acc, "artifact": sparse_path.name})
    rows.append([f"MLP {'x'.join(map(str, hidden))} (whole model, torch)", "90%", 1,
                 f"{p.reference_p50:.3f}", f"{p.p50:.3f}", f"{p.speedup:.2f}x",
                 f"{dense_acc:.2%} → {acc:.2%}"])
    text = ("## CSR sparse execution of Linear layers (torch eager)\n\nIn-process medians for "
            "the single layer; the whole MLP is saved as deployed (TorchScript, CSR weights) "
            "and timed against its dense `.pt2` in one fresh process. CSR layers chosen by "
            "the pass after timing each: " + ", ".join(
                f"{n} {v['speedup']:.1f}x" for n, v in pruned.info["csr_layers"].items())
            + ".\n\n")
    return recs, text + markdown_table(["what", "sparsity", "batch", "dense ms", "CSR ms",
                                        "speed-up", "test acc"], rows)


# ---- helpers -------------------------------------------------------------------------------

def make_ctx(data, target, budget: str, shape=SHAPES["32"], seed: int = 0):
    from advisor.passes.base import PassContext, RetrainBudget

    return PassContext(example_inputs=(torch.zeros(shape),), input_shape=shape,
                       train_loader=data["train"], val_loader=data["val"],
                       calib_loader=data["train"], budget=RetrainBudget(budget), target=target,
                       workdir=OUT / "work", progress=False, seed=seed)


if __name__ == "__main__":
    main()
