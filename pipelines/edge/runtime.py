"""The edge runtime: feature spec + TFLite model -> scores, with numpy and a TFLite interpreter only.

A device needs this folder (``pipelines/edge/``), an empty ``pipelines/__init__.py``, numpy and a TFLite
interpreter: ``ai_edge_litert`` (the maintained LiteRT package) or, failing that, the older
``tflite_runtime`` (2.14 is the last release; it needs numpy<2 and cannot load TF 2.21's dynamic-range
models, see docs/edge.md). Nothing here imports pandas, TensorFlow or the rest of the pipeline (a test runs
the CLI with ``LOOPLINE_EDGE_REPORT_MODULES=1`` and checks ``sys.modules``).

The model contract (written by :mod:`pipelines.serving.quantize`): one input ``features`` of shape
``[batch, n_features]`` in ``spec["feature_names"]`` order, float32 or int8; one output of shape
``[batch, 1]``, float32 or int8. When the signature names the output ``logit`` the runtime applies the
sigmoid itself (in float64): an int8 output then spends its 256 levels on log-odds, where fraud scores
are spread out, instead of on probabilities, which crowd near 0. int8 tensors are quantized and
dequantized here with the tensor's own (scale, zero point).

Batches have a fixed size: the interpreter is resized once and the last batch is padded, so a row's
score does not depend on which other rows share its batch or where a file's chunks start. That is what
makes the CLI's scores equal the pipeline's scores of the same file exactly.

Run as ``python -m pipelines.edge.runtime --model m.tflite --spec spec.json --input rows.csv [--output s.csv]``
(argparse: no typer needed on a device); ``loopline edge-predict`` delegates here.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.edge import featurespec as fs

__all__ = [
    "EdgeError",
    "EdgeModel",
    "interpreter_class",
    "iter_csv_columns",
    "main",
    "predict_csv",
]

DEFAULT_BATCH = 1024
CSV_CHUNK_ROWS = 65_536
ID_COLUMNS = ("event_id",)
REPORT_MODULES_ENV = "LOOPLINE_EDGE_REPORT_MODULES"


class EdgeError(ValueError):
    """A model, spec or input file the edge runtime cannot use; the message names it and the fix."""


def interpreter_class() -> tuple[Any, str]:
    """(Interpreter class, runtime name): ai_edge_litert first, tflite_runtime as the fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        raise EdgeError(
            "no TFLite interpreter: install ai-edge-litert (pip install ai-edge-litert) or, on an older "
            "device, tflite-runtime (which needs numpy<2)"
        ) from None


def _op_resolver(xnnpack: bool) -> Any:
    """The op-resolver setting that turns the default XNNPACK delegate off (None: the runtime default)."""
    if xnnpack:
        return None
    for mod in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            m = __import__(mod, fromlist=["OpResolverType"])
            return m.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        except (ImportError, AttributeError):
            continue
    return None


