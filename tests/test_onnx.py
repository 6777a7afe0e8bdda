"""ONNX interop: graphs exported by torch.onnx.export and built with onnx.helper run by
rf.load_onnx against torch / onnxruntime / onnx.reference; unsupported attributes and operators
raise errors naming them; rf.save_onnx files run in onnxruntime give rnnfast's outputs."""
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import rnnfast as rf

TOL = 1e-5
G = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _ort(model_bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _ort_run(model, feed):
    """onnxruntime's outputs. ORT's CPU kernels refuse layout=1, so a layout-1 graph runs as its
    layout-0 twin with the feed and the outputs transposed."""
    attr = [a for a in model.graph.node[0].attribute if a.name == "layout"]
    if not attr or attr[0].i == 0:
        return _ort(model.SerializeToString()).run(None, feed)
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    [a for a in twin.graph.node[0].attribute if a.name == "layout"][0].i = 0
    for vi in list(twin.graph.input) + list(twin.graph.output):
        vi.type.tensor_type.ClearField("shape")
    f2 = {k: (v.transpose(1, 0, 2) if k in ("x", "h0", "c0") else v) for k, v in feed.items()}
    out = _ort(twin.SerializeToString()).run(None, f2)
    return [out[0].transpose(2, 0, 1, 3)] + [o.transpose(1, 0, 2) for o in out[1:]]


def _maxerr(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ------------------------------------------------------------------------ (a) torch.onnx.export
TORCH_CASES = [(cls, L, bi, bf) for cls in ("LSTM", "GRU", "RNN")
               for (L, bi, bf) in ((1, False, False), (2, True, True), (2, False, True),
                                   (1, True, False))]


@pytest.mark.parametrize("cls,L,bi,bf", TORCH_CASES)
def test_torch_export_runs_like_torch(cls, L, bi, bf):
    torch.manual_seed(0)
    kw = dict(num_layers=L, bidirectional=bi, batch_first=bf)
    if cls == "RNN":
        kw["nonlinearity"] = "relu" if L == 2 and bi else "tanh"
    m = getattr(torch.nn, cls)(3, 5, **kw).eval()
    x = torch.randn((2, 6, 3) if bf else (6, 2, 3))
    outs = ["y", "h"] + (["c"] if cls == "LSTM" else [])
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), f, dynamo=False, input_names=["x"], output_names=outs,
                          opset_version=14)
    data = f.getvalue()
    with torch.no_grad():
        ty, ts = m(x)
    expected = [ty.numpy()] + ([t.numpy() for t in ts] if cls == "LSTM" else [ts.numpy()])
    sess = rf.load_onnx(data)
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [o.name for o in sess.get_outputs()] == outs
    assert len(sess.models) == L and all(isinstance(mm, getattr(rf, cls)) for mm in sess.models)
    got = sess.run(None, {"x": x.numpy()})
    ref = _ort(data).run(None, {"x": x.numpy()})
    for g, e, r in zip(got, expected, ref):
        assert _maxerr(g, e) < TOL
        assert _maxerr(g, r) < TOL
    # output selection by name
    (h,) = sess.run(["h"], {"x": x.numpy()})
    np.testing.assert_array_equal(h, got[1])


