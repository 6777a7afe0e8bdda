"""Parity of rnnfast with torch.nn.RNN / LSTM / GRU (same weights).

Outputs, final states and every gradient (dx, dh0, dc0, each parameter by
name) are compared against torch in float64 (rel err <= 1e-10) and float32
(torch float32 as oracle, rel err <= 1e-4).
"""

import itertools

import numpy as np
import pytest
import torch

from conftest import (
    CELLS, NP_DTYPES, PARITY_TOL, assert_all_close, assert_rel, is_lstm,
    make_data, make_pair, ragged_lengths, rel_err, rf_infer, rf_model, rf_run,
    torch_model, torch_run, torch_state_numpy,
)

HIDDENS = (1, 7, 33)
BATCHES = (1, 5)
INPUTS = (1, 3, 10)
SEQS = (1, 6)


def _matrix():
    """cells x layers x bidirectional x lengths is complete (48 rows); the
    remaining axes rotate so that each of their values meets every cell."""
    rows = []
    for cell in CELLS:
        j = 0
        for layers in (1, 2, 3):
            for bidir in (False, True):
                for lmode in ("equal", "ragged"):
                    rows.append(dict(
                        cell=cell, layers=layers, bidir=bidir, lmode=lmode,
                        hidden=HIDDENS[j % 3],
                        inp=INPUTS[(j + j // 3) % 3],
                        batch=1 if j in (3, 6) else 5,
                        seq=1 if j in (4, 9) else 6,
                        batch_first=bool((j + j // 2) % 2),
                        bias=(j // 3) % 2 == 0,
                    ))
                    j += 1
    return rows


MATRIX = _matrix()


def _case_id(c):
    return (f"{c['cell']}-L{c['layers']}-{'bi' if c['bidir'] else 'uni'}-{c['lmode']}"
            f"-H{c['hidden']}-I{c['inp']}-B{c['batch']}-T{c['seq']}"
            f"-{'bf' if c['batch_first'] else 'tf'}-{'bias' if c['bias'] else 'nobias'}")


def test_matrix_covers_every_axis_for_every_cell():
    for cell in CELLS:
        rows = [r for r in MATRIX if r["cell"] == cell]
        assert {(r["layers"], r["bidir"], r["lmode"]) for r in rows} == set(
            itertools.product((1, 2, 3), (False, True), ("equal", "ragged")))
        assert {r["hidden"] for r in rows} == set(HIDDENS)
        assert {r["inp"] for r in rows} == set(INPUTS)
        assert {r["batch"] for r in rows} == set(BATCHES)
        assert {r["seq"] for r in rows} == set(SEQS)
        assert {r["batch_first"] for r in rows} == {False, True}
        assert {r["bias"] for r in rows} == {False, True}
        # ragged rows with a real spread of lengths (B=5, T=6) exist
        assert any(r["lmode"] == "ragged" and r["batch"] == 5 and r["seq"] == 6
                   for r in rows)


def _run_case(c, dtype, seed):
    cell = c["cell"]
    rng = np.random.default_rng(seed)
    m, tm = make_pair(cell, c["inp"], c["hidden"], c["layers"], c["bias"],
                      c["batch_first"], c["bidir"], dtype, seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, c["seq"], c["batch"], c["inp"],
                                  c["hidden"], c["layers"], c["bidir"],
                                  c["batch_first"], dtype)
    lengths = ragged_lengths(rng, c["batch"], c["seq"]) if c["lmode"] == "ragged" else None
    ref = torch_run(tm, cell, x, hx, lengths, ry, rh, rc, c["batch_first"])
    got = rf_run(m, cell, x, hx, lengths, ry, rh, rc)
    return m, x, hx, lengths, ref, got


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("c", MATRIX, ids=_case_id)
def test_parity_matrix(c, dtype):
    cell = c["cell"]
    seed = 1000 + MATRIX.index(c)
    m, x, hx, lengths, ref, got = _run_case(c, dtype, seed)
    tol = PARITY_TOL[dtype]
    ctx = f"{_case_id(c)} {dtype} lengths={None if lengths is None else lengths.tolist()}"

    # dtypes of everything rnnfast hands back
    npdt = NP_DTYPES[dtype]
    for k, v in got.items():
        assert v.dtype == npdt, f"{ctx}: {k} has dtype {v.dtype}"
    # every torch parameter has a gradient of the same name in rnnfast
    assert {k for k in got if k.startswith("grad:")} == {k for k in ref if k.startswith("grad:")}
    assert_all_close(got, ref, tol, ctx)

    # the inference path gives the same answer as the training forward
    y, h_n, c_n = rf_infer(m, cell, x, hx, lengths)
    assert y.dtype == npdt and h_n.dtype == npdt
    assert_rel(y, ref["y"], tol, ctx + " inference y")
    assert_rel(h_n, ref["h_n"], tol, ctx + " inference h_n")
    if is_lstm(cell):
        assert_rel(c_n, ref["c_n"], tol, ctx + " inference c_n")

    if lengths is not None:
        # padded outputs and the gradient w.r.t. padded inputs are exactly zero
        yv = got["y"] if not c["batch_first"] else got["y"].transpose(1, 0, 2)
        dxv = got["dx"] if not c["batch_first"] else got["dx"].transpose(1, 0, 2)
        for b, L in enumerate(lengths):
            assert np.all(yv[L:, b] == 0), f"{ctx}: y past length for row {b}"
            assert np.all(dxv[L:, b] == 0), f"{ctx}: dx past length for row {b}"


# --------------------------------------------------------------------------
# hx = None (zero initial state), forward and backward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_hx_none_forward_backward(cell, ragged, dtype):
    seed = 7 + CELLS.index(cell) * 10 + ragged
    rng = np.random.default_rng(seed)
    T, B, I, H, L, bd, bf = 6, 5, 3, 7, 2, True, ragged
    m, tm = make_pair(cell, I, H, L, True, bf, bd, dtype, seed=seed)
    x, _, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bd, bf, dtype, with_hx=False)
    lengths = ragged_lengths(rng, B, T) if ragged else None
    tol = PARITY_TOL[dtype]
    ctx = f"{cell} hx=None ragged={ragged} {dtype}"

    # torch with an explicit zero state requiring grad (identical numerics),
    # and torch with hx=None for the forward values
    ref = torch_run(tm, cell, x, None, lengths, ry, rh, rc, bf, zero_hx_grad=True)
    ref_none = torch_run(tm, cell, x, None, lengths, ry, rh, rc, bf)
    for k in ref_none:
        assert_rel(ref[k], ref_none[k], 1e-12 if dtype == "float64" else 1e-5, "torch self-check " + k)

    got = rf_run(m, cell, x, None, lengths, ry, rh, rc, want_dhx=False)
    assert_all_close(got, ref_none, tol, ctx)

    # dhx may be reported; if it is, it must be the gradient at h0 = 0
    m.zero_grad()
    _, _, tape = m.forward(x, hx=None, lengths=lengths, train=True)
    _, dhx = m.backward(tape, ry, (rh, rc) if is_lstm(cell) else rh)
    if dhx is not None:
        if is_lstm(cell):
            if dhx[0] is not None:
                assert_rel(dhx[0], ref["dh0"], tol, ctx + " dh0")
            if dhx[1] is not None:
                assert_rel(dhx[1], ref["dc0"], tol, ctx + " dc0")
        else:
            assert_rel(dhx, ref["dh0"], tol, ctx + " dh0")

    # inference with hx=None equals inference with explicit zeros
    D = 2 if bd else 1
    z = np.zeros((L * D, B, H), dtype=NP_DTYPES[dtype])
    y0, h0n, c0n = rf_infer(m, cell, x, None, lengths)
    y1, h1n, c1n = rf_infer(m, cell, x, (z, z.copy()) if is_lstm(cell) else z, lengths)
    assert_rel(y0, y1, 1e-12 if dtype == "float64" else 1e-6, ctx + " y(None) vs y(0)")
    assert_rel(h0n, h1n, 1e-12 if dtype == "float64" else 1e-6, ctx + " h_n(None) vs h_n(0)")
    assert_rel(y0, ref["y"], tol, ctx + " inference y")


# --------------------------------------------------------------------------
# optional cotangents: dy=None, dstate=None, LSTM (dh, None) / (None, dc)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_partial_cotangents(cell):
    seed = 31 + CELLS.index(cell)
    rng = np.random.default_rng(seed)
    T, B, I, H, L, bd, bf = 5, 4, 3, 6, 2, True, False
    m, tm = make_pair(cell, I, H, L, True, bf, bd, "float64", seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bd, bf, "float64")
    lengths = ragged_lengths(rng, B, T)
    zy = np.zeros_like(ry)
    zs = np.zeros_like(rh)
    tol = PARITY_TOL["float64"]

    variants = [("dy only", ry, None, ry, zs, zs),
                ("dstate only", None, (rh, rc) if is_lstm(cell) else rh, zy, rh, rc if is_lstm(cell) else None)]
    if is_lstm(cell):
        variants.append(("dh only", None, (rh, None), zy, rh, zs))
        variants.append(("dc only", None, (None, rc), zy, zs, rc))
        variants.append(("dy + dc", ry, (None, rc), ry, zs, rc))
    for label, dy, dstate, t_ry, t_rh, t_rc in variants:
        ref = torch_run(tm, cell, x, hx, lengths, t_ry, t_rh, t_rc, bf)
        m.zero_grad()
        y, st, tape = m.forward(x, hx=hx, lengths=lengths, train=True)
        dx, dhx = m.backward(tape, dy, dstate)
        got = {"y": y, "h_n": st[0] if is_lstm(cell) else st, "dx": dx}
        if is_lstm(cell):
            got["c_n"] = st[1]
            got["dh0"], got["dc0"] = dhx
        else:
            got["dh0"] = dhx
        for name, g in m.named_grads():
            got["grad:" + name] = np.array(g)
        assert_all_close(got, ref, tol, f"{cell} {label}")


# --------------------------------------------------------------------------
# ragged lengths: rows are independent and hx is in the caller's batch order
# --------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_ragged_rows_match_individual_sequences(cell, batch_first):
    seed = 77 + CELLS.index(cell) + 5 * batch_first
    rng = np.random.default_rng(seed)
    T, I, H, L, bd = 6, 3, 5, 2, True
    lengths = np.array([2, 6, 1, 4, 3], dtype=np.int32)  # unsorted, int32
    B = len(lengths)
    m, tm = make_pair(cell, I, H, L, True, batch_first, bd, "float64", seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bd, batch_first, "float64")
    # make the initial states very different per row so a permutation shows
    scale = np.arange(1, B + 1, dtype=np.float64)[None, :, None]
    if is_lstm(cell):
        hx = (hx[0] * scale, hx[1] * scale[:, ::-1])
    else:
        hx = hx * scale
    tol = PARITY_TOL["float64"]

    ref = torch_run(tm, cell, x, hx, lengths.astype(np.int64), ry, rh, rc, batch_first)
    got = rf_run(m, cell, x, hx, lengths, ry, rh, rc)
    assert_all_close(got, ref, tol, f"{cell} ragged batch vs torch")

    tax = 1 if batch_first else 0  # time axis
    bax = 0 if batch_first else 1  # batch axis
    param_sum = {k: np.zeros_like(v) for k, v in got.items() if k.startswith("grad:")}
    for b, Lb in enumerate(lengths):
        Lb = int(Lb)
        xb = np.take(x, [b], axis=bax).take(range(Lb), axis=tax)
        ryb = np.take(ry, [b], axis=bax).take(range(Lb), axis=tax)
        rhb = rh[:, b:b + 1]
        rcb = rc[:, b:b + 1] if is_lstm(cell) else None
        hxb = (hx[0][:, b:b + 1], hx[1][:, b:b + 1]) if is_lstm(cell) else hx[:, b:b + 1]
        single = rf_run(m, cell, np.ascontiguousarray(xb), hxb, None, np.ascontiguousarray(ryb), rhb, rcb)
        ctx = f"{cell} row {b} (len {Lb})"
        assert_rel(np.take(got["y"], [b], axis=bax).take(range(Lb), axis=tax), single["y"], tol, ctx + " y")
        assert_rel(np.take(got["dx"], [b], axis=bax).take(range(Lb), axis=tax), single["dx"], tol, ctx + " dx")
        assert_rel(got["h_n"][:, b:b + 1], single["h_n"], tol, ctx + " h_n")
        assert_rel(got["dh0"][:, b:b + 1], single["dh0"], tol, ctx + " dh0")
        if is_lstm(cell):
            assert_rel(got["c_n"][:, b:b + 1], single["c_n"], tol, ctx + " c_n")
            assert_rel(got["dc0"][:, b:b + 1], single["dc0"], tol, ctx + " dc0")
        for k in param_sum:
            param_sum[k] += single[k]
    for k, v in param_sum.items():
        assert_rel(got[k], v, 1e-10, f"{cell} {k} = sum over rows")


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_all_shorter_than_T(cell):
    """max(lengths) < T: the trailing all-padding steps are zero output."""
    seed = 91 + CELLS.index(cell)
    rng = np.random.default_rng(seed)
    T, B, I, H, L, bd, bf = 7, 3, 4, 5, 2, True, False
    m, tm = make_pair(cell, I, H, L, True, bf, bd, "float64", seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bd, bf, "float64")
    lengths = np.array([3, 1, 5], dtype=np.int64)
    ref = torch_run(tm, cell, x, hx, lengths, ry, rh, rc, bf)
    got = rf_run(m, cell, x, hx, lengths, ry, rh, rc)
    assert_all_close(got, ref, PARITY_TOL["float64"], f"{cell} lengths < T")
    assert np.all(got["y"][5:] == 0)
    assert np.all(got["dx"][5:] == 0)


@pytest.mark.parametrize("cell", CELLS)
def test_full_lengths_equal_no_lengths(cell):
    seed = 123 + CELLS.index(cell)
    rng = np.random.default_rng(seed)
    T, B, I, H, L = 5, 3, 4, 6, 2
    m = rf_model(cell, I, H, L, bidirectional=True, dtype="float64", seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, True, False, "float64")
    a = rf_run(m, cell, x, hx, None, ry, rh, rc)
    b = rf_run(m, cell, x, hx, np.full(B, T, dtype=np.int64), ry, rh, rc)
    assert_all_close(b, a, 1e-12, f"{cell} lengths=T vs None")


# --------------------------------------------------------------------------
# shapes and dtypes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_output_shapes_and_dtypes(cell, batch_first, dtype):
    T, B, I, H, L = 4, 3, 2, 5, 3
    npdt = NP_DTYPES[dtype]
    for bd in (False, True):
        D = 2 if bd else 1
        m = rf_model(cell, I, H, L, batch_first=batch_first, bidirectional=bd, dtype=dtype, seed=1)
        x = np.random.default_rng(0).standard_normal((B, T, I) if batch_first else (T, B, I)).astype(npdt)
        y, h_n, c_n = rf_infer(m, cell, x)
        assert isinstance(y, np.ndarray) and isinstance(h_n, np.ndarray)
        assert y.shape == ((B, T, D * H) if batch_first else (T, B, D * H))
        assert h_n.shape == (L * D, B, H)
        assert y.dtype == npdt and h_n.dtype == npdt
        if is_lstm(cell):
            assert isinstance(c_n, np.ndarray)
            assert c_n.shape == (L * D, B, H) and c_n.dtype == npdt
        yt, st, tape = m.forward(x, train=True)
        assert yt.shape == y.shape
        dx, dhx = m.backward(tape, np.ones_like(yt), None)
        assert dx.shape == x.shape and dx.dtype == npdt
        if is_lstm(cell):
            assert dhx[0].shape == (L * D, B, H) and dhx[1].shape == (L * D, B, H)
        else:
            assert dhx.shape == (L * D, B, H)


# --------------------------------------------------------------------------
# state dict, parameter views, initialization
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_names_and_shapes_match_torch(cell):
    for L, bd, bias in itertools.product((1, 3), (False, True), (False, True)):
        tm = torch_model(cell, 4, 3, L, bias, False, bd, "float64")
        m = rf_model(cell, 4, 3, L, bias=bias, bidirectional=bd, dtype="float64", seed=0)
        sd = m.state_dict()
        tsd = tm.state_dict()
        assert set(sd) == set(tsd) and len(sd) == len(tsd), (sorted(sd), sorted(tsd))
        for k in tsd:
            assert sd[k].shape == tuple(tsd[k].shape), k
            assert sd[k].dtype == np.float64
        tnames = sorted(n for n, _ in tm.named_parameters())
        assert sorted(n for n, _ in m.named_parameters()) == tnames
        assert sorted(n for n, _ in m.named_grads()) == tnames


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_round_trip_with_torch(cell, dtype):
    seed = 5 + CELLS.index(cell)
    rng = np.random.default_rng(seed)
    T, B, I, H, L, bd = 4, 3, 3, 1, 2, True  # hidden 1 on purpose
    m = rf_model(cell, I, H, L, bidirectional=bd, dtype=dtype, seed=seed)
    sd = m.state_dict()
    tm = torch_model(cell, I, H, L, True, False, bd, dtype)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    for k, v in tm.state_dict().items():
        assert np.array_equal(v.numpy(), sd[k]), k

    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bd, False, dtype)
    ref = torch_run(tm, cell, x, hx, None, ry, rh, rc, False)
    got = rf_run(m, cell, x, hx, None, ry, rh, rc)
    assert_all_close(got, ref, PARITY_TOL[dtype], f"{cell} rf->torch weights")

    # torch -> rf -> state_dict is bit exact
    torch.manual_seed(seed)
    tm2 = torch_model(cell, I, H, L, True, False, bd, dtype)
    tsd = torch_state_numpy(tm2)
    m.load_state_dict(tsd)
    back = m.state_dict()
    assert set(back) == set(tsd)
    for k in tsd:
        assert back[k].dtype == NP_DTYPES[dtype]
        assert np.array_equal(back[k], tsd[k]), k


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_is_strict(cell):
    m = rf_model(cell, 3, 4, 2, bidirectional=True, dtype="float64", seed=0)
    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    errors = (KeyError, ValueError, RuntimeError, TypeError)

    missing = dict(sd)
    missing.pop("weight_hh_l1_reverse")
    with pytest.raises(errors):
        m.load_state_dict(missing)

    extra = dict(sd)
    extra["weight_hh_l2"] = sd["weight_hh_l1"]
    with pytest.raises(errors):
        m.load_state_dict(extra)

    bad_shape = dict(sd)
    bad_shape["weight_ih_l0"] = sd["weight_ih_l0"][:, :-1]
    with pytest.raises(errors):
        m.load_state_dict(bad_shape)

    # a failed load must not have half-applied anything observable as a crash;
    # a valid load still works afterwards
    m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, sd[k])


@pytest.mark.parametrize("cell", CELLS)
def test_params_and_grads_views(cell):
    m = rf_model(cell, 3, 4, 2, bidirectional=True, dtype="float64", seed=3)
    named_p = list(m.named_parameters())
    named_g = list(m.named_grads())
    total = sum(v.size for _, v in named_p)
    assert m.params.ndim == 1 and m.params.size == total
    assert m.grads.ndim == 1 and m.grads.size == total
    assert m.params.dtype == np.float64 and m.grads.dtype == np.float64
    sd = m.state_dict()
    for name, v in named_p:
        assert np.array_equal(v, sd[name]), name
        assert np.shares_memory(v, m.params), name
    for name, g in named_g:
        assert g.shape == sd[name].shape, name
        assert np.shares_memory(g, m.grads), name
    # the flat array contains exactly the named parameters
    assert np.array_equal(np.sort(m.params), np.sort(np.concatenate([v.ravel() for _, v in named_p])))

    # params is read-only
    with pytest.raises(ValueError):
        m.params[0] = 1.0

    # params view follows load_state_dict
    new = {k: np.full_like(v, 0.25) for k, v in sd.items()}
    m.load_state_dict(new)
    assert np.all(m.params == 0.25)
    for _, v in m.named_parameters():
        assert np.all(v == 0.25)

    # grads accumulate into the views; zero_grad resets them
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 3))
    m.zero_grad()
    assert np.all(m.grads == 0)
    y, _, tape = m.forward(x, train=True)
    m.backward(tape, np.ones_like(y), None)
    assert np.any(m.grads != 0)
    flat = np.concatenate([np.array(g).ravel() for _, g in m.named_grads()])
    assert np.array_equal(np.sort(flat), np.sort(m.grads))
    m.zero_grad()
    assert np.all(m.grads == 0)
    for _, g in m.named_grads():
        assert np.all(g == 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_default_init_uniform(cell, dtype):
    for H in (1, 7, 33):
        k = 1.0 / np.sqrt(H)
        slack = 1e-6 if dtype == "float32" else 1e-12  # rounding of the bound itself
        m = rf_model(cell, 5, H, 2, bidirectional=True, dtype=dtype, seed=11)
        vals = np.concatenate([np.asarray(v, dtype=np.float64).ravel()
                               for v in m.state_dict().values()])
        assert m.params.dtype == NP_DTYPES[dtype]
        assert np.all(np.abs(vals) <= k * (1 + slack)), (H, np.abs(vals).max(), k)
        if H == 33:
            n = vals.size
            assert n > 5000
            u = np.sort(vals / k)  # should look like U(-1, 1)
            cdf = (u + 1) / 2
            ks = np.max(np.abs(cdf - (np.arange(1, n + 1) - 0.5) / n))
            assert ks < 0.03, f"KS distance to U(-k,k) = {ks}"
            assert abs(vals.mean()) < 0.03 * k
            assert np.abs(vals).max() > 0.99 * k
    # seeded construction is reproducible; different seeds differ
    a = rf_model(cell, 5, 7, 2, bidirectional=True, dtype=dtype, seed=42).state_dict()
    b = rf_model(cell, 5, 7, 2, bidirectional=True, dtype=dtype, seed=42).state_dict()
    c = rf_model(cell, 5, 7, 2, bidirectional=True, dtype=dtype, seed=43).state_dict()
    assert all(np.array_equal(a[kk], b[kk]) for kk in a)
    assert not all(np.array_equal(a[kk], c[kk]) for kk in a)


@pytest.mark.parametrize("cell", CELLS)
def test_default_init_model_matches_torch_with_its_weights(cell):
    """A model with its own default init, copied into torch, agrees with torch."""
    rng = np.random.default_rng(3)
    m = rf_model(cell, 10, 33, 1, batch_first=True, dtype="float64", seed=9)
    tm = torch_model(cell, 10, 33, 1, True, True, False, "float64")
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()}, strict=True)
    x, hx, ry, rh, rc = make_data(rng, cell, 6, 5, 10, 33, 1, False, True, "float64")
    lengths = ragged_lengths(rng, 5, 6)
    ref = torch_run(tm, cell, x, hx, lengths, ry, rh, rc, True)
    got = rf_run(m, cell, x, hx, lengths, ry, rh, rc)
    assert_all_close(got, ref, PARITY_TOL["float64"], f"{cell} own init")


