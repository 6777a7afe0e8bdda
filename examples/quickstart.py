"""Run an LSTM on random data and print shapes and timing (the README's first command)."""
import time

import numpy as np

import rnnfast as rf


def main():
    T, B, I, H = 100, 32, 128, 256
    model = rf.LSTM(I, H, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    print(f"rnnfast {rf.__version__}  build: {rf.build_info()}")
    print(f"model: {model}")

    model(x)  # warm-up: packs the weights once
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        y, (h_n, c_n) = model(x)
        times.append(time.perf_counter() - t0)
    print(f"inference: x {x.shape} -> y {y.shape}, h_n {h_n.shape}, c_n {c_n.shape}; "
          f"median {1e3 * np.median(times):.2f} ms over {len(times)} runs")

    t0 = time.perf_counter()
    y, state, tape = model.forward(x, train=True)
    dx, (dh0, dc0) = model.backward(tape, dy=np.ones_like(y))
    print(f"training step (forward + BPTT): {1e3 * (time.perf_counter() - t0):.2f} ms; "
          f"dx {dx.shape}, |grads| = {np.linalg.norm(model.grads):.4f}")


if __name__ == "__main__":
    main()