# ------------------------------------------------------------------------- (b) onnx.helper graphs
def _graph(op, I, H, direction="forward", layout=0, bias=True, lens=False, init_h=False,
           init_c=False, weights_as_inputs=False, seed=0, dtype=np.float32, peephole=False,
           **attrs):
    """A one-node graph of op and the feed for it (T=5, B=3); peephole: an LSTM's input P."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    T, B = 5, 3
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    W = rng.uniform(-0.5, 0.5, (D, G[op] * H, I)).astype(dtype)
    R = rng.uniform(-0.5, 0.5, (D, G[op] * H, H)).astype(dtype)
    Bb = rng.uniform(-0.5, 0.5, (D, 2 * G[op] * H)).astype(dtype)
    x = rng.standard_normal((B, T, I) if layout else (T, B, I)).astype(dtype)
    feed = {"x": x}
    sshape = (B, D, H) if layout else (D, B, H)
    weights = {"W": W, "R": R}
    if bias:
        weights["B"] = Bb
    inits, inputs = [], [helper.make_tensor_value_info("x", elem, list(x.shape))]
    for k, v in weights.items():
        if weights_as_inputs:
            inputs.append(helper.make_tensor_value_info(k, elem, list(v.shape)))
            feed[k] = v
        else:
            inits.append(numpy_helper.from_array(v, k))
    names = ["x", "W", "R", "B" if bias else ""]
    names.append("lens" if lens else "")
    if lens:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [B]))
        feed["lens"] = np.array([5, 2, 4], np.int32)
    for st, on in (("h0", init_h), ("c0", init_c)):
        if st == "c0" and op != "LSTM":
            continue
        names.append(st if on else "")
        if on:
            inputs.append(helper.make_tensor_value_info(st, elem, list(sshape)))
            feed[st] = rng.standard_normal(sshape).astype(dtype)
    if peephole:
        P = rng.uniform(-1.0, 1.0, (D, 3 * H)).astype(dtype)
        names += [""] * (7 - len(names)) + ["P"]
        if weights_as_inputs:
            inputs.append(helper.make_tensor_value_info("P", elem, list(P.shape)))
            feed["P"] = P
        else:
            inits.append(numpy_helper.from_array(P, "P"))
    while names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    if op == "GRU":
        attrs.setdefault("linear_before_reset", 1)
    node = helper.make_node(op, names, outs, hidden_size=H, direction=direction, layout=layout,
                            **attrs)
    outputs = [helper.make_tensor_value_info(o, elem, None) for o in outs]
    g = helper.make_graph([node], "g", inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model, feed


HELPER_CASES = [
    dict(direction="forward"), dict(direction="reverse"), dict(direction="bidirectional"),
    dict(direction="forward", layout=1), dict(direction="bidirectional", layout=1, init_h=True,
                                              init_c=True),
    dict(direction="reverse", init_h=True, init_c=True), dict(bias=False),
    dict(direction="bidirectional", weights_as_inputs=True, init_h=True),
]


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("case", HELPER_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_helper_graph_matches_reference_and_ort(op, case):
    model, feed = _graph(op, 4, 3, **case)
    got = rf.load_onnx(model.SerializeToString()).run(None, feed)
    ref = ReferenceEvaluator(model).run(None, feed)
    via_ort = _ort_run(model, feed)
    D = 2 if case.get("direction") == "bidirectional" else 1
    T, B, H = 5, 3, 3
    assert got[0].shape == ((B, T, D, H) if case.get("layout") else (T, D, B, H))
    for g, r, o in zip(got, ref, via_ort):
        assert _maxerr(g, r) < TOL
        assert _maxerr(g, o) < TOL


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_sequence_lens_matches_ort(op, direction, layout):
    # onnx.reference ignores sequence_lens, so onnxruntime is the oracle here; the padding and
    # last-valid-step semantics are also checked directly.
    model, feed = _graph(op, 4, 3, direction=direction, layout=layout, lens=True, init_h=True,
                         init_c=True, seed=1)
    got = rf.load_onnx(model).run(None, feed)
    via_ort = _ort_run(model, feed)
    for g, o in zip(got, via_ort):
        assert _maxerr(g, o) < TOL
    Y = got[0] if layout == 0 else got[0].transpose(1, 2, 0, 3)  # -> (T, D, B, H)
    Yh = got[1] if layout == 0 else got[1].transpose(1, 0, 2)
    lens = feed["lens"]
    for b, n in enumerate(lens):
        assert np.all(Y[n:, :, b] == 0)
        assert np.any(Y[:n, :, b] != 0)
        np.testing.assert_array_equal(Yh[0, b], Y[n - 1, 0, b] if direction != "reverse" else Y[0, 0, b])
        if direction == "bidirectional":
            np.testing.assert_array_equal(Yh[1, b], Y[0, 1, b])
    # a row of full length equals the graph run on that row alone without sequence_lens
    m2, f2 = _graph(op, 4, 3, direction=direction, layout=layout, init_h=True, init_c=True, seed=1)
    full = rf.load_onnx(m2).run(None, f2)
    assert _maxerr(got[0][..., 0, :] if layout == 0 else got[0][0], full[0][..., 0, :]
                   if layout == 0 else full[0][0]) < TOL


def test_float64_graph_tight_vs_reference():
    model, feed = _graph("LSTM", 4, 3, direction="bidirectional", init_h=True, init_c=True,
                         dtype=np.float64)
    sess = rf.load_onnx(model)
    assert sess.models[0].dtype == np.float64
    for g, r in zip(sess.run(None, feed), ReferenceEvaluator(model).run(None, feed)):
        assert _maxerr(g, r) < 1e-12


def test_weights_as_inputs_reload_when_they_change():
    model, feed = _graph("GRU", 4, 3, direction="bidirectional", weights_as_inputs=True)
    sess = rf.load_onnx(model)
    assert sess.models == [None]
    first = sess.run(None, feed)
    m0 = sess.models[0]
    assert isinstance(m0, rf.GRU)
    feed2 = dict(feed, W=feed["W"] * 0.5, B=feed["B"] + 0.1)
    second = sess.run(None, feed2)
    ref2 = ReferenceEvaluator(model).run(None, feed2)
    assert _maxerr(second[0], first[0]) > 1e-3
    for g, r in zip(second, ref2):
        assert _maxerr(g, r) < TOL
    # back to the first weights: the first answer again
    for g, r in zip(sess.run(None, feed), first):
        np.testing.assert_array_equal(g, r)


def test_rnn_relu_activation():
    model, feed = _graph("RNN", 4, 3, direction="bidirectional", activations=["Relu", "Relu"])
    sess = rf.load_onnx(model)
    assert sess.models[0].nonlinearity == "relu"
    # onnx.reference has no Relu for RNN; onnxruntime does
    got = sess.run(None, feed)
    assert np.all(got[0] >= 0) and np.any(got[0] == 0)
    for g, r in zip(got, _ort_run(model, feed)):
        assert _maxerr(g, r) < TOL


def test_glue_operators_match_reference():
    # initial_h = ConstantOfShape([1, batch, H]) built from Shape/Slice/Gather/Concat/Cast, and
    # the outputs post-processed by Squeeze/Unsqueeze/Transpose/Reshape/Expand/arithmetic
    model, feed = _graph("GRU", 4, 3, direction="forward")
    g = model.graph
    del g.output[:]
    mk = helper.make_node
    ints = lambda name, v: g.initializer.append(  # noqa: E731
        numpy_helper.from_array(np.array(v, np.int64), name))
    ints("one", [1]), ints("two", [2]), ints("hid", [3]), ints("idx1", 1), ints("ax0", [0])
    ints("ax1", [1]), ints("flat", [0, -1])
    g.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two_f"))
    nodes = [
        mk("Shape", ["x"], ["xs"]),
        mk("Slice", ["xs", "one", "two", "ax0"], ["b_sl"]),
        mk("Gather", ["xs", "idx1"], ["b_sc"], axis=0),
        mk("Unsqueeze", ["b_sc", "ax0"], ["b_un"]),
        mk("Cast", ["b_un"], ["b_f"], to=TensorProto.FLOAT),
        mk("Cast", ["b_f"], ["b_i"], to=TensorProto.INT64),
        mk("Concat", ["one", "b_i", "hid"], ["hshape"], axis=0),
        mk("ConstantOfShape", ["hshape"], ["h0"],
           value=numpy_helper.from_array(np.array([0.5], np.float32))),
        mk("Constant", [], ["half"], value_float=0.5),
        g.node[0],
        mk("Squeeze", ["Y", "ax1"], ["Ys"]),
        mk("Transpose", ["Ys"], ["Yt"], perm=[1, 0, 2]),
        mk("Reshape", ["Yt", "flat"], ["Yr"]),
        mk("Mul", ["Yr", "two_f"], ["m"]),
        mk("Sub", ["m", "half"], ["s"]),
        mk("Div", ["s", "two_f"], ["d"]),
        mk("Expand", ["Y_h", "hshape"], ["e"]),
        mk("Add", ["e", "half"], ["a"]),
        mk("Identity", ["a"], ["out2"]),
        mk("Identity", ["b_sl"], ["out3"]),
    ]
    assert len(g.node[0].input) == 4  # x, W, R, B
    g.node[0].input.extend(["", "h0"])
    del g.node[:]
    g.node.extend(nodes[::-1])  # reversed on purpose: load_onnx must order the nodes itself
    g.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("d", "out2")]
                    + [helper.make_tensor_value_info("out3", TensorProto.INT64, None)])
    ordered = onnx.ModelProto()
    ordered.CopyFrom(model)
    del ordered.graph.node[:]
    ordered.graph.node.extend(nodes)
    got = rf.load_onnx(model).run(None, feed)
    ref = ReferenceEvaluator(ordered).run(None, feed)
    assert got[0].shape == (3, 5 * 3)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype
        assert _maxerr(a, b) < TOL


# ---------------------------------------------------------------------------- (c) errors
@pytest.mark.parametrize("op,attrs,name", [
    ("LSTM", dict(activations=["Sigmoid", "Relu", "Tanh"]), "activations"),
    ("GRU", dict(activations=["HardSigmoid", "Tanh"]), "activations"),
    ("RNN", dict(activations=["Sigmoid"]), "activations"),
    ("RNN", dict(activation_alpha=[0.5], activations=["Tanh"]), "activation_alpha"),
    ("LSTM", dict(activation_beta=[0.5, 0.5, 0.5]), "activation_beta"),
])
def test_unsupported_attribute_raises_naming_it(op, attrs, name):
    model, _ = _graph(op, 4, 3, **attrs)
    with pytest.raises(NotImplementedError, match=name):
        rf.load_onnx(model)


# ----------------------------------------------------- GRU linear_before_reset=0 (ONNX's default)
@pytest.mark.parametrize("case", HELPER_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gru_reset_before_matches_reference_and_ort(case):
    model, feed = _graph("GRU", 4, 3, linear_before_reset=0, seed=2, **case)
    sess = rf.load_onnx(model.SerializeToString())
    got = sess.run(None, feed)
    assert sess.models[0].linear_before_reset is False
    ref = ReferenceEvaluator(model).run(None, feed)
    via_ort = _ort_run(model, feed)
    for g, r, o in zip(got, ref, via_ort):
        assert _maxerr(g, r) < TOL
        assert _maxerr(g, o) < TOL
    # the two GRU forms give materially different answers on these weights
    m1, _ = _graph("GRU", 4, 3, linear_before_reset=1, seed=2, **case)
    assert _maxerr(rf.load_onnx(m1).run(None, feed)[0], got[0]) > 1e-3


def test_gru_without_the_attribute_is_reset_before():
    # linear_before_reset absent means 0 (the ONNX default)
    model, feed = _graph("GRU", 4, 3, direction="bidirectional", linear_before_reset=0)
    node = model.graph.node[0]
    keep = [a for a in node.attribute if a.name != "linear_before_reset"]
    del node.attribute[:]
    node.attribute.extend(keep)
    sess = rf.load_onnx(model)
    assert sess.models[0].linear_before_reset is False
    for g, o in zip(sess.run(None, feed), _ort_run(model, feed)):
        assert _maxerr(g, o) < TOL


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_gru_reset_before_sequence_lens_matches_ort(direction, layout):
    model, feed = _graph("GRU", 4, 3, direction=direction, layout=layout, lens=True, init_h=True,
                         linear_before_reset=0, seed=5)
    got = rf.load_onnx(model).run(None, feed)
    for g, o in zip(got, _ort_run(model, feed)):
        assert _maxerr(g, o) < TOL


def test_gru_reset_before_float64_tight_vs_reference():
    model, feed = _graph("GRU", 4, 3, direction="bidirectional", init_h=True,
                         linear_before_reset=0, dtype=np.float64)
    sess = rf.load_onnx(model)
    assert sess.models[0].dtype == np.float64
    for g, r in zip(sess.run(None, feed), ReferenceEvaluator(model).run(None, feed)):
        assert _maxerr(g, r) < 1e-12


def test_gru_bad_linear_before_reset_raises():
    model, _ = _graph("GRU", 4, 3, linear_before_reset=2)
    with pytest.raises(ValueError, match="linear_before_reset must be 0 or 1"):
        rf.load_onnx(model)


# ------------------------------------------------------------ (b2) LSTM peephole, clip, input_forget
LSTM_VARIANTS = [dict(peephole=True), dict(clip=0.4), dict(input_forget=1),
                 dict(peephole=True, clip=0.6), dict(peephole=True, clip=0.5, input_forget=1)]


def _variant_id(v):
    return "-".join(f"{k}={v[k]}" for k in v)


@pytest.mark.parametrize("variant", LSTM_VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("case", [dict(), dict(lens=True, init_h=True, init_c=True),
                                  dict(layout=1, init_h=True, init_c=True, bias=False)],
                         ids=["plain", "lens-states", "layout1-nobias"])
def test_lstm_variants_match_ort(variant, direction, case):
    # onnx.reference ignores clip and input_forget (and sequence_lens), so onnxruntime is the
    # oracle; the same graph without the variant must give clearly different numbers.
    model, feed = _graph("LSTM", 4, 3, direction=direction, seed=2, **case, **variant)
    sess = rf.load_onnx(model)
    m = sess.models[0]
    assert (m.peephole, m.input_forget, m.clip) == (
        variant.get("peephole", False), bool(variant.get("input_forget")),
        None if "clip" not in variant else pytest.approx(variant["clip"]))
    got = sess.run(None, feed)
    via_ort = _ort_run(model, feed)
    for g, o in zip(got, via_ort):
        assert _maxerr(g, o) < TOL
    plain, _ = _graph("LSTM", 4, 3, direction=direction, seed=2, **case)
    assert _maxerr(got[0], _ort_run(plain, feed if "P" not in feed else
                                    {k: v for k, v in feed.items() if k != "P"})[0]) > 1e-2


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_peephole_matches_reference(direction):
    for dtype, tol in ((np.float32, TOL), (np.float64, 1e-12)):
        model, feed = _graph("LSTM", 4, 3, direction=direction, init_h=True, init_c=True,
                             peephole=True, dtype=dtype, seed=3)
        got = rf.load_onnx(model).run(None, feed)
        for g, r in zip(got, ReferenceEvaluator(model).run(None, feed)):
            assert _maxerr(g, r) < tol


def test_lstm_clip_is_active_in_ort_and_rnnfast():
    # a clip below the pre-activations' range changes the result, a huge one changes nothing;
    # +inf is accepted and clips nothing, as in onnxruntime
    model, feed = _graph("LSTM", 4, 3, seed=4)
    y = rf.load_onnx(model).run(None, feed)[0]
    for clip, same in ((0.05, False), (1e30, True), (float("inf"), True)):
        clipped, _ = _graph("LSTM", 4, 3, seed=4, clip=clip)
        got = rf.load_onnx(clipped).run(None, feed)[0]
        assert _maxerr(got, _ort_run(clipped, feed)[0]) < TOL
        assert (_maxerr(got, y) == 0) == same, clip


# ------------------------------------------------------------------- (b3) clip on GRU and RNN
CLIP_OPS = [("RNN", dict()), ("RNN", dict(activations="Relu")), ("GRU", dict(linear_before_reset=1)),
            ("GRU", dict(linear_before_reset=0))]


def _clip_op_id(c):
    return c[0] + "-" + "-".join(f"{k}={v}" for k, v in c[1].items())


def _clip_graph(op, attrs, direction="forward", **kw):
    attrs = dict(attrs)
    if "activations" in attrs:
        attrs["activations"] = [attrs["activations"]] * (2 if direction == "bidirectional" else 1)
    return _graph(op, 4, 3, direction=direction, **kw, **attrs)


@pytest.mark.parametrize("opattrs", CLIP_OPS, ids=_clip_op_id)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("case", [dict(), dict(lens=True, init_h=True),
                                  dict(layout=1, init_h=True, bias=False)],
                         ids=["plain", "lens-states", "layout1-nobias"])
def test_gru_rnn_clip_matches_ort(opattrs, direction, case):
    # onnx.reference ignores clip: onnxruntime is the oracle. Weights scaled up so that the clamps
    # bite; the graph without clip must give clearly different numbers.
    op, attrs = opattrs
    model, feed = _clip_graph(op, attrs, direction, seed=2, clip=0.4, **case)
    for init in model.graph.initializer:
        if init.name in ("W", "R", "B"):
            init.CopyFrom(numpy_helper.from_array(4 * numpy_helper.to_array(init), init.name))
    for k in ("W", "R", "B"):
        if k in feed:
            feed[k] = 4 * feed[k]
    sess = rf.load_onnx(model)
    assert sess.models[0].clip == pytest.approx(0.4)
    got = sess.run(None, feed)
    for g, o in zip(got, _ort_run(model, feed)):
        assert _maxerr(g, o) < TOL
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    keep = [a for a in plain.graph.node[0].attribute if a.name != "clip"]
    del plain.graph.node[0].attribute[:]
    plain.graph.node[0].attribute.extend(keep)
    assert _maxerr(got[0], _ort_run(plain, feed)[0]) > 1e-2


@pytest.mark.parametrize("opattrs", CLIP_OPS, ids=_clip_op_id)
def test_gru_rnn_clip_huge_or_inf_changes_nothing(opattrs):
    op, attrs = opattrs
    model, feed = _clip_graph(op, attrs, "bidirectional", seed=4)
    y = rf.load_onnx(model).run(None, feed)[0]
    for clip, same in ((0.05, False), (1e30, True), (float("inf"), True)):
        clipped, _ = _clip_graph(op, attrs, "bidirectional", seed=4, clip=clip)
        sess = rf.load_onnx(clipped)
        assert (sess.models[0].clip is None) == (clip == float("inf"))
        got = sess.run(None, feed)[0]
        assert _maxerr(got, _ort_run(clipped, feed)[0]) < TOL
        assert (_maxerr(got, y) == 0) == same, clip


@pytest.mark.parametrize("op", ["GRU", "RNN"])
@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan")])
def test_gru_rnn_bad_clip_raises(op, clip):
    model, _ = _graph(op, 4, 3, clip=clip)
    with pytest.raises(ValueError, match="clip"):
        rf.load_onnx(model)


@pytest.mark.parametrize("kind", ["tanh", "relu", "gru", "gru_rb"])
@pytest.mark.parametrize("bf", [False, True])
def test_save_onnx_gru_rnn_clip_runs_in_ort(kind, bf):
    kw = dict(num_layers=2, bidirectional=True, batch_first=bf, seed=3, clip=0.5)
    m = (rf.RNN(4, 5, nonlinearity=kind, **kw) if kind in ("tanh", "relu")
         else rf.GRU(4, 5, linear_before_reset=kind == "gru", **kw))
    m.load_state_dict({k: 3 * v for k, v in m.state_dict().items()})
    rng = np.random.default_rng(1)
    T, B = 6, 3
    x = rng.standard_normal((B, T, 4) if bf else (T, B, 4)).astype(np.float32)
    h0 = rng.standard_normal((4, B, 5)).astype(np.float32)
    lens = np.array([6, 2, 5], np.int32)
    data = rf.save_onnx(m, initial_state=True, lengths=True)
    for n in onnx.load_from_string(data).graph.node:
        if n.op_type in ("GRU", "RNN"):
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["clip"] == pytest.approx(0.5)
    y, hn = m(x, h0, lens)
    feed = {"x": x, "h0": h0, "sequence_lens": lens}
    for o, e in zip(_ort(data).run(None, feed), (y, hn)):
        assert _maxerr(o, e) < TOL
    back = rf.load_onnx(data)
    for g, e in zip(back.run(None, feed), (y, hn)):
        assert _maxerr(g, e) < TOL


def test_peephole_weights_as_inputs_reload_when_they_change():
    model, feed = _graph("LSTM", 4, 3, direction="bidirectional", weights_as_inputs=True,
                         peephole=True, clip=0.7)
    sess = rf.load_onnx(model)
    assert sess.models == [None]
    first = sess.run(None, feed)
    for g, o in zip(first, _ort_run(model, feed)):
        assert _maxerr(g, o) < TOL
    feed2 = dict(feed, P=feed["P"][::-1].copy())
    second = sess.run(None, feed2)
    assert _maxerr(second[0], first[0]) > 1e-3
    for g, o in zip(second, _ort_run(model, feed2)):
        assert _maxerr(g, o) < TOL


@pytest.mark.parametrize("attrs,exc,match", [
    (dict(clip=0.0), ValueError, "clip"),
    (dict(clip=-1.0), ValueError, "clip"),
    (dict(clip=float("nan")), ValueError, "clip"),
    (dict(input_forget=2), ValueError, "input_forget"),
])
def test_bad_lstm_variant_attributes_raise(attrs, exc, match):
    model, _ = _graph("LSTM", 4, 3, **attrs)
    with pytest.raises(exc, match=match):
        rf.load_onnx(model)


def test_bad_peephole_shape_raises():
    model, feed = _graph("LSTM", 4, 3, peephole=True)
    init = [t for t in model.graph.initializer if t.name == "P"][0]
    init.CopyFrom(numpy_helper.from_array(np.zeros((1, 8), np.float32), "P"))
    with pytest.raises(ValueError, match="P must be"):
        rf.load_onnx(model)


def test_unknown_operator_raises_naming_it():
    model, feed = _graph("GRU", 4, 3)
    model.graph.node.append(helper.make_node("Softmax", ["Y"], ["Z"], name="sm"))
    with pytest.raises(NotImplementedError, match="Softmax"):
        rf.load_onnx(model)


def test_bad_feeds_raise():
    model, feed = _graph("RNN", 4, 3)
    sess = rf.load_onnx(model)
    with pytest.raises(ValueError, match="missing"):
        sess.run(None, {})
    with pytest.raises(ValueError, match="unknown"):
        sess.run(None, dict(feed, nope=np.zeros(1)))
    with pytest.raises(TypeError):
        rf.load_onnx(12)


def test_zero_sequence_length_raises_naming_it():
    model, feed = _graph("LSTM", 4, 3, lens=True)
    sess = rf.load_onnx(model)
    with pytest.raises(ValueError, match="sequence_lens"):
        sess.run(None, dict(feed, lens=np.array([5, 0, 4], np.int32)))
    with pytest.raises(ValueError, match="sequence_lens"):
        sess.run(None, dict(feed, lens=np.array([5, 6, 4], np.int32)))


# ---------------------------------------------------------------------------- (d) save_onnx
SAVE_CASES = [(cls, L, bi, bf, bias) for cls in ("LSTM", "GRU", "RNN", "GRU_RB")
              for (L, bi, bf, bias) in ((1, False, False, True), (2, True, True, True),
                                        (3, True, False, False))]


@pytest.mark.parametrize("cls,L,bi,bf,bias", SAVE_CASES)
def test_save_onnx_round_trip(cls, L, bi, bf, bias, tmp_path):
    kw = dict(num_layers=L, bidirectional=bi, batch_first=bf, bias=bias, seed=3)
    if cls == "RNN" and bi:
        kw["nonlinearity"] = "relu"
    m = _rf_model(cls, 4, 5, **kw)
    rng = np.random.default_rng(0)
    T, B, D = 6, 3, 2 if bi else 1
    x = rng.standard_normal((B, T, 4) if bf else (T, B, 4)).astype(np.float32)
    lens = np.array([6, 3, 5], np.int32)
    h0 = rng.standard_normal((L * D, B, 5)).astype(np.float32)
    c0 = rng.standard_normal((L * D, B, 5)).astype(np.float32)
    lstm = cls == "LSTM"
    # plain: x only
    data = rf.save_onnx(m)
    y, s = m(x)
    expected = [y] + (list(s) if lstm else [s])
    via_ort = _ort(data).run(None, {"x": x})
    for o, e in zip(via_ort, expected):
        assert _maxerr(o, e) < TOL
    for g, e in zip(rf.load_onnx(data).run(None, {"x": x}), expected):
        assert _maxerr(g, e) < TOL
    # with initial states and lengths, written to a file
    path = tmp_path / "m.onnx"
    assert rf.save_onnx(m, path, initial_state=True, lengths=True) is None
    feed = {"x": x, "h0": h0, "sequence_lens": lens}
    if lstm:
        feed["c0"] = c0
    y, s = m(x, (h0, c0) if lstm else h0, lens)
    expected = [y] + (list(s) if lstm else [s])
    via_ort = _ort(path.read_bytes()).run(None, feed)
    assert [o.name for o in _ort(path.read_bytes()).get_outputs()] == \
        ["y", "h_n"] + (["c_n"] if lstm else [])
    for o, e in zip(via_ort, expected):
        assert _maxerr(o, e) < TOL
    for g, e in zip(rf.load_onnx(path).run(None, feed), expected):
        assert _maxerr(g, e) < TOL


@pytest.mark.parametrize("variant", [dict(peephole=True), dict(clip=0.3), dict(input_forget=True),
                                     dict(peephole=True, input_forget=True, clip=0.8)],
                         ids=_variant_id)
@pytest.mark.parametrize("bf", [False, True])
def test_save_onnx_lstm_variants_run_in_ort(variant, bf):
    m = rf.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=bf, seed=3, **variant)
    m.load_state_dict({k: 2 * v for k, v in m.state_dict().items()})
    rng = np.random.default_rng(1)
    T, B = 6, 3
    x = rng.standard_normal((B, T, 4) if bf else (T, B, 4)).astype(np.float32)
    h0, c0 = (rng.standard_normal((4, B, 5)).astype(np.float32) for _ in range(2))
    lens = np.array([6, 2, 5], np.int32)
    data = rf.save_onnx(m, initial_state=True, lengths=True)
    node = onnx.load_from_string(data).graph.node
    lstm_nodes = [n for n in node if n.op_type == "LSTM"]
    assert len(lstm_nodes) == 2
    for n in lstm_nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert (len(n.input) == 8 and n.input[7] != "") == bool(variant.get("peephole"))
        assert attrs.get("input_forget", 0) == int(variant.get("input_forget", False))
        assert ("clip" in attrs) == ("clip" in variant)
    y, (hn, cn) = m(x, (h0, c0), lens)
    feed = {"x": x, "h0": h0, "c0": c0, "sequence_lens": lens}
    for o, e in zip(_ort(data).run(None, feed), (y, hn, cn)):
        assert _maxerr(o, e) < TOL
    back = rf.load_onnx(data)
    for g, e in zip(back.run(None, feed), (y, hn, cn)):
        assert _maxerr(g, e) < TOL


def test_save_onnx_peephole_float64_vs_reference():
    m = rf.LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1, peephole=True)
    rng = np.random.default_rng(2)
    feed = {"x": rng.standard_normal((5, 2, 3)), "h0": rng.standard_normal((4, 2, 4)),
            "c0": rng.standard_normal((4, 2, 4))}
    y, (hn, cn) = m(feed["x"], (feed["h0"], feed["c0"]))
    ref = ReferenceEvaluator(onnx.load_from_string(rf.save_onnx(m, initial_state=True)))
    for r, e in zip(ref.run(None, feed), (y, hn, cn)):
        assert _maxerr(r, e) < 1e-12


def _rf_model(cls, *args, **kw):
    """rf.LSTM / GRU / RNN, or for "GRU_RB" a GRU(linear_before_reset=False)."""
    if cls == "GRU_RB":
        return rf.GRU(*args, linear_before_reset=False, **kw)
    return getattr(rf, cls)(*args, **kw)


def test_save_onnx_writes_the_gru_form():
    for lbr, want in ((True, 1), (False, 0)):
        proto = onnx.load_from_string(rf.save_onnx(rf.GRU(3, 4, linear_before_reset=lbr)))
        (node,) = [n for n in proto.graph.node if n.op_type == "GRU"]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == want


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN", "GRU_RB"])
def test_save_onnx_float64_vs_reference(cls):
    # onnxruntime has no float64 LSTM/GRU/RNN kernels; onnx.reference checks the graph instead
    m = _rf_model(cls, 3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    x = np.random.default_rng(2).standard_normal((5, 2, 3))
    h0 = np.random.default_rng(3).standard_normal((4, 2, 4))
    data = rf.save_onnx(m, initial_state=True)
    feed = {"x": x, "h0": h0}
    hx = h0
    if cls == "LSTM":
        feed["c0"] = np.random.default_rng(4).standard_normal((4, 2, 4))
        hx = (h0, feed["c0"])
    y, s = m(x, hx)
    expected = [y] + (list(s) if cls == "LSTM" else [s])
    ref = ReferenceEvaluator(onnx.load_from_string(data)).run(None, feed)
    for r, e in zip(ref, expected):
        assert r.dtype == np.float64
        assert _maxerr(r, e) < 1e-12


def test_save_onnx_rejects_non_models():
    with pytest.raises(TypeError, match="save_onnx"):
        rf.save_onnx(rf.Linear(3, 4))
