"""Side-by-side benchmark of rnnfast against PyTorch and ONNX Runtime (the `rnnfast bench` command).

Every framework runs in this process with the same thread count, on the same float32 weights and
inputs; outputs are cross-checked before timing. Each framework is timed in blocks of rounds, the
frameworks taking turns over three passes (see run_shape); each cell of the table is the median
over all its rounds, with the interquartile range as the spread (printed as +-half of it, in
percent of the median).

Columns: GFLOP/s counts the GEMM work the math needs (flops(): 2 flops per multiply-add; the first
step of a call without an initial state has no recurrent product, its state being zero), `%peak`
divides it by the FMA peak that the core measures on this machine with the same threads.
`bound` comes from a roofline lower bound on the time of the shape (roofline()): phase by phase (per
layer and direction, the input projection as one GEMM that reads W_ih once, then the recurrent steps
that each read W_hh once), the larger of the time its flops take at the measured FMA peak and the
time its weights take to stream at the read bandwidth the core measures for a buffer the size of
the data read between two reads of those weights. A shape whose memory-limited phases outweigh its
compute-limited ones, and whose weights exceed the threads' L2 caches, is marked memory-bound;
`%bw` is then the lower bound over the measured time (100% = as fast as the measured bandwidth and
peak allow; above 100%, weights stayed in a cache level that the bandwidth probe did not see).
"""
import datetime
import json
import math
import platform
import statistics
import sys
import time

import numpy as np

from . import _core
from ._rnn import GRU, LSTM, RNN
from ._threads import get_num_threads, set_num_threads

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def l2_bytes():
    """Size of one core's L2 cache from Linux sysfs; 1 MiB where it cannot be read."""
    import glob

    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(d + "/level") as f:
                if f.read().strip() != "2":
                    continue
            with open(d + "/size") as f:
                text = f.read().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * mult
        except (OSError, ValueError):
            continue
    return 1 << 20


def _shape(cell, hidden, batch, steps, mode, source, input_size=None, layers=1, bidir=False):
    return dict(cell=cell, I=input_size or hidden, H=hidden, B=batch, T=steps, L=layers,
                D=2 if bidir else 1, mode=mode, source=source)


def shape_sets():
    """Named shape sets. DeepBench rows are (hidden, batch, steps) from its RNN problem lists
    (input size = hidden size), restricted to rows that run in seconds on a 2-core machine."""
    inf, tr = "inference", "training"
    deepbench_inference = [
        _shape("lstm", h, b, t, inf, "DeepBench inference_server")
        for h, b, t in [(512, 1, 25), (512, 4, 25), (1024, 1, 25), (1024, 4, 25), (1536, 4, 50),
                        (256, 1, 150), (256, 4, 150)]
    ] + [
        _shape("gru", h, b, t, inf, "DeepBench inference_server")
        for h, b, t in [(512, 1, 1), (512, 4, 1), (1024, 1, 1500), (1536, 1, 187)]
    ]
    train_rows = [("lstm", 512, 16, 25), ("lstm", 512, 64, 25), ("lstm", 1024, 16, 25),
                  ("lstm", 256, 16, 150), ("rnn", 1760, 16, 50), ("gru", 512, 32, 1)]
    deepbench_training = [_shape(c, h, b, t, m, "DeepBench training")
                          for m in (inf, tr) for c, h, b, t in train_rows]
    latency = [_shape(c, h, 1, t, inf, "latency", layers=l)
               for c in ("lstm", "gru") for h in (64, 128, 256, 512) for t in (1, 100)
               for l in ((1, 2) if h == 256 else (1,))]
    mixed = [_shape("lstm", 256, 32, 100, m, "input != hidden", input_size=64) for m in (inf, tr)]
    mixed += [_shape("gru", 128, 16, 50, m, "input != hidden", input_size=512) for m in (inf, tr)]
    mixed += [_shape("rnn", 320, 8, 200, m, "input != hidden", input_size=40, bidir=True)
              for m in (inf, tr)]
    streaming = [_shape(c, h, 1, 1, "stream", "streaming") for c in ("lstm", "gru")
                 for h in (128, 256, 512)]
    return {"deepbench-inference": deepbench_inference, "deepbench-training": deepbench_training,
            "latency": latency, "mixed": mixed, "streaming": streaming}


