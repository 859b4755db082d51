"""The ``snnc`` command line: convert, calibrate, finetune, eval, run, report, export, inspect, check, passes, backends.

Exit status: 0 on success, 1 when a check finds problems, 2 on a user error (a short
message naming what is wrong and what to do; ``--debug`` shows the traceback), 130 on
Ctrl-C (SIGINT), 143 on SIGTERM. Every output path is checked before any work (an existing
regular file or a new file in an existing directory; not a device, a directory, an input
of the command or another output), and outputs are written atomically, several of them
together: never a partial file, never a temporary file left behind.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from snnc.defaults import (
    DEFAULT_ABLATION_SAMPLES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_CALIBRATION,
    DEFAULT_EVAL_TIMESTEPS,
    DEFAULT_FINETUNE_BATCH,
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_FINETUNE_LR,
    DEFAULT_FINETUNE_PATIENCE,
    DEFAULT_FINETUNE_VAL_FRACTION,
    DEFAULT_GRANULARITY,
    DEFAULT_MAXPOOL,
    DEFAULT_MESSAGE_BITS,
    DEFAULT_NEURON,
    DEFAULT_NIR_DT,
    DEFAULT_REPORT_TIMESTEPS,
    DEFAULT_SEED,
    DEFAULT_THRESHOLD,
    DEFAULT_TIMESTEPS,
    STORE_CHOICES,
)
from snnc.errors import DataError, SnncError
from snnc.utils.scratch import private_torch_cache

err_console = Console(stderr=True, highlight=False)
# Tables are for people: at least 100 columns even when stdout is not a terminal (CI logs).
out_console = Console(highlight=False, width=max(100, Console().width))


# ------------------------------------------------------------------ helpers
class _Task:
    def __init__(self, progress: Progress, task_id):
        self.progress, self.task_id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task_id, n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@contextmanager
def progress_bars(enabled: bool = True):
    """Yield a ``progress(description, total)`` callable drawing rich bars on stderr."""
    if not enabled:
        from snnc.passes.base import null_progress

        yield null_progress
        return
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    with bars:
        yield lambda description, total: _Task(bars, bars.add_task(description, total=total))


def parse_timesteps(text: str) -> list[int]:
    try:
        steps = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers, e.g. 8,16,32") from None
    if not steps or any(t < 1 for t in steps):
        raise click.BadParameter(f"{text!r}: timesteps must be positive integers, e.g. 8,16,32")
    return steps


def calibration_timesteps_option(ctx, param, value: str | None) -> list[int] | None:
    """``--timesteps`` of convert / calibrate: one T or a comma-separated list of distinct T
    (``8,16,32``: one artifact calibrated for all of them)."""
    if value is None:
        return None
    steps = parse_timesteps(value)
    twice = sorted({t for t in steps if steps.count(t) > 1})
    if twice:
        raise click.BadParameter(f"{value!r} lists T={','.join(map(str, twice))} more than once; give each T once, e.g. 8,16,32")
    return sorted(steps)


def load_data(path: str, *, what: str, need_labels: bool = False, labels: bool = True, limit: int | None = None) -> dict[str, np.ndarray]:
    """x (and labels y when the command uses them: ``labels``) from an NPZ file."""
    from snnc.utils.io import load_npz

    optional = ("y",) if labels else ()
    arrays = load_npz(path, required=("x", "y") if need_labels else ("x",), optional=optional, what=what)
    if limit is not None:
        arrays = {k: v[:limit] for k, v in arrays.items() if k in ("x", "y")}
    return arrays


def _set_debug(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.find_root().ensure_object(dict)["debug"] = True


def debug_option(f):
    """``--debug`` is accepted after the command name too (``snnc convert ... --debug``)."""
    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug, help="Show tracebacks for errors.")(f)


class SnncGroup(click.Group):
    """Turns SnncError into a one-line message and exit status 2, and SIGINT / SIGTERM
    (installed by ``snnc.__main__``) into one line and exit status 130 / 143."""

    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as e:
            _interrupted(e)

    def invoke(self, ctx: click.Context) -> Any:
        from snnc.utils import interrupts

        interrupts.written.clear()
        try:
            try:
                return super().invoke(ctx)
            except SnncError as e:
                if ctx.obj and ctx.obj.get("debug"):
                    raise
                err_console.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
                ctx.exit(2)
            except click.UsageError as e:  # a bad option value: one line too, with where to look
                sub = e.ctx.command_path if e.ctx is not None else "snnc"
                from rich.markup import escape

                err_console.print(f"[bold red]error:[/] {escape(e.format_message())} (see `{escape(sub)} --help`)", markup=True, soft_wrap=True)
                ctx.exit(2)
        except KeyboardInterrupt as e:  # also one arriving while an error is printed
            _interrupted(e)


def _interrupted(e: KeyboardInterrupt):
    """One line (whether anything was written) and exit 128 + the signal number."""
    from snnc.utils import interrupts

    interrupts.stop_handling()  # a second Ctrl-C must not turn this into a traceback
    err_console.print(f"[yellow]{interrupts.message(e)}[/]", soft_wrap=True)
    raise click.exceptions.Exit(interrupts.exit_code(e))


def check_outputs(*outputs: tuple[str, str | None], inputs: tuple[tuple[str, str | None], ...] = ()) -> None:
    """Check every output a command will write, before any work (snnc.utils.paths):
    ``outputs`` are ``(option, path)``; an output may be none of ``inputs`` nor another output."""
    from snnc.utils.paths import check_output_path

    done: list[tuple[str, str | None]] = []
    for option, path in outputs:
        if path is not None:
            check_output_path(path, what=option, inputs=inputs, others=done)
            done.append((option, path))


@contextmanager
def ranks(device: str | None):
    """The process group of a torchrun launch (rank 0 of 1 otherwise), left at the end."""
    from snnc import parallel

    group = parallel.init_from_env(device)
    done = False
    try:
        yield group
        done = True
    finally:
        parallel.finish(wait=done)  # no waiting after a failure: the other ranks may never arrive


def scale_options(f):
    """--device, --store, --spill-dir, --check-samples: where and how calibration runs."""
    options = [
        click.option("--device", default="cpu", show_default=True, help="Where the passes (threshold statistics, calibration) run: cpu, cuda, cuda:N. Under torchrun, cuda means each rank's own GPU."),
        click.option("--store", type=click.Choice(STORE_CHOICES), default="auto", show_default=True, help="Where layer-wise calibration keeps spike trains between layers: auto = memory up to 1 GiB, then temporary files; memory; disk; recompute (keep nothing, simulate again)."),
        click.option("--spill-dir", type=click.Path(file_okay=False), default=None, help="Directory for the calibration's temporary files (default: $TMPDIR or /tmp); removed at the end."),
        click.option("--check-samples", type=click.IntRange(min=1), default=128, show_default=True, help="Samples of the import check and of the ANN-vs-SNN check after conversion."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


@click.group(cls=SnncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("-v", "--verbose", count=True, help="Log what the library does (-vv for debug logs).")
@click.version_option(package_name="snnc", prog_name="snnc")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int) -> None:
    """snnc: convert trained ANNs into spiking neural networks, simulate and deploy them."""
    obj = ctx.ensure_object(dict)
    obj["debug"] = debug or obj.get("debug", False)
    private_torch_cache()  # torch would leave $TMPDIR/torchinductor_$USER behind
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    world = os.environ.get("WORLD_SIZE", "1")
    if ctx.invoked_subcommand not in RANKED_COMMANDS and world.isdigit() and int(world) > 1:
        raise SnncError(
            f"snnc {ctx.invoked_subcommand} does not share its work across ranks (only {', '.join(RANKED_COMMANDS)} do); "
            "run it without torchrun"
        )


RANKED_COMMANDS = ("convert", "calibrate", "eval")  # the commands torchrun may launch on several ranks


# ------------------------------------------------------------------ convert
@main.command()
@debug_option
@click.argument("model", type=click.Path())
@click.option(
    "-T", "--timesteps", default=str(DEFAULT_TIMESTEPS), show_default=True, callback=calibration_timesteps_option,
    help="Time steps the SNN is converted (calibrated) for: one T, or a comma-separated list (8,16,32) for one artifact calibrated for all of them (its default T: the largest).",
)  # fmt: skip
@click.option("--calib", "calib_path", type=click.Path(), help="NPZ file with array x: calibration samples.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=DEFAULT_CALIB_SAMPLES, show_default=True, help="Use at most this many calibration samples (seeded subset).")
@click.option("--threshold", default=DEFAULT_THRESHOLD, show_default=True, help="Threshold balancing: max | percentile:P | mse.")
@click.option("--granularity", type=click.Choice(["layer", "channel"]), default=DEFAULT_GRANULARITY, show_default=True, help="One threshold per layer or per channel.")
@click.option("--maxpool", type=click.Choice(["gate", "avg"]), default=DEFAULT_MAXPOOL, show_default=True, help="MaxPool as rate-gated spiking max, or as average pooling.")
@click.option(
    "--calibration",
    type=click.Choice(["none", "light", "advanced"]),
    default=DEFAULT_CALIBRATION,
    show_default=True,
    help="Layer-wise calibration after conversion, for --timesteps: light = calibrate-bias; advanced = calibrate-weights, calibrate-bias, calibrate-potential. (--passes replaces the whole pipeline, calibration included.)",
)
@click.option(
    "--neuron",
    default=DEFAULT_NEURON,
    show_default=True,
    help="Spiking neuron: if (binary spikes), or a low-latency variant: signed (-threshold spikes take back over-firing), burst:K (up to K spikes per step), signed-burst:K. Variants spend more spikes for accuracy at small T.",
)
@click.option(
    "--message-bits",
    type=click.IntRange(2, 9),
    default=DEFAULT_MESSAGE_BITS,
    show_default=True,
    help="Attention networks (transformers): the signed payload of every graded spike between layers, in bits (at most one message per neuron per step).",
)
@click.option(
    "--quantize", default=None, metavar="TARGET",
    help="Hardware-aware calibration: put the SNN on TARGET's fixed-point grid before the calibration passes, which then calibrate the quantised network. TARGET: loihi2 (the lava-fixed backend's grid; needs the lava backend package).",
)  # fmt: skip
@click.option("--passes", "passes", default=None, help="Pass pipeline replacing the default, e.g. 'canonicalize,fold-bn,balance-thresholds{method=mse},insert-if'.")
@click.option("--print-after-all", is_flag=True, help="Print the IR after every pass (stderr).")
@click.option("--time-passes", is_flag=True, help="Print the time each pass took.")
@click.option("-o", "--output", type=click.Path(), help="Artifact to write (default: MODEL's name with .snn).")
@click.option("--report", "report_path", type=click.Path(), help="Also write the conversion report as JSON.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=DEFAULT_SEED, show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--energy-profile", "energy_profiles", multiple=True, help="Energy profile(s) for the operations/energy table, repeatable or comma-separated: cmos45nm, cmos45nm-int8, loihi (default: cmos45nm,loihi).")
@scale_options
@click.pass_context
def convert(ctx, model, timesteps, calib_path, calib_samples, threshold, granularity, maxpool, calibration, neuron, message_bits, quantize, passes, print_after_all, time_passes, output, report_path, batch_size, seed, no_progress, energy_profiles, device, store, spill_dir, check_samples):
    """Convert MODEL (an ONNX file) into a spiking network artifact (.snn).

    Several processes share the work when launched by torchrun, e.g.
    `torchrun --nproc-per-node 4 --no-python snnc convert model.onnx --calib c.npz`:
    each rank takes a shard of the calibration samples, and rank 0 writes the artifact."""
    import snnc

    if not Path(model).exists():
        raise DataError(f"model file {model!r} does not exist")
    if calib_path is None:
        raise SnncError(
            "no calibration data: thresholds are chosen from the network's activations on real inputs. "
            "Pass --calib FILE.npz with an array x of a few hundred training samples, e.g.\n"
            "  python -c \"import numpy as np; np.savez('calib.npz', x=x_train[:512])\""
        )
    output = output if output is not None else str(Path(model).with_suffix(".snn").name)
    check_outputs(("-o", output), ("--report", report_path), inputs=(("the input model", model), ("the calibration file", calib_path)))
    from snnc.analysis.energy import parse_profiles

    profiles = parse_profiles(energy_profiles)  # fail fast on an unknown profile, before any work
    from snnc.passes import parse_neuron

    parse_neuron(neuron)  # and on an unknown neuron
    if quantize is not None:
        if passes is not None:
            raise SnncError(f"--quantize sets the default pipeline's quantisation; with --passes, put quantize{{target={quantize}}} after insert-if")
        from snnc.backend import get_quantizer

        get_quantizer(quantize, max(timesteps))  # and on a target without a quantiser
    calib = load_data(calib_path, what="calibration file", labels=False)["x"]
    with ranks(device) as group:
        printer = None
        if print_after_all and group.is_main:
            printer = lambda name, text: err_console.print(f"[bold]// ----- IR after {name} -----[/]\n{text}", markup=True, highlight=False)  # noqa: E731
        t0 = time.perf_counter()
        with progress_bars(not no_progress and group.is_main) as progress:
            sm = snnc.convert(
                model,
                calib,
                timesteps=timesteps,
                threshold=threshold,
                granularity=granularity,
                maxpool=maxpool,
                calibration=calibration,
                neuron=neuron,
                message_bits=message_bits,
                passes=passes,
                quantize=quantize,
                calib_samples=calib_samples,
                batch_size=batch_size,
                seed=seed,
                check_samples=check_samples,
                device=_local(device),
                store=store,
                spill_dir=spill_dir,
                progress=progress,
                print_after=printer,
            )
        sm.provenance["convert_seconds"] = round(time.perf_counter() - t0, 3)
        if group.is_main:
            _save_and_summarise(sm, output, report_path, profiles, time_passes)


def _save_and_summarise(sm, output: str, report_path: str | None, profiles, time_passes: bool) -> None:
    """Write the artifact (and the JSON report), then print the conversion summary.

    Both are written to temporary files first and renamed into place together at the end
    (all_or_nothing): a failing report leaves no artifact behind, and the other way round."""
    from snnc.utils.io import all_or_nothing, write_json

    with all_or_nothing():
        sm.save(output)
        energy = conversion_energy(sm, profiles)
        report = conversion_report(sm, output, energy)
        if report_path:
            write_json(report_path, report)
    print_conversion_summary(sm, output, time_passes, energy)


# ---------------------------------------------------------------- calibrate
@main.command("calibrate")
@debug_option
@click.argument("artifact", type=click.Path())
@click.option("--calib", "calib_path", required=True, type=click.Path(), help="NPZ file with array x: calibration samples.")
@click.option("-T", "--timesteps", default=None, callback=calibration_timesteps_option, help="Time steps to calibrate for: one T or a comma-separated list, e.g. 8,16,32 (default: the artifact's).")
@click.option("--calibration", type=click.Choice(["light", "advanced"]), default="light", show_default=True, help="light = calibrate-bias; advanced = calibrate-weights, calibrate-bias, calibrate-potential.")
@click.option("--passes", "passes", default=None, help="SNN-stage passes to run instead, e.g. 'calibrate-bias{samples=512}'.")
@click.option("--quantize", default=None, metavar="TARGET", help="Calibrate as quantised for TARGET's fixed-point grid (loihi2: the lava-fixed backend's), as in convert.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=DEFAULT_CALIB_SAMPLES, show_default=True, help="Use at most this many calibration samples (seeded subset).")
@click.option("-o", "--output", required=True, type=click.Path(), help="Artifact to write (a new file; ARTIFACT itself is not changed).")
@click.option("--report", "report_path", type=click.Path(), help="Also write the conversion report as JSON.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=DEFAULT_SEED, show_default=True)
@click.option("--time-passes", is_flag=True, help="Print the time each pass took.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@scale_options
def calibrate_cmd(artifact, calib_path, timesteps, calibration, passes, quantize, calib_samples, output, report_path, batch_size, seed, time_passes, no_progress, device, store, spill_dir, check_samples):
    """Calibrate a converted ARTIFACT (.snn) again, e.g. for another T: runs the layer-wise
    calibration passes against the ANN the artifact stores and writes a new artifact."""
    import snnc

    check_outputs(("-o", output), ("--report", report_path), inputs=(("the artifact being calibrated", artifact), ("the calibration file", calib_path)))
    sm = snnc.load(artifact)
    calib = load_data(calib_path, what="calibration file", labels=False)["x"]
    with ranks(device) as group:
        t0 = time.perf_counter()
        with progress_bars(not no_progress and group.is_main) as progress:
            new = snnc.calibrate(
                sm, calib, timesteps=timesteps, calibration=calibration, passes=passes, quantize=quantize, calib_samples=calib_samples, batch_size=batch_size, seed=seed,
                check_samples=check_samples, device=_local(device), store=store, spill_dir=spill_dir, progress=progress,
            )  # fmt: skip
        new.provenance["recalibrated"]["seconds"] = round(time.perf_counter() - t0, 3)
        if group.is_main:
            _save_and_summarise(new, output, report_path, None, time_passes)


# ----------------------------------------------------------------- finetune
@main.command("finetune")
@debug_option
@click.argument("artifact", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(), help="NPZ with x and integer labels y: the training samples (a seeded --val-fraction of them is held out).")
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULT_FINETUNE_EPOCHS, show_default=True, help="Epochs at most (early stopping on validation accuracy, see --patience).")
@click.option("--loss", type=click.Choice(["tet", "ce"]), default="tet", show_default=True, help="tet: mean over steps of the per-step cross-entropy + 1e-3 MSE regulariser (TET, Deng et al. 2022); ce: cross-entropy of the time-averaged output.")
@click.option("-T", "--timesteps", type=click.IntRange(min=1), default=None, help="Time steps to train at (default: the artifact's).")
@click.option("-o", "--output", type=click.Path(), default=None, help="Artifact to write (default: ARTIFACT's name with _finetuned.snn, next to it; ARTIFACT itself is not changed).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=DEFAULT_FINETUNE_VAL_FRACTION, show_default=True, help="Fraction of the samples held out for validation (seeded; 0: none, keep the last epoch).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_FINETUNE_LR, show_default=True, help="Adam learning rate (cosine schedule over --epochs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_FINETUNE_BATCH, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=DEFAULT_FINETUNE_PATIENCE, show_default=True, help="Stop after this many epochs without a better validation accuracy.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N samples of --data.")
@click.option("--device", default="cpu", show_default=True, help="Where training runs: cpu, cuda, cuda:N.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=DEFAULT_SEED, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the fine-tuning record as one JSON object to stdout.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def finetune_cmd(artifact, data_path, epochs, loss, timesteps, output, val_fraction, lr, batch_size, patience, limit, device, seed, as_json, no_progress):
    """Fine-tune a converted ARTIFACT (.snn) as the spiking network it is: surrogate gradients
    and BPTT over T steps train its synaptic weights and biases (same graph, same neurons,
    same spike constraints); the best epoch on the validation split is written to a new artifact."""
    import snnc
    from snnc.backend import resolve_device
    from snnc.utils.io import all_or_nothing

    output = output if output is not None else str(Path(artifact).with_name(Path(artifact).stem + "_finetuned.snn"))
    check_outputs(("-o", output), inputs=(("the artifact being fine-tuned", artifact), ("the data file", data_path)))
    resolve_device(device)  # a clear error for a missing GPU before anything loads
    sm = snnc.load(artifact)
    data = load_data(data_path, what="training data file", need_labels=True, limit=limit)
    with progress_bars(not (no_progress or as_json)) as progress:
        new = snnc.finetune(
            sm, data["x"], data["y"], timesteps=timesteps, epochs=epochs, loss=loss, lr=lr, batch_size=batch_size,
            val_fraction=val_fraction, patience=patience, device=device, seed=seed, progress=progress,
        )  # fmt: skip
    with all_or_nothing():
        new.save(output)
    rec = new.provenance["finetuned"][-1]
    if as_json:
        click.echo(json.dumps({"artifact": output, **rec}))
        return
    table = Table(title=f"Fine-tuning {Path(artifact).name} at T={rec['timesteps']} ({rec['loss']} loss, lr {rec['lr']:g}, {rec['train_samples']} training samples)")
    for col in ("epoch", "training loss", "validation accuracy"):
        table.add_column(col, justify="right", overflow="fold")
    for h in rec["history"]:
        acc = "-" if h["val_accuracy"] is None else f"{100 * h['val_accuracy']:.2f}%"
        table.add_row(str(h["epoch"]) + (" (best)" if h["epoch"] == rec["best_epoch"] and rec["val_samples"] else ""), "-" if h["train_loss"] is None else f"{h['train_loss']:.4f}", acc)
    out_console.print(table)
    stop = " (stopped early)" if rec["early_stopped"] else ""
    out_console.print(f"{rec['epochs_run']} epoch(s){stop} in {rec['seconds']:.1f} s; kept epoch {rec['best_epoch']}; wrote {output}")


def _local(device: str) -> str:
    from snnc import parallel

    return parallel.local_device(device)


def conversion_energy(sm, profiles=None) -> dict[str, Any] | None:
    """Operations and energy estimated from the conversion check's spike rates (None
    without a conversion check)."""
    cc = sm.provenance.get("conversion_check") or {}
    if not cc.get("spike_rates"):
        return None
    from snnc.analysis.energy import DEFAULT_PROFILES, estimate_energy

    try:
        return estimate_energy(sm, cc["spike_rates"], cc["timesteps"], profiles or DEFAULT_PROFILES, samples=cc["samples"])
    except SnncError as e:  # the artifact is written already: an estimate must not fail the conversion
        err_console.print(f"[yellow]notice:[/] no operations/energy estimate: {e}")
        return None


def conversion_report(sm, artifact: str, energy: dict[str, Any] | None = None) -> dict[str, Any]:
    report = {"artifact": artifact, "provenance": sm.provenance, "layers": sm.thresholds()}
    if energy is not None:
        report["energy"] = energy
    return report


def print_conversion_summary(sm, output: str, time_passes: bool, energy: dict[str, Any] | None = None) -> None:
    prov = sm.provenance
    for note in prov.get("notices", []):
        out_console.print(f"[yellow]notice:[/] {note}")
    rates = (prov.get("conversion_check") or {}).get("spike_rates", {})
    table = Table(title=f"Spiking layers ({len(sm.thresholds())}), converted for T={','.join(map(str, sm.calibrated_for))}")
    for col in ("layer", "shape", "threshold", "per-channel", "v(0)/θ", "spike rate"):
        table.add_column(col, justify="right" if col not in ("layer",) else "left", overflow="fold")
    for row in sm.thresholds():
        th = f"{row['threshold']:.4g}" if not row["per_channel"] else f"{row['threshold_min']:.3g}..{row['threshold_max']:.3g}"
        rate = rates.get(row["layer"])
        table.add_row(row["layer"], "x".join(map(str, row["shape"])), th, "yes" if row["per_channel"] else "no", f"{row['v_init_over_threshold']:.2f}", f"{rate:.3f}" if rate is not None else "-")
    out_console.print(table)
    if time_passes:
        pt = Table(title="Pass timing")
        pt.add_column("pass", overflow="fold")
        pt.add_column("changed", overflow="fold")
        pt.add_column("seconds", justify="right", overflow="fold")
        for p in prov["passes"]:
            pt.add_row(p["name"], "yes" if p["changed"] else "no", f"{p['seconds']:.3f}")
        out_console.print(pt)
    for key, rec in (prov.get("records") or {}).items():
        if not key.startswith("calibrate-"):
            continue
        at_t = ",".join(map(str, rec.get("calibrated_for") or [rec["timesteps"]])) + (" (pooled)" if rec.get("calibrated_for") else "")
        ct = Table(title=f"{key} at T={at_t} on {rec['samples']} samples ({rec['seconds']:.1f} s): SNN − ANN output per layer")
        for col in ("layer", "mean before", "mean after", "RMS before", "RMS after"):
            ct.add_column(col, justify="left" if col == "layer" else "right", overflow="fold")
        for layer in rec["layers"]:
            b, a = layer["before"], layer["after"]
            ct.add_row(layer["layer"], f"{b['mean']:+.4f}", f"{a['mean']:+.4f}", f"{b['rms']:.4f}", f"{a['rms']:.4f}")
        out_console.print(ct)
    if energy is not None:
        from snnc.analysis.energy import print_energy_table

        print_energy_table(out_console, energy, where="calibration")
    ic = prov.get("import_check") or {}
    cc = prov.get("conversion_check") or {}
    summary = Table(show_header=False, title="Summary")
    summary.add_column("", style="bold", overflow="fold")
    summary.add_column("", overflow="fold")
    src = prov.get("source", {})
    summary.add_row("model", f"{src.get('path', src.get('class', '?'))} (sha256 {src.get('sha256', '?')[:12]}…)")
    summary.add_row("pipeline", prov["pipeline"])
    summary.add_row("calibration", f"{prov.get('calibration', 'none')} ({prov['calibration_samples']} samples)")
    q = prov.get("quantized")
    if isinstance(q, dict):
        summary.add_row("quantized", f"for {q.get('target')} (the {q.get('backend')} backend's fixed-point grid, T={q.get('timesteps')}): calibrated as quantised")
    if ic:
        summary.add_row("import check", f"max |IR − {ic['reference']}| = {ic['max_abs_error']:.2e} on {ic['samples']} samples")
    if cc:
        summary.add_row(
            f"SNN vs ANN (T={cc['timesteps']})",
            f"argmax agreement {100 * cc['agreement']:.1f}% on {cc['samples']} calibration samples; mean |Δoutput| {cc['mean_abs_output_error']:.3g}",
        )
    summary.add_row("time", f"{prov.get('convert_seconds', 0):.1f} s")
    rec = prov.get("recalibrated")
    if rec:
        summary.add_row("recalibrated", f"{rec['passes']} for T={','.join(map(str, rec.get('calibrated_for') or [rec['timesteps']]))} (was T={rec['from_timesteps']}), {rec.get('seconds', 0):.1f} s")
    summary.add_row("artifact", output)
    out_console.print(summary)


# --------------------------------------------------------------------- eval
@main.command("eval")
@debug_option
@click.argument("artifact", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(), help="NPZ with x and optionally integer labels y.")
@click.option(
    "-T", "--timesteps", "timesteps_text", default=None,
    help=f"Comma-separated T values (default: the T the artifact was calibrated for when it lists several, else {','.join(map(str, DEFAULT_EVAL_TIMESTEPS))}).",
)  # fmt: skip
@click.option("--backend", default="reference", show_default=True, help="Backend to run on (see `snnc backends`).")
@click.option("--device", default=None, help="Device for the backend: cpu, cuda, cuda:N (default: the backend's choice; spikingjelly uses CUDA when available).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout instead of tables.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Samples per simulation batch (default: from T).")
@click.option("--encoding", type=click.Choice(["direct", "poisson"]), default="direct", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N samples.")
@click.option("--fail-under", type=click.FloatRange(0, 100), default=None, help="Exit with status 1 when the SNN's accuracy (%) at the largest T is below this (CI gate; needs labels).")
@click.option("--vs-float/--no-vs-float", default=None, help="Also run the float SNN (reference simulator) and compare (default: on for lava-fixed).")
@click.option("--energy", "energy_profiles", default=None, help="Also estimate operations and energy from the spike rates measured at the largest T, on these profiles (comma-separated: cmos45nm, cmos45nm-int8, loihi; 'default' for cmos45nm,loihi).")
@click.option("--placement", "placement_path", default=None, type=click.Path(), help="Run the network as placed on chip cores by `snnc map` (its placement JSON): one Lava process per block (lava, lava-fixed); the outputs equal the unplaced run's.")
@click.option("--no-progress", is_flag=True)
def eval_cmd(artifact, data_path, timesteps_text, backend, device, as_json, batch_size, encoding, limit, fail_under, vs_float, energy_profiles, placement_path, no_progress):
    """Evaluate ARTIFACT on a data set: accuracy and ANN agreement for each T.

    Exit status 1 when --fail-under is given and the accuracy at the largest T is below it.
    Under torchrun (`torchrun --nproc-per-node N --no-python snnc eval ...`) each rank
    simulates a shard of the samples and rank 0 prints the results."""
    import snnc

    steps = parse_timesteps(timesteps_text) if timesteps_text is not None else None
    profiles = None
    if energy_profiles is not None:
        from snnc.analysis.energy import parse_profiles

        profiles = parse_profiles(None if energy_profiles == "default" else energy_profiles)  # fail fast on an unknown name
    if placement_path is not None and backend not in PLACEMENT_BACKENDS:
        raise SnncError(f"--placement runs only on the {' and '.join(PLACEMENT_BACKENDS)} backends (got --backend {backend}): add --backend lava-fixed")
    sm = snnc.load(artifact)
    placement = None
    if placement_path is not None:
        from snnc.mapping.placement_file import load_placement

        placement = load_placement(placement_path, sm.snn)  # before any work: made for this artifact, well formed
    if steps is None:  # an artifact calibrated for several T is evaluated at those
        steps = sm.calibrated_for if len(sm.calibrated_for) > 1 else list(DEFAULT_EVAL_TIMESTEPS)
    if fail_under is not None and fail_under != fail_under:  # NaN passes FloatRange
        raise click.BadParameter("--fail-under must be a number from 0 to 100, got nan")
    data = load_data(data_path, what="data file", limit=limit, need_labels=fail_under is not None)
    compare = (backend == "lava-fixed" if vs_float is None else vs_float) and backend != "reference"
    with ranks(device) as group:
        with progress_bars(not (no_progress or as_json) and group.is_main) as progress:
            res = snnc.evaluate(
                sm, data["x"], data.get("y"), timesteps=steps, backend=backend, device=device and _local(device), batch_size=batch_size,
                encoding=encoding, compare_reference=compare, progress=progress, **({"placement": placement} if placement is not None else {}),
            )  # fmt: skip
    gate = _fail_under(res, fail_under)
    if not group.is_main:  # every rank holds the same results; rank 0 prints them
        if gate is not None and not gate["passed"]:
            sys.exit(1)
        return
    energy = None
    if profiles is not None:
        from snnc.analysis.energy import estimate_energy

        energy = estimate_energy(sm, res["spike_rates"], max(steps), profiles, samples=res["samples"])
    if as_json:
        out = {k: res[k] for k in ("backend", "ann_accuracy", "results")}
        if res["details"]:
            out["details"] = res["details"]
        if energy is not None:
            out["energy"] = energy
        if gate is not None:
            out["fail_under"] = gate
        click.echo(json.dumps(out))
    else:
        print_eval(res, artifact, backend, compare)
        if res["details"].get("placement"):
            print_placement_run(res["details"]["placement"])
        if energy is not None:
            from snnc.analysis.energy import print_energy_table

            print_energy_table(out_console, energy, where="evaluation")
        if gate is not None:
            style = "red" if not gate["passed"] else "green"
            err_console.print(f"[{style}]{gate['message']}[/]")
    if gate is not None and not gate["passed"]:
        sys.exit(1)


PLACEMENT_BACKENDS = ("lava", "lava-fixed")  # the backends that emulate a placement (eval --placement)


def print_placement_run(info: dict) -> None:
    """One line: how the placed run was laid out."""
    extra = f"; not on a core: {', '.join(info['not_on_cores'])}" if info["not_on_cores"] else ""
    host = f"; on the host: {', '.join(info['host_layers'])}" if info["host_layers"] else ""
    out_console.print(
        f"placement {Path(info['file']).name} ({info['target']}): {info['blocks']} blocks on {info['cores']} cores of {info['chips']} chip(s), "
        f"{info['processes']} Lava processes ({info.get('routers', 0)} of them routers gathering a cut layer){extra}{host}",
        markup=False,
        soft_wrap=True,
    )


def _fail_under(res: dict, threshold: float | None) -> dict | None:
    """The --fail-under verdict on the accuracy at the largest T (None without a gate)."""
    if threshold is None:
        return None
    last = res["results"][-1]
    acc = 100 * last["accuracy"]
    passed = acc + 1e-9 >= threshold  # 29/100 is 28.999999999999996 % in floating point
    word = "passes" if passed else "FAILS"
    gap = f"{acc - threshold:+.2f} points"
    msg = f"{word} --fail-under {threshold:g}: accuracy at T={last['timesteps']} on the {res['backend']} backend is {acc:.2f}% ({gap})"
    return {"threshold": threshold, "timesteps": last["timesteps"], "accuracy": acc, "margin": acc - threshold, "passed": passed, "message": msg}


def print_eval(res: dict, artifact: str, backend: str, compare: bool) -> None:
    table = Table(title=f"{Path(artifact).name} on {res['samples']} samples ({backend} backend)")
    cols = ["T", "SNN accuracy", "ANN accuracy", "agreement with ANN"]
    if compare:
        cols += ["float SNN accuracy", "agreement with float SNN"]
    for col in cols:
        table.add_column(col, justify="right", overflow="fold")
    ann = res["ann_accuracy"]
    pct = lambda v: f"{100 * v:.2f}%" if v is not None else "-"  # noqa: E731
    for r in res["results"]:
        row = [str(r["timesteps"]), pct(r["accuracy"]), pct(ann), pct(r["agreement"])]
        if compare:
            row += [pct(r.get("reference_accuracy")), pct(r.get("reference_agreement"))]
        table.add_row(*row)
    out_console.print(table)
    if res.get("spike_rates"):
        mean_rate = float(np.mean(list(res["spike_rates"].values())))
        out_console.print(f"mean spike rate at T={res['results'][-1]['timesteps']}: {mean_rate:.3f} spikes per neuron per step")
    dep = res.get("details", {}).get("deployment")
    if dep:
        print_deployment(dep)


def print_deployment(dep: dict) -> None:
    """The lava-fixed deployment report: per-layer scaling, quantisation error, resources."""
    table = Table(title="Loihi fixed-point deployment (lava-fixed)")
    for col in ("layer", "vth", "synapses: weight exp / max |mantissa| / weight error", "bias error", "neurons", "connections", "max fan-in", "cores"):
        table.add_column(col, overflow="fold", justify="left" if col.startswith(("layer", "syn")) else "right")
    for L in dep["layers"]:
        syn = "; ".join(f"{s['node']}: 2^{s['weight_exp']} / {s['max_mantissa']} / {100 * s['relative_rms_error']:.2f}%" for s in L["synapses"]) or "(bias only)"
        table.add_row(
            L["layer"], str(L["vth"]), syn, f"{100 * L['bias_relative_rms_error']:.3f}%", f"{L['neurons']:,}",
            f"{L['connections']:,}", f"{L['max_fan_in']:,}", str(L["cores"]),
        )  # fmt: skip
    out_console.print(table)
    r = dep["resources"]
    lim = r["limits"]
    out_console.print(
        f"Loihi 2 estimate: {r['neurons']:,} neurons, {r['connections']:,} synaptic connections, {r['cores']} cores "
        f"(chip: {lim['cores_per_chip']} cores, {lim['neurons_per_chip']:,} neurons, {lim['synapses_per_chip']:,} synapses) -> "
        + ("fits one chip" if r["fits_one_chip"] else f"{r['chips']} chips")
    )


# ------------------------------------------------------------------- report
@main.command("report")
@debug_option
@click.argument("artifact", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(), help="NPZ with x and (preferably) integer labels y.")
@click.option("-T", "--timesteps", "timesteps_text", default=",".join(map(str, DEFAULT_REPORT_TIMESTEPS)), show_default=True, help="T values for accuracy vs timesteps.")
@click.option("--at", "at", type=click.IntRange(min=1), default=None, help="T of the per-layer analysis (default: the T the artifact was converted for).")
@click.option("-o", "--output", "output", default=None, type=click.Path(), help="Directory to write (default: ARTIFACT without .snn, plus .report/).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N samples.")
@click.option("--ablation-samples", type=click.IntRange(min=0), default=DEFAULT_ABLATION_SAMPLES, show_default=True, help="Samples for the per-layer ablations (seeded subset; 0 skips them).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Samples per simulation batch (default: from T).")
@click.option("--json", "as_json", is_flag=True, help="Print the report's JSON to stdout instead of the findings.")
@click.option("--no-progress", is_flag=True)
def report_cmd(artifact, data_path, timesteps_text, at, output, limit, ablation_samples, batch_size, as_json, no_progress):
    """Why ARTIFACT's accuracy moved, what it costs, what to change: an HTML report.

    Writes index.html, report.json and PNG plots to the output directory: accuracy and ANN
    agreement vs T, per-layer thresholds, spike rates, saturated/silent neurons and errors,
    each layer's own accuracy loss (by ablation), operations and energy, and ranked findings."""
    import snnc
    from snnc.analysis.report import build_report, write_report

    steps = parse_timesteps(timesteps_text)
    from snnc.analysis.report import REPORT_FILES
    from snnc.utils.paths import check_output_path

    out_dir = output if output is not None else (str(Path(artifact).with_suffix("")) + ".report")
    check_output_path(out_dir, what="-o", kind="dir", contents=REPORT_FILES, inputs=(("the artifact", artifact), ("the data file", data_path)))
    sm = snnc.load(artifact)
    data = load_data(data_path, what="data file", limit=limit)
    with progress_bars(not (no_progress or as_json)) as progress:
        rep = build_report(
            sm, data["x"], data.get("y"), timesteps=steps, at=at, ablation_samples=ablation_samples, batch_size=batch_size,
            progress=progress, artifact=artifact, data=data_path,
        )  # fmt: skip
    page = write_report(rep, out_dir)
    if as_json:  # exactly the report.json written next to the page
        click.echo(page.with_name("report.json").read_text().strip())
        return
    diag = rep["diagnostics"]
    best = diag["target"]["smallest_T"]
    out_console.print(
        f"ANN {diag['metric']} {100 * diag['ann_accuracy']:.2f} %; SNN "
        + ", ".join(f"T={r['timesteps']}: {100 * r['accuracy']:.2f} %" for r in diag["timesteps"])
        + f"; smallest T reaching 99 % of the ANN: {best if best else 'none evaluated'}"
    )
    out_console.print("[bold]Findings[/] (ranked by the accuracy at stake):")
    for f in rep["findings"]:
        imp = f"[{100 * f['impact']:.1f} pts] " if f.get("impact") else ""
        out_console.print(f"  {f['rank']}. {imp}{f['text']}", markup=False, soft_wrap=True)
    out_console.print(f"report: {page}")