class EdgeModel:
    """A TFLite scorer: quantizes the input when the model wants int8, dequantizes the output, applies the
    sigmoid when the model outputs a logit. Scores are float64 probabilities of class 1."""

    def __init__(
        self,
        model: str | bytes,
        *,
        batch_size: int = DEFAULT_BATCH,
        num_threads: int | None = None,
        xnnpack: bool = True,
    ) -> None:
        if batch_size < 1:
            raise EdgeError(f"batch_size = {batch_size}: expected a positive number of rows")
        cls, self.runtime = interpreter_class()
        kw: dict[str, Any] = {"num_threads": num_threads}
        resolver = _op_resolver(xnnpack)
        if resolver is not None:
            kw["experimental_op_resolver_type"] = resolver
        where = model if isinstance(model, str) else f"<{len(model)} bytes>"
        try:
            if isinstance(model, str):
                self.interpreter = cls(model_path=model, **kw)
            else:
                self.interpreter = cls(model_content=bytes(model), **kw)
        except (ValueError, RuntimeError) as err:
            raise EdgeError(
                f"{where}: the {self.runtime} interpreter cannot load this model: {err}. An older runtime "
                "(tflite-runtime 2.14) lacks newer op versions: use the float32 or int8 variant there"
            ) from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgeError(
                f"{where}: expected one input and one output tensor, got {len(inputs)} and {len(outputs)}"
            )
        self._in, self._out = inputs[0], outputs[0]
        shape = list(self._in["shape"])
        if len(shape) != 2:
            raise EdgeError(f"{where}: input shape {shape}: expected [batch, n_features]")
        self.n_features = int(shape[1])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.output_kind = "probability"
        try:
            sigs = self.interpreter.get_signature_list()
            outs = next(iter(sigs.values()))["outputs"] if sigs else []
            if list(outs) == ["logit"]:
                self.output_kind = "logit"
        except (AttributeError, ValueError, StopIteration):
            pass
        self.batch_size = int(batch_size)
        self.interpreter.resize_tensor_input(self._in["index"], [self.batch_size, self.n_features])
        self.interpreter.allocate_tensors()
        # details again: indices are stable, quantization parameters are read from the allocated model
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]

    @property
    def input_quantization(self) -> tuple[float, int]:
        scale, zero = self._in["quantization"]
        return float(scale), int(zero)

    @property
    def output_quantization(self) -> tuple[float, int]:
        scale, zero = self._out["quantization"]
        return float(scale), int(zero)

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.float32:
            return x
        scale, zero = self.input_quantization
        info = np.iinfo(self.input_dtype)
        # TFLite's reference: round(x / scale) half away from zero, then + zero point, then clamp. In place on
        # one float32 scratch buffer: at int8 speed this loop would otherwise cost as much as the model.
        v = np.divide(x, np.float32(scale), dtype=np.float32)
        np.add(v, np.copysign(np.float32(0.5), v), out=v)
        np.trunc(v, out=v)
        np.add(v, np.float32(zero), out=v)
        np.clip(v, info.min, info.max, out=v)
        return v.astype(self.input_dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.output_dtype.kind == "f":
            return y.astype(np.float64)
        scale, zero = self.output_quantization
        return (y.astype(np.float64) - zero) * scale

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Scores (float64, shape (n,)) for a float feature matrix in spec order."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise EdgeError(
                f"feature matrix shape {x.shape}: the model expects (rows, {self.n_features}); is the spec the "
                "one the model was trained with?"
            )
        n, b = x.shape[0], self.batch_size
        raw = np.empty(n, dtype=np.float64)
        buf = np.zeros((b, self.n_features), dtype=np.float32)
        for start in range(0, n, b):
            stop = min(start + b, n)
            buf[: stop - start] = x[start:stop]
            if stop - start < b:
                buf[stop - start :] = 0.0  # padding rows: scored and dropped
            self.interpreter.set_tensor(self._in["index"], self._quantize(buf))
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self._out["index"]).reshape(b, -1)[:, 0]
            raw[start:stop] = self._dequantize(out[: stop - start])
        if self.output_kind == "logit":
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-raw))
        return raw

    def predict_columns(self, spec: Mapping[str, Any], columns: Mapping[str, Any]) -> np.ndarray:
        """Scores for raw input columns (aggregates included), through the one numpy transform."""
        x = fs.transform(spec, columns)
        if x.shape[1] != self.n_features:
            raise EdgeError(
                f"the spec {str(spec.get('digest', '?'))[:12]} gives {x.shape[1]} features but the model takes "
                f"{self.n_features}: pass the spec.json the model was trained with"
            )
        return self.predict_matrix(x)


def load_spec_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return fs.loads_spec(fh.read())
    except FileNotFoundError:
        raise EdgeError(f"{path}: spec file not found; pass the spec.json next to the model") from None