def shape_label(s):
    extra = f" L{s['L']}" if s["L"] > 1 else ""
    extra += " bi" if s["D"] == 2 else ""
    io = f"I{s['I']} " if s["I"] != s["H"] else ""
    return f"{s['cell']} {io}H{s['H']} B{s['B']} T{s['T']}{extra}"


def recurrent_steps(s):
    """Steps of a forward whose recurrent product h_{t-1} W_hh^T is not known to be zero. A
    "stream" row carries its state from call to call; every other row is a call without an
    initial state, whose first step multiplies W_hh by zeros: rnnfast leaves that product out
    (the peers compute it), so it is not counted as work either."""
    return s["T"] if s["mode"] == "stream" else s["T"] - 1


def flops(s):
    """GEMM flops of one call (2 per multiply-add): per layer and direction the input projection
    of every step and the recurrent products of recurrent_steps(s). Training adds the backward:
    the input gradient and dW_ih (each as many flops as the input projection), dW_hh (as many as
    the forward's recurrent products) and the recurrence of dL/dh over all T steps (backward
    returns the gradient of the initial state too). A "stream" row is one step."""
    G, H, T, B, D = _GATES[s["cell"]], s["H"], s["T"], s["B"], s["D"]
    steps = recurrent_steps(s)
    total = 0
    for layer in range(s["L"]):
        in_size = s["I"] if layer == 0 else D * H
        proj, rec = 2.0 * T * B * G * H * in_size, 2.0 * B * G * H * H
        if s["mode"] == "training":
            total += D * (3 * proj + rec * (2 * steps + T))
        else:
            total += D * (proj + rec * steps)
    return total


def weight_bytes(s, recurrent=True):
    """float32 bytes of every weight matrix of the model (W_ih and W_hh of all layers; only the
    W_ih with recurrent=False)."""
    G, H, D = _GATES[s["cell"]], s["H"], s["D"]
    return sum(D * G * H * ((s["I"] if layer == 0 else D * H) + (H if recurrent else 0)) * 4
               for layer in range(s["L"]))


def roofline(s, peak_gflops, bandwidth_gbs):
    """Lower bound on the time of one call of shape s, from an FMA peak (GFLOP/s) and a read
    bandwidth: bandwidth_gbs(nbytes) is the GB/s at which weights are read when nbytes of data are
    read between two reads of the same weights (bigger sets fall out of the caches).

    Per layer and direction, two phases: the input projection (2*T*B*G*H*I flops; W_ih read once
    per call, with all the weights a call reads in between) and the recurrent steps of
    recurrent_steps(s) (2*B*G*H*H flops each, and W_hh read once per step: that direction's W_hh
    in between, or the whole model when there is one such step per call). A phase takes at least
    the larger of flops / peak and bytes / bandwidth. Training adds the backward: the input
    gradient (reads W_ih once), the recurrence of dL/dh over all T steps (W_hh read per step) and
    the weight gradients, which read activations, not weights, and count at the peak.
    Returns dict(time_s, memory_s, compute_s): the bound and its memory- and compute-limited parts.
    """
    G, H, T, B, D = _GATES[s["cell"]], s["H"], s["T"], s["B"], s["D"]
    peak = peak_gflops * 1e9
    steps = recurrent_steps(s)
    training = s["mode"] == "training"
    # bytes read per call: every W_ih, and every W_hh unless nothing multiplies it (a one-step
    # inference call without a state)
    model = weight_bytes(s, recurrent=bool(steps or training))
    memory = compute = 0.0
    for layer in range(s["L"]):
        in_size = s["I"] if layer == 0 else D * H
        proj, wih = 2.0 * T * B * G * H * in_size, G * H * in_size * 4.0
        rec, whh = 2.0 * B * G * H * H, G * H * H * 4.0  # the directions run one after the other
        phases = [(proj, wih, model), (steps * rec, steps * whh, model if steps == 1 else whh)]
        if training:
            phases += [(proj, wih, model), (T * rec, T * whh, model if T == 1 else whh)]
            compute += D * (proj + steps * rec) / peak  # dW_ih, dW_hh
        for fl, nbytes, cycle in phases:
            if fl == 0:
                continue
            tc, tm = D * fl / peak, D * nbytes / (bandwidth_gbs(cycle) * 1e9)
            if tm > tc:
                memory += tm
            else:
                compute += tc
    return dict(time_s=memory + compute, memory_s=memory, compute_s=compute)