# ---------------------------------------------------------------------- run
@main.command("run")
@debug_option
@click.argument("artifact", type=click.Path())
@click.option("--input", "input_path", required=True, type=click.Path(), help="NPZ with array x.")
@click.option("-T", "--timesteps", type=click.IntRange(min=1), default=None, help="Time steps (default: the artifact's).")
@click.option("--backend", default="reference", show_default=True, help="Backend to run on (see `snnc backends`).")
@click.option("--device", default=None, help="Device for the backend: cpu, cuda, cuda:N (default: the backend's choice; spikingjelly uses CUDA when available).")
@click.option("-o", "--output", required=True, type=click.Path(), help="NPZ to write (array outputs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--encoding", type=click.Choice(["direct", "poisson"]), default="direct", show_default=True)
@click.option("--no-progress", is_flag=True)
def run_cmd(artifact, input_path, timesteps, backend, device, output, batch_size, encoding, no_progress):
    """Run ARTIFACT on inputs; write the time-averaged outputs as array `outputs` (a model
    with several outputs: `outputs`, `outputs_1`, ...)."""
    import snnc
    from snnc.utils.io import write_npz

    check_outputs(("-o", output), inputs=(("the artifact", artifact), ("the input file", input_path)))
    sm = snnc.load(artifact)
    x = load_data(input_path, what="input file", labels=False)["x"]
    T = timesteps or sm.timesteps
    with progress_bars(not no_progress) as progress:
        res = sm.simulate(x, T, backend=backend, device=device, batch_size=batch_size, encoding=encoding, progress=progress)
    # every graph output: the first as `outputs`, further ones as outputs_1, outputs_2, ...
    arrays = {("outputs" if i == 0 else f"outputs_{i}"): out for i, out in enumerate(res.outputs[T])}
    write_npz(output, **arrays)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    err_console.print(f"wrote {output}: {shapes} (T={T}, {backend})")