def iter_csv_columns(
    source: io.TextIOBase | Any, *, needed: Sequence[str], keep: Sequence[str] = ID_COLUMNS, chunk_rows: int
) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of a CSV file as ``column -> str array`` (needed columns + those of ``keep`` present)."""
    reader = csv.reader(source)
    try:
        header = next(reader)
    except StopIteration:
        return
    pos = {name: i for i, name in enumerate(header)}
    absent = [c for c in needed if c not in pos]
    if absent:
        raise EdgeError(
            f"input CSV lacks columns {absent} (header: {header[:12]}); the spec reads {list(needed)}: "
            "add them (aggregates are computed upstream and passed as columns)"
        )
    cols = [c for c in (*needed, *(k for k in keep if k in pos and k not in needed))]
    idx = [pos[c] for c in cols]
    rows: list[list[str]] = []
    line = 1
    for rec in reader:
        line += 1
        if not rec:
            continue
        if len(rec) != len(header):
            raise EdgeError(f"input CSV line {line}: {len(rec)} fields, the header has {len(header)}")
        rows.append([rec[i] for i in idx])
        if len(rows) >= chunk_rows:
            yield _columns(cols, rows)
            rows = []
    if rows:
        yield _columns(cols, rows)


def _columns(cols: Sequence[str], rows: list[list[str]]) -> dict[str, np.ndarray]:
    arr = np.array(rows, dtype=str)
    return {c: arr[:, j] for j, c in enumerate(cols)}


def predict_csv(
    model: EdgeModel,
    spec: Mapping[str, Any],
    source: Any,
    sink: Any,
    *,
    chunk_rows: int = CSV_CHUNK_ROWS,
    bad_values: dict[str, list[str]] | None = None,
    strict: bool = False,
) -> int:
    """Score a CSV stream chunk by chunk; write ``[event_id,]score`` rows (repr floats: exact). Returns rows.

    A value that is not a number in a numeric column is scored as missing (as in training) and collected in
    ``bad_values`` (column -> values), for the caller to report; with ``strict`` it stops the run instead."""
    writer = csv.writer(sink, lineterminator="\n")
    needed = fs.input_columns(spec)
    n = 0
    wrote_header = False
    for chunk in iter_csv_columns(source, needed=needed, chunk_rows=chunk_rows):
        found = fs.unparsable_numbers(spec, chunk)
        if found and strict:
            col, vals = next(iter(found.items()))
            raise EdgeError(
                f"input CSV: {sum(map(len, found.values()))} value(s) that are not numbers in numeric columns, "
                f"e.g. {col}={vals[0]!r}; fix the input, or drop --strict to score them as missing"
            )
        for col, vals in found.items():
            if bad_values is not None:
                bad_values.setdefault(col, []).extend(vals)
        scores = model.predict_columns(spec, chunk)
        ids = chunk.get("event_id")
        if not wrote_header:
            writer.writerow(["event_id", "score"] if ids is not None else ["score"])
            wrote_header = True
        if ids is not None:
            writer.writerows(zip(ids.tolist(), map(repr, scores.tolist()), strict=True))
        else:
            writer.writerows([repr(s)] for s in scores.tolist())
        n += len(scores)
    if not wrote_header:
        writer.writerow(["score"])
    return n


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m pipelines.edge.runtime",
        description="Score a CSV of raw events (aggregates included) with a TFLite model and its feature spec.",
    )
    ap.add_argument("--model", required=True, help="the .tflite file")
    ap.add_argument("--spec", required=True, help="the feature spec (spec.json) the model was trained with")
    ap.add_argument("--input", required=True, help="CSV with a header: the spec's input columns (+ event_id)")
    ap.add_argument("--output", default=None, help="scores CSV to write (default: standard output)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="rows per interpreter call")
    ap.add_argument("--threads", type=int, default=None, help="interpreter threads (default: runtime's)")
    ap.add_argument("--strict", action="store_true",
                    help="stop at a value that is not a number in a numeric column (default: score it as missing, "
                    "count and report it)")  # fmt: skip
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    bad: dict[str, list[str]] = {}
    try:
        spec = load_spec_file(args.spec)
        model = EdgeModel(args.model, batch_size=args.batch_size, num_threads=args.threads)
        with open(args.input, newline="", encoding="utf-8") as src:
            if args.output is None:
                n = predict_csv(model, spec, src, sys.stdout, bad_values=bad, strict=args.strict)
            else:
                tmp = f"{args.output}.tmp-{os.getpid()}"
                try:
                    with open(tmp, "w", newline="", encoding="utf-8") as out:
                        n = predict_csv(model, spec, src, out, bad_values=bad, strict=args.strict)
                    os.replace(tmp, args.output)  # atomic: a reader never sees half a file
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
    except (EdgeError, fs.SpecError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"edge-predict: {n} rows scored with {args.model} ({model.runtime}, input {model.input_dtype}, "
        f"output {model.output_kind}) in {time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )
    if bad:
        what = "; ".join(
            f"{c}: {len(v)} (e.g. {', '.join(map(repr, dict.fromkeys(v[:3])))})" for c, v in bad.items()
        )
        print(f"edge-predict: WARNING {sum(map(len, bad.values()))} value(s) were not numbers and were scored as "
              f"missing: {what}; --strict stops instead", file=sys.stderr)  # fmt: skip
    if os.environ.get(REPORT_MODULES_ENV):
        print("loaded-modules: " + json.dumps(sorted(sys.modules)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