# ------------------------------------------------------------------------------------ frameworks
def _torch_model(torch, s):
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[s["cell"]]
    return cls(s["I"], s["H"], num_layers=s["L"], bidirectional=s["D"] == 2)


def _onnx_model(s, sd, with_state=False):
    """An ONNX graph of the layer stack built from the LSTM/GRU/RNN operators (opset 14).
    with_state (one layer, one direction): initial states are inputs and final states outputs,
    for step-by-step serving."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    H, D, G = s["H"], s["D"], _GATES[s["cell"]]
    # PyTorch gate blocks -> ONNX gate blocks: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h.
    order = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}[s["cell"]]

    def regate(w):
        return np.concatenate([w[g * H:(g + 1) * H] for g in order], axis=0)

    nodes, inits = [], []
    cur = "x"
    for layer in range(s["L"]):
        sfx = [f"l{layer}", f"l{layer}_reverse"][:D]
        W = np.stack([regate(sd[f"weight_ih_{x}"]) for x in sfx]).astype(np.float32)
        R = np.stack([regate(sd[f"weight_hh_{x}"]) for x in sfx]).astype(np.float32)
        Bias = np.stack([np.concatenate([regate(sd[f"bias_ih_{x}"]), regate(sd[f"bias_hh_{x}"])])
                         for x in sfx]).astype(np.float32)
        names = [f"W{layer}", f"R{layer}", f"B{layer}"]
        inits += [numpy_helper.from_array(a, n) for a, n in zip((W, R, Bias), names)]
        attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
        if s["cell"] == "gru":
            attrs["linear_before_reset"] = 1
        op = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[s["cell"]]
        if with_state:
            ins = [cur] + names + ["", "h0"] + (["c0"] if s["cell"] == "lstm" else [])
            outs = [f"Y{layer}", "hn"] + (["cn"] if s["cell"] == "lstm" else [])
            nodes.append(helper.make_node(op, ins, outs, **attrs))
        else:
            nodes.append(helper.make_node(op, [cur] + names, [f"Y{layer}"], **attrs))
        # Y: (T, D, B, H) -> (T, B, D*H) for the next layer / the output
        nodes.append(helper.make_node("Transpose", [f"Y{layer}"], [f"Yt{layer}"], perm=[0, 2, 1, 3]))
        inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"shape{layer}"))
        cur = "y" if layer == s["L"] - 1 else f"X{layer + 1}"
        nodes.append(helper.make_node("Reshape", [f"Yt{layer}", f"shape{layer}"], [cur]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [s["T"], s["B"], s["I"]])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [s["T"], s["B"], D * H])]
    if with_state:
        names = ["h", "c"] if s["cell"] == "lstm" else ["h"]
        inputs += [helper.make_tensor_value_info(n + "0", TensorProto.FLOAT, [1, s["B"], H])
                   for n in names]
        outputs += [helper.make_tensor_value_info(n + "n", TensorProto.FLOAT, [1, s["B"], H])
                    for n in names]
    graph = helper.make_graph(nodes, "rnn", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model.SerializeToString()


def _peers(threads):
    peers = {}
    try:
        import torch

        torch.set_num_threads(threads)
        peers["torch"] = torch
    except ImportError:
        pass
    try:
        import onnxruntime

        peers["ort"] = onnxruntime
    except ImportError:
        pass
    try:
        import onnx  # noqa: F401 (needed to build the ORT graphs)
    except ImportError:
        peers.pop("ort", None)
    return peers


def _callables(s, peers, threads, rng):
    """{framework: zero-argument callable} for one shape, after checking the outputs agree."""
    x = rng.standard_normal((s["T"], s["B"], s["I"])).astype(np.float32)
    calls, outputs = {}, {}
    torch = peers.get("torch")
    cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[s["cell"]]
    m = cls(s["I"], s["H"], num_layers=s["L"], bidirectional=s["D"] == 2, seed=0)
    sd = m.state_dict()
    if torch is not None:
        tm = _torch_model(torch, s)
        tm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    if s["mode"] == "stream":
        return _stream_callables(s, peers, threads, m, sd, x)
    training = s["mode"] == "training"
    dy = rng.standard_normal((s["T"], s["B"], s["D"] * s["H"])).astype(np.float32)
    if training:
        def rf_call():
            y, _, tape = m.forward(x, train=True)
            m.backward(tape, dy)
    else:
        def rf_call():
            m(x)
    calls["rnnfast"] = rf_call
    outputs["rnnfast"] = m(x)[0]

    if torch is not None:
        xt = torch.from_numpy(x)
        dyt = torch.from_numpy(dy)
        if training:
            xg = xt.clone().requires_grad_(True)

            def torch_call():
                y, _ = tm(xg)
                y.backward(dyt)
        else:
            def torch_call():
                with torch.inference_mode():
                    tm(xt)
        calls["torch"] = torch_call
        with torch.inference_mode():
            outputs["torch"] = tm(xt)[0].numpy()
    ort = peers.get("ort")
    if ort is not None and not training:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(_onnx_model(s, sd), so, providers=["CPUExecutionProvider"])
        feed = {"x": x}

        def ort_call():
            sess.run(None, feed)
        calls["ort"] = ort_call
        outputs["ort"] = sess.run(None, feed)[0]
    ref = outputs["rnnfast"]
    check = {k: float(np.max(np.abs(v - ref))) for k, v in outputs.items() if k != "rnnfast"}
    return calls, check


def _stream_callables(s, peers, threads, m, sd, x):
    """One step of a stateful stream (state carried from call to call) per framework: rnnfast's
    Stream.step, nn.LSTM/GRU called on one step with the previous state, and an ORT session whose
    initial states are inputs."""
    lstm = s["cell"] == "lstm"
    calls, outputs = {}, {}
    stream = m.stream(batch=s["B"])
    x1 = np.ascontiguousarray(x[0])
    out = np.empty((s["B"], s["H"]), np.float32)
    calls["rnnfast"] = lambda: stream.step(x1, out=out)
    outputs["rnnfast"] = m(x[:1])[0][0]
    torch = peers.get("torch")
    if torch is not None:
        tm = _torch_model(torch, s)
        tm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        xt = torch.from_numpy(x[:1])
        zeros = torch.zeros(1, s["B"], s["H"])
        box = [(zeros, zeros.clone()) if lstm else zeros]

        def torch_call():
            with torch.inference_mode():
                _, box[0] = tm(xt, box[0])
        calls["torch"] = torch_call
        with torch.inference_mode():
            outputs["torch"] = tm(xt)[0].numpy()[0]
    ort = peers.get("ort")
    if ort is not None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(_onnx_model(s, sd, with_state=True), so,
                                    providers=["CPUExecutionProvider"])
        feed = {"x": x[:1], "h0": np.zeros((1, s["B"], s["H"]), np.float32)}
        if lstm:
            feed["c0"] = np.zeros((1, s["B"], s["H"]), np.float32)
        outputs["ort"] = sess.run(None, feed)[0][0]

        def ort_call():
            res = sess.run(None, feed)
            feed["h0"] = res[1]
            if lstm:
                feed["c0"] = res[2]
        calls["ort"] = ort_call
    ref = outputs["rnnfast"]
    check = {k: float(np.max(np.abs(v - ref))) for k, v in outputs.items() if k != "rnnfast"}
    return calls, check


def _time_round(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def run_shape(s, peers, threads, rng, budget_s=1.5, min_rounds=6, max_rounds=30, passes=3):
    """Time each framework in blocks of rounds, `passes` blocks each, in rotating order (pass p
    starts with framework p mod n). Blocks, not interleaved calls: every framework here keeps
    worker threads that spin for a while after a call (libgomp, OpenBLAS, ORT's pool);
    interleaving calls would bill each framework for the previous one's spinning threads on a
    machine with few cores. A short pause before each block lets them park. Several passes in
    turn, not one long block each: on a shared host the caches and memory bandwidth left to this
    process drift over seconds, and one block per framework would hand the whole drift to whoever
    ran at the wrong moment. Each framework gets about budget_s seconds over all its blocks."""
    calls, check = _callables(s, peers, threads, rng)
    names = list(calls)
    samples = {name: [] for name in names}
    inner = {}
    for p in range(passes):
        for name in names[p % len(names):] + names[:p % len(names)]:
            fn = calls[name]
            time.sleep(0.05)
            fn()  # warm up (first pass: size the inner loop to >= 2 ms per sample)
            if name not in inner:
                t = _time_round(fn, 1)
                inner[name] = max(1, min(1000, int(math.ceil(2e-3 / max(t, 1e-7)))))
            ts, want = samples[name], min_rounds * (p + 1) // passes
            cap = max_rounds * (p + 1) // passes
            t_end = time.perf_counter() + budget_s / passes
            while len(ts) < cap:
                ts.append(_time_round(fn, inner[name]))
                if len(ts) >= want and time.perf_counter() > t_end:
                    break
    result = {}
    for name, ts in samples.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        med = statistics.median(ts)
        result[name] = dict(median_s=med, iqr_rel=(q[2] - q[0]) / med, samples=len(ts))
    return result, check


def machine_info(threads):
    peak = _core.core_fma_peak(threads, 0.3)
    return dict(threads=threads, isa=_core.core_isa_name(), fma_peak_gflops=peak,
                l2_bytes=l2_bytes(), python=sys.version.split()[0], platform=platform.platform(),
                processor=_cpu_name(), date=datetime.date.today().isoformat())


def _cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(sets=None, threads=None, budget_s=1.5, filter_text=None, progress=True, out=None):
    """Run the benchmark; returns a dict (machine info + one row per shape) and prints the table
    to `out` (default: the current sys.stdout)."""
    out = out if out is not None else sys.stdout
    all_sets = shape_sets()
    sets = sets or list(all_sets)
    unknown = [x for x in sets if x not in all_sets]
    if unknown:
        raise ValueError(f"unknown shape set(s) {unknown}; choose from {list(all_sets)}")
    threads = threads or get_num_threads()
    old_threads = get_num_threads()
    set_num_threads(threads)
    try:
        peers = _peers(threads)
        info = machine_info(threads)
        info["peers"] = {"torch": getattr(peers.get("torch"), "__version__", None),
                         "onnxruntime": getattr(peers.get("ort"), "__version__", None)}
        bw_cache = {}
        rows = []
        shapes = [(name, s) for name in sets for s in all_sets[name]]
        if filter_text:
            shapes = [(n, s) for n, s in shapes if filter_text in shape_label(s) + " " + n]
        rng = np.random.default_rng(0)
        _print_header(info, out)
        for i, (set_name, s) in enumerate(shapes):
            if progress:
                print(f"  [{i + 1}/{len(shapes)}] {shape_label(s)} {s['mode']} ...", end="\r",
                      file=sys.stderr, flush=True)
            res, check = run_shape(s, peers, threads, rng, budget_s=budget_s)
            row = dict(set=set_name, label=shape_label(s), shape=s, times=res, check=check)
            row.update(_derived(s, res, info, bw_cache, threads))
            rows.append(row)
            _print_row(row, out)
        info["rows"] = rows
        info["summary"] = _summary(rows)
        _print_summary(info["summary"], out)
        return info
    finally:
        set_num_threads(old_threads)


def _derived(s, res, info, bw_cache, threads):
    t = res["rnnfast"]["median_s"]
    gflops = flops(s) / t / 1e9
    peer_times = {k: v["median_s"] for k, v in res.items() if k != "rnnfast"}
    best_peer = min(peer_times, key=peer_times.get) if peer_times else None
    d = dict(gflops=gflops, peak_frac=gflops / info["fma_peak_gflops"], best_peer=best_peer,
             speedup=(peer_times[best_peer] / t) if best_peer else None, bound="compute")
    def bandwidth(nbytes):  # measured once per size (rounded up to 64 KiB) and thread count
        key = max(1, -(-int(nbytes) // 65536)) * 65536
        if key not in bw_cache:
            bw_cache[key] = _core.core_read_bandwidth(threads, key, 0.2)
        return bw_cache[key]

    roof = roofline(s, info["fma_peak_gflops"], bandwidth)
    d.update(bandwidth_gbs=bandwidth(weight_bytes(s)), roofline_s=roof["time_s"],
             roof_frac=roof["time_s"] / t)
    # Memory-bound: the weights do not fit in the threads' L2 caches and reading them takes longer
    # than the flops (smaller models that lose to both are bound by fixed per-call costs instead).
    if weight_bytes(s) > threads * info["l2_bytes"] and roof["memory_s"] > roof["compute_s"]:
        d.update(bound="memory", bw_frac=roof["time_s"] / t)
    return d


def _print_header(info, out):
    print(f"rnnfast bench - {info['processor']}, {info['threads']} threads, path {info['isa']}, "
          f"measured FMA peak {info['fma_peak_gflops']:.0f} GFLOP/s, {info['date']}", file=out)
    print(f"peers: torch {info['peers']['torch']}, onnxruntime {info['peers']['onnxruntime']}",
          file=out)
    print(f"{'shape':<30} {'mode':<9} {'rnnfast ms':>14} {'torch ms':>14} {'ORT ms':>14} "
          f"{'GFLOP/s':>8} {'%peak':>6} {'bound':>12} {'vs best':>8}", file=out)


def _fmt_time(r):
    if r is None:
        return f"{'-':>14}"
    return f"{r['median_s'] * 1e3:>8.3f} ±{100 * r['iqr_rel'] / 2:>3.0f}%"


def _print_row(row, out):
    t = row["times"]
    bound = "compute" if row["bound"] == "compute" else f"mem {100 * row['bw_frac']:.0f}%bw"
    sp = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
    print(f"{row['label']:<30} {row['shape']['mode']:<9} {_fmt_time(t['rnnfast'])} "
          f"{_fmt_time(t.get('torch'))} {_fmt_time(t.get('ort'))} {row['gflops']:>8.1f} "
          f"{100 * row['peak_frac']:>5.1f}% {bound:>12} {sp:>8}", file=out, flush=True)


def is_compute_class(s):
    """The shapes the speed targets call compute-bound: batch >= 16 and hidden >= 512."""
    return s["B"] >= 16 and s["H"] >= 512


def _summary(rows):
    """The figures the speed targets are read from: geometric-mean speedup over the best peer,
    rows slower than it, the range of % peak of the compute-class rows (is_compute_class) per
    mode, and how many memory-bound rows are within 15% of their roofline limit."""
    sp = [r["speedup"] for r in rows if r["speedup"]]
    peak = {}
    for r in rows:
        if is_compute_class(r["shape"]):
            peak.setdefault(r["shape"]["mode"], []).append(r["peak_frac"])
    mem = [r for r in rows if r["bound"] == "memory"]
    return dict(shapes=len(rows), geomean_speedup=float(np.exp(np.mean(np.log(sp)))) if sp else None,
                slower_than_best_peer=[r["label"] + " " + r["shape"]["mode"] for r in rows
                                       if r["speedup"] and r["speedup"] < 1.0],
                compute_peak_frac={m: [min(v), max(v)] for m, v in peak.items()},
                memory_bound=len(mem),
                memory_within_15pct=sum(r["bw_frac"] >= 0.85 for r in mem),
                memory_not_within_15pct=[r["label"] + " " + r["shape"]["mode"] for r in mem
                                         if r["bw_frac"] < 0.85])


def _print_summary(summ, out):
    if summ["geomean_speedup"]:
        print(f"geometric-mean speedup over the best peer: {summ['geomean_speedup']:.2f}x over "
              f"{summ['shapes']} shapes; slower than the best peer on "
              f"{len(summ['slower_than_best_peer'])}", file=out)
    for mode, (lo, hi) in sorted(summ["compute_peak_frac"].items()):
        print(f"compute-class rows (batch >= 16, hidden >= 512), {mode}: {100 * lo:.1f}-"
              f"{100 * hi:.1f}% of the FMA peak", file=out)
    if summ["memory_bound"]:
        print(f"memory-bound rows within 15% of the roofline limit: "
              f"{summ['memory_within_15pct']} of {summ['memory_bound']}", file=out)


def save_json(result, path):
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def plot(result, path):
    """Bar chart of the speedup over the best peer per shape (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["speedup"]]
    labels = [f"{r['label']} {r['shape']['mode'][:5]}" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(rows) + 1.5))
    ax.barh(range(len(rows)), [r["speedup"] for r in rows],
            color=["tab:green" if r["speedup"] >= 1 else "tab:red" for r in rows])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup of rnnfast over the best peer (x)")
    ax.set_title(f"rnnfast vs PyTorch / ONNX Runtime, {result['threads']} threads, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