# ------------------------------------------------------------------- export
@main.command("export")
@debug_option
@click.argument("artifact", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["nir"]), default="nir", show_default=True, help="Exchange format: nir (Neuromorphic Intermediate Representation, HDF5).")
@click.option("-o", "--output", type=click.Path(), help="File to write (default: ARTIFACT's name with .nir).")
@click.option(
    "--reset",
    type=click.Choice(["soft", "hard"]),
    default="soft",
    show_default=True,
    help="soft: the converted network exactly (subtract reset built from NIR integrators, thresholds and scales); "
    "hard: NIR IF neurons that reset to zero, threshold 1 (SpikingJelly imports it; a different network, see docs/nir.md).",
)
@click.option("--dt", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_NIR_DT, show_default=True, help="Step length: integrators are written with r = 1/dt (one step adds the input once).")
def export_cmd(artifact, fmt, output, reset, dt):
    """Export ARTIFACT (.snn) to an exchange format other neuromorphic tools read."""
    import snnc
    from snnc.export import export_nir

    output = output if output is not None else str(Path(artifact).with_suffix(".nir").name)
    check_outputs(("-o", output), inputs=(("the artifact being exported", artifact),))
    sm = snnc.load(artifact)  # a clear error when it is missing or not an artifact
    summary = export_nir(sm, output, reset=reset, dt=dt)
    print_export_summary(summary)