def test_rel_err_helper():
    assert rel_err(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_err(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == pytest.approx(0.25)
    assert rel_err(np.array([0.0, 1e-3]), np.zeros(2)) == pytest.approx(1e-3)
    assert rel_err(np.array([np.nan]), np.array([1.0])) == float("inf")
    with pytest.raises(AssertionError):
        rel_err(np.zeros(3), np.zeros((3, 1)))


# --------------------------------------------------------------------------
# memory layout of the arguments
# --------------------------------------------------------------------------
def _strided(a):
    """Same values as `a`, but a non-contiguous view (every other element of
    a twice-as-large buffer along the last axis)."""
    buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    buf[..., ::2] = a
    v = buf[..., ::2]
    assert not v.flags.c_contiguous
    return v


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_noncontiguous_inputs_and_no_mutation(cell, dtype):
    seed = 61 + CELLS.index(cell)
    rng = np.random.default_rng(seed)
    T, B, I, H, L, bd, bf = 6, 5, 3, 7, 2, True, True
    m, tm = make_pair(cell, I, H, L, True, bf, bd, dtype, seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bd, bf, dtype)
    lengths = ragged_lengths(rng, B, T)
    ref = torch_run(tm, cell, x, hx, lengths, ry, rh, rc, bf)

    # non-contiguous views (and a Fortran-ordered dy) of the same values
    xs = _strided(x)
    hxs = (_strided(hx[0]), np.asfortranarray(hx[1])) if is_lstm(cell) else _strided(hx)
    rys = np.asfortranarray(ry)
    rhs = _strided(rh)
    rcs = _strided(rc) if is_lstm(cell) else None
    lens = np.stack([lengths, lengths])[0, :]  # a view, values unchanged
    snapshot = [np.array(a, copy=True) for a in
                (xs, *(hxs if is_lstm(cell) else (hxs,)), rys, rhs, lens)]

    got = rf_run(m, cell, xs, hxs, lens, rys, rhs, rcs)
    assert_all_close(got, ref, PARITY_TOL[dtype], f"{cell} {dtype} non-contiguous args")
    after = [xs, *(hxs if is_lstm(cell) else (hxs,)), rys, rhs, lens]
    for before, now in zip(snapshot, after):
        assert np.array_equal(before, now), "rnnfast modified a caller's array"
    if is_lstm(cell):
        assert np.array_equal(rcs, rc)


# --------------------------------------------------------------------------
# shapes past typical GEMM blocking sizes (depth > 256, gate rows > 512,
# T*B > 96): a blocked kernel must still add up the same numbers
# --------------------------------------------------------------------------
LARGE_HIDDEN = {"rnn_tanh": 530, "rnn_relu": 530, "lstm": 131, "gru": 175}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_parity_large_shapes(cell, dtype):
    seed = 500 + CELLS.index(cell)
    rng = np.random.default_rng(seed)
    T, B, I, L, bd, bf = 20, 6, 300, 2, True, False
    H = LARGE_HIDDEN[cell]
    m, tm = make_pair(cell, I, H, L, True, bf, bd, dtype, seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bd, bf, dtype)
    lengths = ragged_lengths(rng, B, T)
    ref = torch_run(tm, cell, x, hx, lengths, ry, rh, rc, bf)
    got = rf_run(m, cell, x, hx, lengths, ry, rh, rc)
    assert_all_close(got, ref, PARITY_TOL[dtype], f"{cell} {dtype} large H={H} I={I}")


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_arrays_do_not_alias_the_model(cell):
    """Mutating the dict given to load_state_dict, or the dict returned by
    state_dict (when writeable), must not change the model behind its back."""
    rng = np.random.default_rng(8)
    m = rf_model(cell, 3, 5, 2, bidirectional=True, dtype="float64", seed=8)
    x = rng.standard_normal((4, 2, 3))
    src = {k: rng.uniform(-0.4, 0.4, v.shape) for k, v in m.state_dict().items()}
    m.load_state_dict(src)
    keep = {k: v.copy() for k, v in src.items()}
    y_before, _ = m(x)
    for v in src.values():
        v[...] = 7.0
    out = m.state_dict()
    for k in keep:
        assert np.array_equal(out[k], keep[k]), f"{k} follows the caller's array"
    for v in out.values():
        if v.flags.writeable:
            v[...] = -3.0
    for k, v in m.state_dict().items():
        assert np.array_equal(v, keep[k]), f"{k} changed through state_dict()'s array"
    y_after, _ = m(x)
    assert np.array_equal(y_before, y_after)
