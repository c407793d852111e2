"""``edgeprune finetune``: recover a pruned model's accuracy by distillation from its original (see edgeprune.finetune).

Exit codes: 0 ok; 1 an error (one line); 2 the fine-tuned model is more than
``--max-accuracy-drop`` points below the original (the figures are printed
and written first); 130 interrupted (the checkpoint is saved: the same
command resumes).
"""

from __future__ import annotations

import sys
import time

import click
from click.core import ParameterSource

from edgeprune.api import finetune_model
from edgeprune.cli._common import Number, emit, json_option, json_stdout
from edgeprune.errors import DistributedError, Interrupted

# Lazy imports: the imports inside functions below load numpy, rich, torch, which importing this module does not;
# they load only when a function that needs them runs.


class _Bar:
    """A progress bar with loss, validation metric and ETA on the terminal's stderr; silent elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.progress = None
        self.task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "start" and info.get("finished"):
            click.echo(f"already fine-tuned with these arguments (step {info['resumed_at']}, {info['checkpoints']}): "
                       "measuring and writing the result again", err=True)
        elif kind == "start" and info.get("resumed_at") is not None:
            click.echo(f"resuming from the checkpoint at step {info['resumed_at']} ({info['checkpoints']}; "
                       "same arguments as the interrupted run)", err=True)
        if not self.tty:
            return
        if kind == "phase" and self.progress is None:
            click.echo(click.style(f"  {info['message']}", dim=True), err=True)
        elif kind == "start":
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("fine-tuning"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[metric]}"),
                TextColumn("{task.fields[speed]}"), TimeRemainingColumn(),
                console=Console(file=sys.stderr), transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=1000, loss="-", metric="-", speed="")
        elif kind == "step" and self.progress is not None:
            rate = info["images"] / info["elapsed_s"] if info["elapsed_s"] else 0
            self.progress.update(self.task, completed=min(1000, int(info["progress"] * 1000)),
                                 loss=f"{info['loss']:.3f}", speed=f"{rate:.0f} img/s")
        elif kind == "eval" and self.progress is not None:
            self.progress.update(self.task, metric=f"{info[info['metric']]:.4f} ({info['metric']})")
        elif kind == "phase" and self.progress is not None:
            self.progress.stop()
            self.progress = None
            click.echo(click.style(f"  {info['message']}", dim=True), err=True)


@click.command()
@click.option("--model", "-m", required=True, metavar="PRUNED.ept", help="The pruned model that `edgeprune prune` wrote.")
@click.option("--data", "-d", required=True, metavar="D",
              help="Class folders, a folder of images (unlabelled), .npy/.npz, pkg.mod:fn, or fashion-mnist / digits.")
@click.option("--output", "-o", required=True, metavar="DIR",
              help="Folder for model.ept, finetune.json, report.md and checkpoints/.")
@click.option("--teacher", default=None, metavar="M",
              help="The unpruned original to distil from (default: the .ept's base with its built-in trained weights).")
@click.option("--trust-factory", default=None, metavar="PKG.MOD:FN",
              help="Allow a .ept file whose base architecture is this Python factory to import and call it "
              "(a model file alone never runs code).")
@click.option("--epochs", type=Number("epochs"), default=None, help="Passes over the training split (default 3).")
@click.option("--steps", type=Number("steps"), default=None, help="Optimiser steps instead of epochs.")
@click.option("--time-budget", type=Number("time_budget"), default=None, metavar="MIN",
              help="Minutes of training instead of epochs (evaluations come on top).")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda", help="Where to train.")
@click.option("--lr", type=Number("lr"), default=None,
              help="Peak learning rate (default: 0.01 sgd, 0.001 adamw).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--batch-size", type=Number("batch_size"), default=64, show_default=True)
@click.option("--temperature", type=Number("temperature"), default=4.0, show_default=True,
              help="Distillation temperature.")
@click.option("--alpha", type=Number("alpha"), default=0.9, show_default=True,
              help="Weight of the distillation term when labels exist (the rest is cross-entropy).")
@click.option("--patience", type=Number("patience"), default=3, show_default=True,
              help="Stop after this many evaluations without a better validation figure.")
@click.option("--augment", type=click.Choice(["none", "shift", "flip+shift"]), default=None,
              help="Training augmentation (default: the model's data hook; shift for your own models).")
@click.option("--val-data", default=None, metavar="D", help="Validation data (default: a seeded split of --data).")
@click.option("--val-fraction", type=Number("val_fraction"), default=0.1,
              show_default=True)
@click.option("--normalize", default=None, metavar="N",
              help="imagenet, unit or MEAN/STD (default: the model's).")
@click.option("--seed", type=Number("seed"), default=0, show_default=True)
@click.option("--limit", type=Number("limit"), default=None, help="Use at most this many images per split.")
@click.option("--max-accuracy-drop", type=Number("max_accuracy_drop"), default=None, metavar="P",
              help="Fail (exit 2) when the fine-tuned model is more than P points below the original.")
@click.option("--threads", type=Number("cpu_threads"), default=None, help="CPU threads (default: torch's).")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Mixed precision (torch.autocast): bf16 on the CPU or GPU, fp16 on GPUs (with a grad scaler).")
@click.option("--nproc-per-node", type=Number("nproc_per_node"), default=None, metavar="N",
              help="Train in N processes on this machine (torchrun, DistributedDataParallel; --batch-size stays "
              "the effective batch). Several machines: run torchrun yourself (README).")
@click.option("--sync-bn", is_flag=True, help="With several processes on GPUs: synchronise BatchNorm statistics.")
@json_option
@click.pass_context
def finetune(ctx, model, data, output, teacher, trust_factory, epochs, steps, time_budget, device, lr, optimizer,
             batch_size, temperature, alpha, patience, augment, val_data, val_fraction, normalize, seed, limit,
             max_accuracy_drop, threads, amp, nproc_per_node, sync_bn, as_json) -> None:
    """Fine-tune a pruned model by distillation from its unpruned original.

    \b
    BatchNorm recalibration first, then KL on the teacher's logits (T=4) plus
    cross-entropy on labels, SGD with a cosine schedule, early stopping on the
    validation split; accuracy of the original, the pruned and the fine-tuned
    model is measured on data fine-tuning never saw. Interrupted? Run the same
    command again: it resumes from the last checkpoint.
    \b
    Example:
      edgeprune finetune -m out/pruned/model.ept --data fashion-mnist -o out/finetuned --epochs 2
      edgeprune finetune -m out/pruned/model.ept --data fashion-mnist -o out/finetuned --nproc-per-node 2
    """
    from edgeprune.finetune.distributed import world_from_env

    world = world_from_env()
    if nproc_per_node and nproc_per_node > 1:
        _launch(ctx, world, nproc_per_node)
        return
    # Below --max-accuracy-drop, AccuracyDropError carries the report: --json prints it with the error.
    try:
        with _Bar() as bar:
            report = finetune_model(
                model, data=data, output=output, teacher=teacher, trust_factory=trust_factory, epochs=epochs,
                steps=steps, time_budget=time_budget, device=device, lr=lr, optimizer=optimizer,
                batch_size=batch_size, temperature=temperature, alpha=alpha, patience=patience, augment=augment,
                val_data=val_data, val_fraction=val_fraction, normalize=normalize, seed=seed, limit=limit,
                max_accuracy_drop=max_accuracy_drop, threads=threads, amp=amp, sync_bn=sync_bn, on_event=bar)
    except (DistributedError, Interrupted) as exc:
        if world.main:
            raise
        time.sleep(2)  # torchrun stops the others when one rank exits: rank 0 first says it (once) and saves
        sys.exit(exc.exit_code)
    if world.main:
        emit(report, as_json=as_json, human=_human)


def _launch(ctx: click.Context, world, nproc: int) -> None:
    """Run this same command in ``nproc`` processes under torchrun (a subprocess), and exit with its status."""
    from edgeprune.finetune.distributed import check_options
    from edgeprune.finetune.launch import launch

    p = ctx.params
    if world.active:
        raise DistributedError("--nproc-per-node inside torchrun: torchrun already started the processes; "
                               "drop --nproc-per-node")
    check_options(world, device=p["device"], time_budget=p["time_budget"], sync_bn=p["sync_bn"], amp=p["amp"],
                  nproc_per_node=nproc)
    args: list[str] = []
    for param in ctx.command.params:
        if param.name == "nproc_per_node" or ctx.get_parameter_source(param.name) == ParameterSource.DEFAULT:
            continue
        flag, value = max(param.opts, key=len), p[param.name]
        if getattr(param, "is_flag", False):
            args += [flag] if value else []
        elif value is not None:
            args += [flag, str(value)]
    # rank 0 prints the --json document on the stdout this process keeps for it
    code = launch(nproc, args, stdout=json_stdout() if p["as_json"] else None)
    sys.exit(code)


def _human(r: dict) -> None:
    acc = r["accuracy"]
    name = "top-1" if r["metric"] == "top1" else "agreement"
    held = r["heldout"]
    click.echo(f"{name} on {held['samples']:,} held-out images ({r['data']['source']} {held['split']} split):")
    for key, label in (("original", "original"), ("pruned", "pruned"), ("bn_recalibrated", "BN recalibrated"),
                       ("finetuned", "fine-tuned")):
        value = acc.get(key)
        click.echo(f"  {label:16s} {'-' if value is None else f'{value:.4f}'}")
    if r.get("drop_points") is not None:
        click.echo(f"  {r['drop_points']:.2f} points below the original"
                   if r["drop_points"] >= 0 else f"  {-r['drop_points']:.2f} points above the original")
    best = r.get("best") or {}
    click.echo(f"{r['steps']} steps ({r['epochs']:g} epochs), stopped: {r['stopped']}; best at epoch "
               f"{best.get('epoch')}; {r['images_per_s']} images/s on {r['device']}"
               + (f"; resumed from step {r['resumed_from_step']}" if r.get("resumed_from_step") else ""))
    for note in r.get("notes") or []:
        click.echo(f"note: {note}")
    click.echo(f"  model  {r['model']}")