def print_export_summary(s) -> None:
    table = Table(show_header=False, title=f"Exported {s.format.upper()} ({s.reset} reset)")
    table.add_column("", style="bold", overflow="fold")
    table.add_column("", overflow="fold")
    table.add_row("file", f"{s.path} ({s.bytes / 1024:.1f} KiB)")
    table.add_row("nodes", f"{s.nodes} ({', '.join(f'{k} {v}' for k, v in sorted(s.node_types.items()))}); {s.edges} edges")
    table.add_row("spiking layers", str(s.spiking_layers))
    neuron = "subtract reset: I + Threshold + Scale(−θ) feedback, exact" if s.reset == "soft" else "NIR IF, reset to zero, threshold 1, starts at 0"
    table.add_row("reset", f"{s.reset} ({neuron})")
    table.add_row("steps", f"dt = {s.dt:g} (r = 1/dt); converted for T = {s.timesteps if s.timesteps is not None else '?'}")
    table.add_row("readout", "integrator I: divide its output by t" if s.reset == "soft" else "last layer's current: average it over the steps")
    table.add_row("SpikingJelly import", "yes" if s.spikingjelly else f"no: {s.spikingjelly_reason}")
    out_console.print(table)
    for note in s.notes:
        out_console.print(f"[yellow]notice:[/] {note}")
    if s.reset == "hard":
        out_console.print("[yellow]notice:[/] the hard variant is a different network (reset to zero, v_init dropped); measure its accuracy before use (docs/nir.md)")


# ------------------------------------------------------------------ map
@main.command("map")
@debug_option
@click.argument("artifact", type=click.Path())
@click.option("--target", "target", required=True, help="A shipped target (loihi2, speck, spinnaker2, generic: `snnc map --list-targets`) or a path to your own .toml.")
@click.option("--chips", type=click.IntRange(min=1), default=1, show_default=True, help="Chips available (a target's board links at most its max_chips).")
@click.option("--data", "data_path", default=None, type=click.Path(), help="NPZ (x) to measure the spike traffic on (default: every neuron assumed at --rate).")
@click.option("--limit", type=click.IntRange(min=1), default=64, show_default=True, help="Samples of --data to measure on.")
@click.option("-T", "--timesteps", "timesteps", type=click.IntRange(min=1), default=None, help="T to measure the traffic at (default: the T the artifact was converted for).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True, max=1), default=None, help="Assumed messages per neuron per step without --data (default 0.1).")
@click.option("--naive", is_flag=True, help="Place with the naive baseline (layers in order, filling cores) instead.")
@click.option("-o", "--output", default=None, type=click.Path(), help="Placement JSON to write (default: ARTIFACT without .snn, plus .placement.json); a PNG heat map is written next to it.")
@click.option("--json", "as_json", is_flag=True, help="Print the placement as JSON to stdout instead of the tables.")
@click.option("--no-progress", is_flag=True)
def map_cmd(artifact, target, chips, data_path, limit, timesteps, rate, naive, output, as_json, no_progress):
    """Place ARTIFACT's layers onto the cores of a neuromorphic chip within their budgets.

    Cuts each layer into core-sized blocks, places them (networkx: traffic-weighted, fewest
    spikes between chips, then between cores), checks every budget of every core (neurons,
    synapses, fan-in, fan-out, destinations, layers per core), and prints per-core
    utilisation, traffic per link, estimated time and energy per step. Writes the placement
    (JSON, for `snnc eval --backend lava-fixed --placement`) and a heat map of the cores.
    Exit status 2 when the network does not fit, naming the budget and what to change."""
    import snnc
    from snnc.mapping.api import map_model
    from snnc.mapping.placement_file import placement_header, save_placement
    from snnc.mapping.plot import plot_placement
    from snnc.mapping.targets import load_target
    from snnc.mapping.traffic import DEFAULT_RATE

    if data_path is not None and rate is not None:
        raise DataError("give either --data (measured traffic) or --rate (assumed traffic), not both")
    out = output if output is not None else str(Path(artifact).with_suffix("")) + ".placement.json"
    png = str(Path(out).with_suffix(".png"))
    check_outputs(("-o", out), ("the heat map", png), inputs=(("the artifact", artifact), ("the data file", data_path)))
    t = load_target(target)
    if chips > t.max_chips:
        raise DataError(f"--chips {chips}: a {t.name} system links at most {t.max_chips} chips ({t.path})")
    sm = snnc.load(artifact)
    T = timesteps or sm.timesteps
    x = load_data(data_path, what="data file", labels=False, limit=limit)["x"] if data_path is not None else None
    with progress_bars(not (no_progress or as_json)) as progress:
        rep = map_model(sm.snn, t, chips=chips, x=x, timesteps=T, rate=rate or DEFAULT_RATE, naive=naive, progress=progress)
    doc = {**placement_header(sm.snn, t.name, chips), **rep}
    save_placement(out, doc)
    plot_placement(rep, t.cores_per_chip, png, title=f"{Path(artifact).name} on {t.name}")
    if as_json:
        click.echo(json.dumps(doc, default=float))
        return
    print_placement(rep, t, out, png)


def _short(v: float) -> str:
    """12,345 -> 12.3k (tables that must fit a terminal)."""
    v = float(v)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


def print_placement(rep: dict, t, out: str, png: str) -> None:
    from snnc.mapping.plot import legend

    s = rep["summary"]
    table = Table(title=f"{s['layers']} layers in {s['blocks']} blocks on {s['cores_used']} {t.name} cores ({s['chips_used']} of {s['chips']} chip(s))")
    budgets = [k for k in ("neurons", "synapses", "fan_in", "fan_out", "destinations", "layers") if any(r["budget"][k] is not None for r in rep["cores"])]
    for col in ["chip:core", "layers", *[k.replace("_", "-") for k in budgets], "synops/step"]:
        table.add_column(col, justify="left" if col == "layers" else "right", overflow="fold")
    names = {line.split(" = ")[1]: line.split(" = ")[0] for line in legend(rep)}
    rows = rep["cores"]
    shown = rows if len(rows) <= 40 else rows[:20] + rows[-10:]
    for i, r in enumerate(shown):
        if len(rows) > 40 and i == 20:
            table.add_row("...", f"({len(rows) - 30} more cores in the JSON)", *[""] * (len(budgets) + 1))
        cells = [f"{_short(r['used'][k])} {100 * r['utilisation'][k]:.0f}%" if r["utilisation"][k] is not None else _short(r["used"][k]) for k in budgets]
        table.add_row(f"{r['chip']}:{r['core']}", ",".join(names[n] for n in r["layers"]), *cells, _short(r["synops_per_step"]))
    out_console.print(table)
    out_console.print("layers: " + "; ".join(legend(rep)))
    traffic = rep.get("traffic", {})
    how = f"measured on {traffic['samples']} samples at T={traffic['timesteps']}" if traffic.get("source") == "measured" else f"assumed {traffic.get('rate')} messages per neuron per step"
    out_console.print(
        f"traffic ({how}): {s['spikes_per_step_between_cores']:,.1f} spikes/step between cores, {s['spikes_per_step_between_chips']:,.1f} between chips"
        + "".join(f"; chip {c['src']}->{c['dst']}: {c['spikes_per_step']:,.1f}" for c in s["chip_links"])
    )
    busiest = sorted((x for x in rep["links"] if x["crosses"] != "none"), key=lambda x: -x["spikes_per_step"])[:5]
    if busiest:
        out_console.print(
            f"busiest of {sum(x['crosses'] != 'none' for x in rep['links']):,} links (spikes/step; all in the JSON): "
            + ", ".join(f"{x['src'][0]}:{x['src'][1]}->{x['dst'][0]}:{x['dst'][1]} {x['spikes_per_step']:,.1f}" for x in busiest)
        )
    out_console.print(f"estimate per step: {s['synops_per_step']:,.0f} synaptic ops, {s['energy_per_step_nj']:,.1f} nJ, {s['time_per_step_us']:,.1f} us (docs/mapping.md)")
    base = rep.get("naive")
    if base:
        if base.get("fits") is False:
            out_console.print(f"naive placement (layers in order, filling cores): does not fit ({base['reason']})")
        else:
            out_console.print(
                f"naive placement (layers in order, filling cores): {base['cores_used']} cores, {base['spikes_per_step_between_chips']:,.1f} spikes/step between chips, "
                f"{base['spikes_per_step_between_cores']:,.1f} between cores"
            )
    out_console.print(f"wrote {out} and {png}")


# ------------------------------------------------------------------ inspect
@main.command()
@debug_option
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
def inspect(path, as_json):
    """Show the graph of an ONNX MODEL or a .snn ARTIFACT: ops, shapes, thresholds."""
    from snnc.ir.serialize import graph_to_json

    p = Path(path)
    if not p.exists():
        raise DataError(f"{path!r} does not exist")
    prov = None
    if p.suffix == ".snn":
        import snnc

        sm = snnc.load(p)
        graph, prov = sm.snn, sm.provenance
    else:
        from snnc.frontends import import_model

        graph = import_model(p).graph
    if as_json:
        doc = graph_to_json(graph, "g", {})
        if prov is not None:
            doc["provenance"] = prov
        click.echo(json.dumps(doc, default=str))
        return
    table = Table(title=f"{p.name}: {graph.name} [{graph.stage.upper()} stage], {len(graph.nodes)} nodes, {graph.num_params():,} parameters")
    for col in ("node", "op", "inputs", "shape", "parameters / threshold"):
        table.add_column(col, overflow="fold")
    for n in graph.nodes:
        info = ", ".join(f"{k}{list(a.shape)}" for k, a in n.params.items() if k not in ("threshold", "v_init"))
        if "threshold" in n.params:
            th = n.params["threshold"]
            info = (info + "; " if info else "") + (f"θ={float(th.mean()):.4g}" if th.size == 1 else f"θ={float(th.min()):.3g}..{float(th.max()):.3g} per channel")
            if n.op == "if_neuron":
                info += f", reset={n.attr('reset')}, v(0)/θ={float(np.mean(n.params['v_init'] / th)):.2f}"
        table.add_row(n.name, n.op, ", ".join(v.name for v in n.inputs), "x".join(map(str, n.output.shape)), info)
    out_console.print(table)
    out_console.print(f"inputs: {', '.join(f'{v.name} {list(v.shape)}' for v in graph.inputs)}; outputs: {', '.join(v.name for v in graph.outputs)}")
    if prov:
        out_console.print(f"converted for T={','.join(map(str, prov['calibrated_for'])) if isinstance(prov.get('calibrated_for'), list) else prov.get('timesteps')} with {prov.get('pipeline')} on {prov.get('calibration_samples')} samples")
    for note in graph.meta.get("notices", []):
        out_console.print(f"[yellow]notice:[/] {note}")


# -------------------------------------------------------------------- check
@main.command()
@debug_option
@click.argument("path", type=click.Path())
@click.option("--backend", "backend_names", multiple=True, help="Backend(s) to check (default: every installed one).")
def check(path, backend_names):
    """Pre-flight: can MODEL (ONNX or .snn) be converted, and which nodes can each backend not run?

    Exit status 0 when everything can run, 1 when a backend cannot run some node."""
    from snnc.backend import backend_names as installed
    from snnc.backend import get_backend
    from snnc.errors import BackendError

    names = [n.strip() for arg in backend_names for n in arg.split(",") if n.strip()] or installed()
    unknown = [n for n in names if n not in installed()]
    if unknown or (backend_names and not names):
        raise BackendError(f"unknown backend {(unknown or [''])[0]!r}; installed backends: {', '.join(installed())}")
    graph = preflight_graph(path)
    table = Table(title=f"{Path(path).name}: {len(graph.nodes)} nodes after conversion")
    table.add_column("backend", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("nodes it cannot run", overflow="fold")
    problems_found = False
    for name in names:
        try:
            be = get_backend(name)
        except SnncError as e:
            table.add_row(name, "[red]unavailable[/]", str(e))
            problems_found = True
            continue
        problems = be.unsupported(graph)
        problems_found |= bool(problems)
        detail = _group_problems(problems) or "-"
        table.add_row(name, "[red]cannot run[/]" if problems else "[green]ok[/]", detail)
    out_console.print(table)
    if graph.meta.get("fused_synapses"):
        out_console.print(
            f"note: fuse-synapses folded {graph.meta['fused_synapses']} synapse(s) that read synaptic currents into synapses that read "
            "spikes (exact; Loihi / lava-fixed needs a neuron between two synapses)"
        )
    if problems_found:
        sys.exit(1)


def _group_problems(problems) -> str:
    """One entry per (op, reason): a single node as ``node (op): reason``, several as
    ``op × N (first nodes, …): reason`` (an attention network has dozens of alike nodes)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in problems:
        groups.setdefault((p.op, p.reason), []).append(p.node)
    parts = []
    for (op, reason), nodes in groups.items():
        if len(nodes) == 1:
            parts.append(f"{nodes[0]} ({op}): {reason}")
        else:
            shown = ", ".join(nodes[:3]) + (", …" if len(nodes) > 3 else "")
            parts.append(f"{op} × {len(nodes)} ({shown}): {reason}")
    return "; ".join(parts)


def preflight_graph(path: str):
    """The SNN-stage structure of a model without calibration (thresholds set to 1)."""
    import snnc
    from snnc.frontends import import_model
    from snnc.passes import PassContext, parse_pipeline, run_passes

    p = Path(path)
    if not p.exists():
        raise DataError(f"{path!r} does not exist")
    if p.suffix == ".snn":
        return snnc.load(p).snn
    graph = import_model(p).graph
    run_passes(graph, parse_pipeline("canonicalize,fold-bn"), PassContext())
    for relu in graph.find("relu"):
        relu.set_param("threshold", np.array(1.0))
    run_passes(graph, parse_pipeline("insert-if,fuse-synapses"), PassContext())  # as the default pipeline does
    return graph


# ------------------------------------------------------- passes / backends
@main.command("passes")
@debug_option
def list_passes():
    """List the registered passes and the invariant each establishes."""
    import dataclasses

    from snnc.passes import DEFAULT_PIPELINE, registered_passes

    table = Table(title=f"Passes (default pipeline: {DEFAULT_PIPELINE})")
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("options", overflow="fold")
    table.add_column("establishes", overflow="fold")
    for name, cls in registered_passes().items():
        opts = ", ".join(f"{f.name.replace('_', '-')}={f.default}" for f in dataclasses.fields(cls.Options))
        table.add_row(name, opts or "-", " ".join(cls.__doc__.split()))
    out_console.print(table)


@main.command("backends")
@debug_option
def list_backends():
    """List the installed backends."""
    from snnc.backend import backend_names, get_backend

    table = Table(title="Backends")
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("description", overflow="fold")
    for name in backend_names():
        try:
            be = get_backend(name)
            table.add_row(name, "[green]available[/]", be.description)
        except SnncError as e:
            table.add_row(name, "[red]unavailable[/]", str(e))
    out_console.print(table)


if __name__ == "__main__":  # pragma: no cover  (the `snnc` command is snnc.__main__)
    from snnc.utils import interrupts

    interrupts.install()
    main()
